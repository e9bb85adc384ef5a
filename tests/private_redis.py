"""Fixtures of a test that stops, restarts or reconfigures Redis: its own redis-server each
(`server`; `persistent_server` keeps its data across a restart) and an admin client of
`server`. Every test module gets them (conftest); a module's own `server` or `admin` wins."""

import pytest
import redis

from tests.redis_server import RedisServer


@pytest.fixture
def server():
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def persistent_server():
    server = RedisServer(persist=True).start()
    yield server
    server.cleanup()


@pytest.fixture
def admin(server):
    client = redis.Redis.from_url(server.url, socket_timeout=5)
    yield client
    client.close()
