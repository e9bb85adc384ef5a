"""Agents of the faults suite (workers load them with RUNCAST_AGENTS="tasks.demo,tests.reliability.agents").

`rel_<name>` runs the demo agent `<name>` (tasks/demo.py) inside a guard that proves no run is
ever executed twice at the same time. With a Redis connection from the `REDIS_URL` environment
variable, the guard INCRs `reltest:active:{run_id}` when the handler starts and DECRs it when the
handler ends, and keeps the highest value it saw in `reltest:max:{run_id}`: any overlap of two
executions of one run makes that maximum 2. Every key expires (TTL_S), so nothing leaks.

A handler in a worker the tests SIGKILL never reaches its DECR. So that such a dead execution does
not count as "active" forever, each execution also registers itself (its pid and a random token)
in `reltest:holders:{run_id}`; the next execution of the run discounts holders whose process no
longer exists (the test kills workers on this machine only). Both steps are one Lua script each
and idempotent, so the client may retry them across killed connections without counting twice.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from streaming import StreamContext
from tasks import demo
from tasks.registry import agent

ACTIVE_KEY = "reltest:active:{run_id}"
MAX_KEY = "reltest:max:{run_id}"
HOLDERS_KEY = "reltest:holders:{run_id}"
TTL_S = 1800

# KEYS: active, max, holders. ARGV: me, ttl, dead holders... -> the executions active now.
ENTER = """
for i = 3, #ARGV do
  if redis.call('SREM', KEYS[3], ARGV[i]) == 1 then redis.call('DECR', KEYS[1]) end
end
local n
if redis.call('SADD', KEYS[3], ARGV[1]) == 1 then
  n = redis.call('INCR', KEYS[1])
else
  n = tonumber(redis.call('GET', KEYS[1]) or '0')
end
local m = tonumber(redis.call('GET', KEYS[2]) or '0')
if n > m then redis.call('SET', KEYS[2], n, 'EX', ARGV[2]) end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[2])
return n
"""

# KEYS: active, holders. ARGV: me.
LEAVE = """
if redis.call('SREM', KEYS[2], ARGV[1]) == 1 then redis.call('DECR', KEYS[1]) end
return 1
"""

_client: redis.Redis | None = None
_client_pid: int | None = None


def _redis() -> redis.Redis:
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():  # one per (forked) process
        _client = redis.Redis.from_url(
            os.environ["REDIS_URL"], socket_connect_timeout=2, socket_timeout=5,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 40),
        )
        _client_pid = os.getpid()
    return _client


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def guard(run_id: str):
    client = _redis()
    me = f"{os.getpid()}:{uuid.uuid4().hex}"
    holders = HOLDERS_KEY.format(run_id=run_id)
    dead = [h for h in client.smembers(holders) if not _alive(int(h.split(b":")[0]))]
    active = ACTIVE_KEY.format(run_id=run_id)
    client.eval(ENTER, 3, active, MAX_KEY.format(run_id=run_id), holders, me, TTL_S, *dead)
    try:
        yield
    finally:
        client.eval(LEAVE, 2, active, holders, me)


def _guarded(name: str, handler: Callable[..., Any], takes_context: bool) -> None:
    def run(payload: Any, context: StreamContext) -> Any:
        with guard(context.run_id):
            return handler(payload, context) if takes_context else handler(payload)

    run.__name__ = f"rel_{name}"
    agent(f"rel_{name}", description=f"The demo agent {name} under the overlap guard")(run)


for _name, _handler, _takes_context in [
    ("echo", demo.echo, False),
    ("countdown", demo.countdown, True),
    ("tokens", demo.tokens, True),
    ("sleep", demo.sleep, True),
    ("fail", demo.fail, False),
    ("custom", demo.custom, True),
]:
    _guarded(_name, _handler, _takes_context)
