"""`runcast worker --io-bound`: the Celery arguments it makes (the worker itself is exercised in
tests/test_aio_pool.py)."""

from api.cli import IO_BOUND_CONCURRENCY, worker_args


def test_io_bound_means_a_threads_pool_of_a_thousand():
    assert worker_args(["-Q", "gpu"], io_bound=True) == [
        "--pool", "threads", "--concurrency", str(IO_BOUND_CONCURRENCY), "-Q", "gpu"]
    assert IO_BOUND_CONCURRENCY == 1000


def test_a_given_pool_or_concurrency_wins():
    assert worker_args(["-c", "50"], io_bound=True) == ["--pool", "threads", "-c", "50"]
    assert worker_args(["--concurrency=20"], io_bound=True) == [
        "--pool", "threads", "--concurrency=20"]
    assert worker_args(["-P", "gevent"], io_bound=True) == [
        "--concurrency", str(IO_BOUND_CONCURRENCY), "-P", "gevent"]


def test_without_io_bound_the_arguments_pass_through():
    assert worker_args(["-c", "4", "-Q", "a"], io_bound=False) == ["-c", "4", "-Q", "a"]
