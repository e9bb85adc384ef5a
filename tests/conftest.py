import uuid

import pytest
import redis

from tests.redis_server import RedisServer, env_redis_url


@pytest.fixture(scope="session")
def redis_server():
    """Our own redis-server (None when the caller gave REDIS_URL: that one we never restart)."""
    if env_redis_url():
        yield None
        return
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def redis_url(redis_server) -> str:
    return redis_server.url if redis_server else env_redis_url()


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex
