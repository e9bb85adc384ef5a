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


@pytest.fixture(params=["memory", "redis"])
async def backend(request, redis_url):
    """Each event backend in turn: in memory, then Redis (the test redis-server)."""
    from streaming import MemoryEventBackend, RedisEventBackend

    backend = MemoryEventBackend() if request.param == "memory" else RedisEventBackend(redis_url)
    yield backend
    await backend.aclose()
    backend.close()


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture(scope="session")
def runcast(redis_url):
    """The `tasks` package of this test process, configured for the test Redis."""
    import tasks
    from tasks.settings import Settings

    tasks.configure(Settings(redis_url=redis_url, cancel_grace=1))
    return tasks


@pytest.fixture(scope="session")
def worker(redis_url, runcast):
    """One real Celery worker (prefork, 4 processes) for the session."""
    from tests.services import start_worker

    process = start_worker(redis_url)
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api_url(redis_url, worker):
    """The API under a real uvicorn, with the session's worker behind it."""
    from tests.services import start_api

    process, url = start_api(redis_url)
    yield url
    process.stop()


@pytest.fixture(scope="module")
def http(api_url):
    """An HTTP client of the session's API (a file that needs another API defines its own `http`,
    built with tests.services.http_client too)."""
    from tests.services import http_client

    with http_client(api_url) as client:
        yield client
