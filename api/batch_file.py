"""`runcast batch FILE.jsonl --agent NAME --out results.jsonl`, resumable.

The lines still to do go to the server as batches (`POST /batches`, up to 10,000 runs each, and
each request's body within the API's cap, RUNCAST_MAX_INPUT_BYTES, read from the same settings the
API reads: 1 MiB unless set). A line whose run alone would not fit is an error before anything is
submitted. A live bar follows the batch stream (`GET /batches/{id}/stream`, not polling), and the results come
from the results route in submit order: as soon as the runs of the next lines have ended, their
results are appended to the output file, one line per input line.

Resuming: the batch being worked on is noted next to the output file (`<out>.batch`), keyed by
the agent, the files and the lines it holds; the split into batches depends on the file and the
cap alone, so a second run finds the same batches. Running the command again skips the lines whose
results are already written and goes on with the noted batch instead of submitting its runs again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from api.client import Client
from api.client_errors import NotFound
from api.constants import MAX_BATCH_RUNS
from tasks.settings import Settings

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
WRITE_EVERY_S = 0.2  # results are fetched at most this often while a batch runs (and at its end)


def read_inputs(path: Path) -> list[tuple[int, str, object]]:
    inputs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            inputs.append((number, line, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None
    return inputs


def request_cap() -> int:
    """The request body cap as the API reads it from the environment (RUNCAST_MAX_INPUT_BYTES,
    1 MiB unless set): what this machine's `runcast api` refuses above."""
    return Settings().max_input_bytes


def _size(value: object) -> int:
    """Bytes of `value` in a request body, at most: the client sends compact UTF-8 JSON, never
    longer than Python's default encoding measured here (wider separators, ASCII escapes)."""
    return len(json.dumps(value))


def split(path: Path, inputs: list[tuple[int, str, object]], agent: str,
          cap: int) -> list[tuple[int, int]]:
    """The batches the lines go in, as (start, stop) indexes: in file order, each at most
    MAX_BATCH_RUNS runs and a request body (`{"runs": [...], "metadata": {}}`) of at most `cap`
    bytes."""
    empty = _size({"runs": [], "metadata": {}})
    bounds: list[tuple[int, int]] = []
    start, size = 0, empty
    for index, (number, _line, payload) in enumerate(inputs):
        run = _size({"agent": agent, "input": payload}) + 2  # and the ", " before it
        if empty + run > cap:
            raise ValueError(f"{path}:{number}: this line's run alone makes a request body "
                             f"larger than the limit of {cap} bytes (RUNCAST_MAX_INPUT_BYTES)")
        if index - start == MAX_BATCH_RUNS or size + run > cap:
            bounds.append((start, index))
            start, size = index, empty
        size += run
    if start < len(inputs):
        bounds.append((start, len(inputs)))
    return bounds


def done_count(out: Path) -> int:
    if not out.exists():
        return 0
    lines = out.read_text().splitlines()
    complete = 0
    for line in lines:
        try:
            json.loads(line)
        except json.JSONDecodeError:
            break  # a line cut by an interruption is written again
        complete += 1
    if complete != len(lines):
        out.write_text("".join(line + "\n" for line in lines[:complete]))
    return complete


def chunk_key(agent: str, path: Path, out: Path, chunk: list[tuple[int, str, object]]) -> str:
    """Same agent, files and lines: the same batch (for resuming)."""
    digest = hashlib.sha256(f"{agent}\n{path.resolve()}\n{out.resolve()}".encode())
    for number, line, _payload in chunk:
        digest.update(f"\n{number}\n{line}".encode())
    return digest.hexdigest()


def state_path(out: Path) -> Path:
    return out.with_name(out.name + ".batch")


def noted_batch(out: Path, key: str) -> str | None:
    try:
        state = json.loads(state_path(out).read_text())
    except (OSError, ValueError):
        return None
    return state.get("batch_id") if state.get("key") == key else None


def run_batch(client: Client, path: Path, agent: str, out: Path, console: Console) -> int:
    """Returns how many runs did not succeed."""
    inputs = read_inputs(path)
    bounds = split(path, inputs, agent, request_cap())  # fixed per file and cap
    failures = 0
    with Progress(console=console) as progress:
        bar = progress.add_task(f"{agent} × {len(inputs)}", total=len(inputs))
        while (written := done_count(out)) < len(inputs):
            first, stop = next(b for b in bounds if b[0] <= written < b[1])
            chunk = inputs[first:stop]
            key = chunk_key(agent, path, out, chunk)
            batch_id = noted_batch(out, key)
            if batch_id is not None:
                try:
                    client.batch(batch_id)
                except NotFound:  # expired: submit it again
                    batch_id = None
            if batch_id is None:
                created = client.submit_batch([{"agent": agent, "input": payload}
                                               for _n, _l, payload in chunk])
                batch_id = created.batch_id
                state_path(out).write_text(json.dumps({"key": key, "batch_id": batch_id}))
            failures += follow(client, batch_id, chunk, first, written - first, out,
                               lambda n: progress.update(bar, completed=n))
        progress.update(bar, completed=len(inputs))
    state_path(out).unlink(missing_ok=True)
    return failures


def follow(client: Client, batch_id: str, chunk: list, first: int, written: int, out: Path,
           show) -> int:
    """Watch the batch's stream; append the results of each finished prefix of its runs."""
    ended = bytearray(len(chunk))
    count = 0
    ready = written  # runs 0..ready-1 have ended
    failures = 0
    last_write = 0.0
    with out.open("a") as sink, client.batch_stream(batch_id) as frames:
        for frame in frames:
            data = frame.data
            if frame.event == "run" and data.get("status") in TERMINAL:
                index = data["index"]
                if not ended[index]:
                    ended[index] = 1
                    count += 1
                    show(first + max(count, written))
                while ready < len(chunk) and ended[ready]:
                    ready += 1
            done = frame.event == "done"
            if ready > written and (done or time.monotonic() - last_write >= WRITE_EVERY_S):
                failures += write(client, batch_id, chunk, written, ready, sink)
                written, last_write = ready, time.monotonic()
            if done:
                break
        if written < len(chunk):  # the stream ended: every run has ended
            failures += write(client, batch_id, chunk, written, len(chunk), sink)
    return failures


def write(client: Client, batch_id: str, chunk: list, start: int, stop: int, sink) -> int:
    failures = 0
    results = client.batch_results(batch_id, after=start, limit=stop - start)
    for result in itertools.islice(results, stop - start):
        number = chunk[result.index][0]
        failures += result.status != "succeeded"
        line = {"line": number, "run_id": result.run_id, "status": result.status,
                "output": result.output,
                "error": result.error.model_dump() if result.error else None}
        sink.write(json.dumps(line) + "\n")
    sink.flush()
    return failures
