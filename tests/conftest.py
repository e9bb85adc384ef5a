import types
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

# celery.contrib.pytest's fixtures (celery_app, celery_worker, celery_session_worker and the
# celery_config, celery_parameters, celery_worker_parameters, celery_enable_logging they read)
# give an in-process Celery worker where one is enough. pytest-celery (in [dev]) registers them
# (its entry point); its 1.x Docker-based `celery_worker` (no Docker engine here) would shadow
# Celery's of the same name, so Celery's is imported here: the one every test gets.
from celery.contrib.pytest import celery_worker  # noqa: F401

from tests.lost_support import world  # noqa: F401 - the fixture of the worker-killing tests
from tests.private_redis import (  # noqa: F401 - a redis-server per test, to stop or reconfigure
    admin,
    persistent_server,
    server,
)
from tests.redis_server import RedisServer, env_redis_url


@pytest.fixture(scope="session")
def redis_server():
    """Our own redis-server (None when the caller gave REDIS_URL: that one we never restart)."""
    if env_redis_url():
        yield None
        return
    own = RedisServer().start()
    yield own
    own.cleanup()


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


# -- celery.contrib.pytest: an in-process Celery app and worker on the test Redis --------------
@pytest.fixture(scope="session")
def celery_redis_url(redis_url) -> str:
    """The test Redis's database 1: broker, result backend and run store of `celery_app`, apart
    from database 0, whose queues the session's worker process consumes."""
    return urlunsplit(urlsplit(redis_url)._replace(path="/1"))


@pytest.fixture(scope="session")
def celery_settings(celery_redis_url):
    from tasks.settings import Settings

    return Settings(redis_url=celery_redis_url, agents="tasks.demo", cancel_grace=1)


@pytest.fixture(scope="session")
def celery_config(celery_settings) -> dict:
    """`celery_app`'s configuration: exactly what tasks.celery_config gives runcast's apps (JSON
    only, late acks, ...) for `celery_settings` (broker and result backend on the test Redis).
    Its task routes are each app's own: `celery_runtime` gives `celery_app` its."""
    from tasks.celery_config import configure_app

    recorder = types.SimpleNamespace(conf={})
    configure_app(recorder, celery_settings)
    config = dict(recorder.conf)
    del config["task_routes"]
    return config


@pytest.fixture(scope="session")
def celery_worker_parameters() -> dict:
    """`celery_worker`: a thread of this process (Celery's default 'solo' pool) consuming the
    queue runcast's agents use unless told otherwise."""
    return {"queues": ["default"], "loglevel": "WARNING", "shutdown_timeout": 10}


@pytest.fixture
def celery_runtime(celery_app, celery_settings):
    """A second configuration in this process: a Runtime on `celery_app`, every agent a task of
    that app (as tasks.runtime does for an app of its own). Its runs wait for a worker: request
    `celery_served` for the in-process one."""
    from tasks.agent_tasks import serve_agents
    from tasks.celery_config import routes
    from tasks.runtime import Runtime

    celery_app.conf.task_routes = routes(celery_app)
    rt = Runtime(celery_settings, celery_app)
    serve_agents(celery_app, lambda: rt)
    yield rt
    rt.close()


@pytest.fixture
def celery_served(celery_runtime, request):
    """`celery_runtime` served by `celery_worker`, started once the runtime's tasks exist (a
    worker knows the tasks of its app when it starts) and stopped before the runtime closes."""
    request.getfixturevalue("celery_worker")
    return celery_runtime
