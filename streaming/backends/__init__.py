from streaming.backends.base import EventBackend
from streaming.backends.memory import MemoryEventBackend
from streaming.backends.redis import RedisEventBackend

__all__ = ["EventBackend", "MemoryEventBackend", "RedisEventBackend"]
