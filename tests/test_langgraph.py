"""LangGraph graphs as runcast runs (DESIGN.md, "Framework-native streaming"): compiled graphs
with langchain-core's fake chat models, run by a real Celery worker, read over SSE from the real
API. Tokens, node steps, custom and interrupt events arrive in order, gap-free, never twice."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from tests.agents_streaming import AGENTS, QUEUE, TICKS
from tests.api_helpers import (
    all_events,
    assert_frame_matches_envelope,
    parse_body,
    submit,
    wait_terminal,
    wait_until,
)
from tests.log_check import check_log
from tests.services import ROOT, start_worker

REPLY = "Paris is sunny today."
REPLY_TOKENS = ["Paris ", "is ", "sunny ", "today."]


@pytest.fixture(scope="module")
def graphs_worker(redis_url, runcast, worker):
    import tests.agents_streaming  # noqa: F401 - the test process submits them too

    process = start_worker(redis_url, name="graphs", concurrency=2,
                           extra_args=["-Q", QUEUE], RUNCAST_AGENTS=AGENTS)
    yield process
    process.stop()


def sse(http: httpx.Client, run_id: str) -> list[dict]:
    """The run's events over SSE, from the first to the terminal one, checked as the contract's
    log: frames match their envelopes, seq 1..n without gap or duplicate, and equal to the
    events route."""
    with http.stream("GET", f"/runs/{run_id}/stream") as response:
        assert response.status_code == 200
        frames = parse_body(response.read().decode())
    for frame in frames:
        assert_frame_matches_envelope(frame, run_id)
    envelopes = [frame.data for frame in frames]
    check_log(run_id, envelopes)
    assert envelopes == all_events(http, run_id)
    return envelopes


def run_agent(runcast, http, agent: str, payload: dict, status: str = "succeeded"):
    run_id = runcast.submit(agent, payload)
    run = wait_terminal(http, run_id)
    assert run["status"] == status, run
    return run, sse(http, run_id)


def kinds(events: list[dict]) -> list[str]:
    return [e["type"] for e in events]


def tokens(events: list[dict]) -> list[str]:
    return [e["data"]["content"] for e in events if e["type"] == "token"]


def steps(events: list[dict]) -> list[dict]:
    return [e["data"] for e in events if e["type"] == "step"]


# -- the demo agent -----------------------------------------------------------------------------
def test_the_graph_demo_agent_streams_steps_and_tokens(http):
    from tasks.demo import GRAPH_REPLY

    assert "graph" in {a["name"] for a in http.get("/agents").json()["agents"]}
    run_id = submit(http, "graph", {"question": "What is runcast?"})["run_id"]
    run = wait_terminal(http, run_id)
    assert run["status"] == "succeeded", run
    assert run["output"] == {"answer": GRAPH_REPLY}
    events = sse(http, run_id)
    assert "".join(tokens(events)) == GRAPH_REPLY
    words = GRAPH_REPLY.split(" ")  # word by word, as `tokens` does: "word " each, the last
    assert tokens(events) == [w + " " for w in words[:-1]] + [words[-1]]  # without the space
    finish = [e["data"]["finish_reason"] for e in events if e["type"] == "token"]
    assert finish == [None] * (len(words) - 1) + ["stop"]
    assert [s["node_name"] for s in steps(events)] == ["prepare", "answer"]
    prepare, answer = steps(events)
    assert prepare["output_keys"] == ["prompt"] and answer["output_keys"] == ["answer"]
    assert prepare["input_keys"] == ["question"]
    assert all(isinstance(s["duration_ms"], float) and s["duration_ms"] >= 0
               for s in steps(events))
    # the answer node's tokens come between the two steps, before its own step
    body = kinds(events)
    assert body[0] == "started" and body[1] == "step" and body[-2] == "step"
    assert set(body[2:-2]) == {"token"} and body[-1] == "complete"


# -- node code emitting through LangGraphBackend ------------------------------------------------
@pytest.mark.usefixtures("graphs_worker")
def test_node_emits_reach_the_custom_stream_and_the_log_once(runcast, http):
    run, events = run_agent(runcast, http, "t_lg_emits", {"question": "Why?", "reply": REPLY})
    emitted = [e for e in events if e["type"] not in ("started", "complete")]
    assert [(e["type"], e["data"]) for e in emitted] == [
        ("update", {"text": "Researching", "content": {"question": "Why?"}}),
        ("custom:found", {"sources": 2}),
        ("update", {"text": "Writing", "content": {}}),
        ("custom:written", {"words": 4}),
    ]
    # LangGraph's own custom stream carried the same envelopes, once each, in the same order
    assert run["output"]["custom"] == emitted


@pytest.mark.usefixtures("graphs_worker")
def test_node_emits_with_stream_graph_appear_once_and_in_order(runcast, http):
    run, events = run_agent(runcast, http, "t_lg_emits",
                            {"question": "Why?", "reply": REPLY, "mode": "stream_graph"})
    assert run["output"] == {"answer": REPLY}
    assert kinds(events) == ["started", "update", "custom:found", "step", "update",
                             "token", "token", "token", "token", "custom:written", "step",
                             "complete"]
    assert tokens(events) == REPLY_TOKENS
    finish = [e["data"]["finish_reason"] for e in events if e["type"] == "token"]
    assert finish == [None, None, None, "stop"]  # on the message's last token, as reported
    assert [(s["node_name"], s["output_keys"]) for s in steps(events)] == [
        ("research", ["notes"]), ("write", ["answer"])]


# -- a tool-calling step ------------------------------------------------------------------------
@pytest.mark.usefixtures("graphs_worker")
def test_a_graph_with_a_tool_calling_step(runcast, http):
    run, events = run_agent(runcast, http, "t_lg_tools", {"reply": REPLY})
    assert run["output"] == {"answer": REPLY, "kinds": ["human", "ai", "tool", "ai"]}
    assert [s["node_name"] for s in steps(events)] == ["assistant", "tools", "assistant"]
    assert all(s["output_keys"] == ["messages"] for s in steps(events))
    assert kinds(events) == ["started", "step", "update", "step", "token", "token", "token",
                             "token", "step", "complete"]
    update = next(e for e in events if e["type"] == "update")
    assert update["data"] == {"text": "Looking up the weather", "content": {"city": "Paris"}}
    assert tokens(events) == REPLY_TOKENS  # the tool call itself streamed no text


# -- an interrupt -------------------------------------------------------------------------------
@pytest.mark.usefixtures("graphs_worker")
@pytest.mark.parametrize(("value", "data"), [
    ({"question": "Approve?", "options": ["yes", "no"]},
     {"question": "Approve?", "options": ["yes", "no"]}),
    ("Approve?", {"value": "Approve?"}),
])
def test_an_interrupt_ends_the_graph_with_the_state_so_far(runcast, http, value, data):
    run, events = run_agent(runcast, http, "t_lg_interrupt", {"value": value})
    assert run["output"] == {"state": {"question": "q", "answer": "draft"}}
    assert [(e["type"], e["data"]) for e in events[1:-1]] == [
        ("custom:langgraph", {"drafted": True}),
        ("custom:langgraph", {"value": "plain text"}),
        ("step", {"node_name": "draft", "duration_ms": steps(events)[0]["duration_ms"],
                  "input_keys": ["question"], "output_keys": ["answer"]}),
        ("custom:interrupt", data),
    ]


# -- failures and cancellation ------------------------------------------------------------------
@pytest.mark.usefixtures("graphs_worker")
def test_a_node_that_raises_fails_the_run(runcast, http):
    run, events = run_agent(runcast, http, "t_lg_fail", {}, status="failed")
    assert run["error"]["code"] == "agent_error"
    assert run["error"]["details"] == {"type": "LookupError"}
    assert run["error"]["error"] == "the node broke"
    assert kinds(events) == ["started", "token", "token", "error"]  # no step: it never ended
    assert tokens(events) == ["partial ", "answer"]


@pytest.mark.usefixtures("graphs_worker")
@pytest.mark.parametrize("agent", ["t_lg_endless", "t_lg_endless_sync"])
def test_cancelling_the_run_stops_the_graph(runcast, http, redis_client, agent):
    run_id = runcast.submit(agent, {})
    ticks = TICKS.format(run_id=run_id)
    wait_until(http, run_id, lambda r: r["status"] == "running")
    deadline = time.monotonic() + 30
    while int(redis_client.get(ticks) or 0) < 3:  # the node is spinning
        assert time.monotonic() < deadline, "the graph's node never ran"
        time.sleep(0.05)
    response = http.post(f"/runs/{run_id}/cancel", json={"reason": "enough"})
    assert response.status_code == 202, response.text
    run = wait_terminal(http, run_id, timeout=30)
    assert run["status"] == "cancelled"
    events = sse(http, run_id)
    assert kinds(events) == ["started", "custom:spinning", "cancelled"]
    assert events[-1]["data"] == {"reason": "enough"}
    # The node stopped with the run (cooperatively: cancel grace is 1 s in tests), and the
    # worker process is free for the next run.
    settled = int(redis_client.get(ticks) or 0)
    time.sleep(0.5)
    assert int(redis_client.get(ticks) or 0) == settled
    redis_client.delete(ticks)
    run_agent(runcast, http, "t_lg_emits", {"question": "next"})  # the worker is free again


# -- without the extra --------------------------------------------------------------------------
def test_without_the_extra_the_import_error_names_it():
    # A process where LangGraph cannot be imported: runcast works, the integration's import
    # error names the extra, and the `graph` demo agent is not registered.
    code = ("import sys\n"
            "for name in ('langgraph', 'langgraph.config', 'langchain_core'):\n"
            "    sys.modules[name] = None\n"
            "import streaming, tasks.demo\n"
            "from tasks.registry import get_agent\n"
            "print('graph agent:', get_agent('graph'), get_agent('echo') is not None)\n"
            "try:\n"
            "    import streaming.integrations.langgraph\n"
            "except ImportError as exc:\n"
            "    print('error:', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "graph agent: None True" in out, out
    assert "error:" in out and "runcast[langgraph]" in out, out
