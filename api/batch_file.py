"""`runcast batch FILE.jsonl --agent NAME --out results.jsonl`, resumable.

Each input line becomes one run with an idempotency key made from the file's line and its
content, so running the command again finds the runs it already submitted instead of making
new ones; lines whose results are already in the output file are skipped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from api.client import Client

SUBMIT_AHEAD = 200  # runs submitted ahead of the one being waited for


def line_key(agent: str, out: Path, number: int, line: str) -> str:
    """Same agent, results file, line number and line: the same run (for resuming)."""
    digest = hashlib.sha256(f"{agent}\n{out.resolve()}\n{number}\n{line}".encode()).hexdigest()
    return f"batch-{digest[:40]}"


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


def run_batch(client: Client, path: Path, agent: str, out: Path, console: Console) -> int:
    """Returns how many runs did not succeed."""
    inputs = read_inputs(path)
    skip = done_count(out)
    failures = 0
    submitted: dict[int, str] = {}
    with Progress(console=console) as progress, out.open("a") as sink:
        bar = progress.add_task(f"{agent} × {len(inputs)}", total=len(inputs), completed=skip)
        todo = inputs[skip:]
        for index, (number, line, payload) in enumerate(todo):
            for ahead in todo[index : index + SUBMIT_AHEAD]:
                if ahead[0] not in submitted:
                    run = client.submit(agent, ahead[2], idempotency_key=line_key(agent, out, *ahead[:2]))
                    submitted[ahead[0]] = run.run_id
            run = client.wait(submitted.pop(number))
            failures += run.status != "succeeded"
            result = {"line": number, "run_id": run.run_id, "status": run.status,
                      "output": run.output, "error": run.error.model_dump() if run.error else None}
            sink.write(json.dumps(result) + "\n")
            sink.flush()
            progress.advance(bar)
    return failures
