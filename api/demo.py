"""`runcast demo`: the embedded service driven through its real HTTP API."""

from __future__ import annotations

import logging
import time

from rich.console import Console
from rich.progress import Progress
from rich.rule import Rule
from rich.table import Table

from api.client import Client
from api.embedded import EmbeddedServer
from api.render import RunRenderer


def _follow(client: Client, console: Console, title: str, agent: str, payload: dict,
            rows: list) -> str:
    console.print(Rule(f"[bold]{title}[/bold] ({agent})"))
    began = time.monotonic()
    stream = client.submit_stream(agent, payload)
    renderer = RunRenderer(console, agent)
    with stream:
        renderer.follow(stream)
    run = client.get(stream.run_id)
    rows.append((title, agent, run.status, run.last_seq, time.monotonic() - began))
    return run.status


def _hold(console: Console, url: str) -> None:
    console.print(f"the service stays up: watch the runs at [bold]{url}/ui[/bold]; "
                  "Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopped")


def run_demo(console: Console | None = None, keep_open: bool = False) -> int:
    console = console or Console()
    # The failing agent fails on purpose: keep its traceback out of the demo's screen.
    logging.getLogger("tasks").setLevel(logging.CRITICAL)
    console.print("[bold]runcast demo[/bold]: embedded mode (no Redis), driven over HTTP")
    rows: list[tuple[str, str, str, int, float]] = []
    with EmbeddedServer() as url, Client(url) as client:
        console.print(f"service at {url}, agents: "
                      + ", ".join(a.name for a in client.agents().agents))
        console.print(f"web UI: [bold]{url}/ui[/bold] (open it to watch the runs live"
                      + ("" if keep_open else "; `runcast demo --keep-open` keeps it up after")
                      + ")")
        _follow(client, console, "A countdown", "countdown", {"steps": 8, "delay": 0.15}, rows)
        text = "runcast streams every token of an agent run to whoever subscribes, from the start"
        _follow(client, console, "A token stream", "tokens", {"text": text, "delay": 0.03}, rows)
        _follow(client, console, "Custom events", "custom", {"document_id": "doc-42"}, rows)
        _follow(client, console, "A failing agent", "fail", {"message": "the model said no"},
                rows)

        console.print(Rule("[bold]Cancelling a run mid-way[/bold] (sleep)"))
        began = time.monotonic()
        run = client.submit("sleep", {"seconds": 30})
        with client.stream(run.run_id) as stream:
            renderer = RunRenderer(console, "sleep")
            for event in stream:
                renderer.show(event)
                if event.type == "started":
                    time.sleep(0.5)
                    client.cancel(run.run_id, reason="the demo changed its mind")
        done = client.get(run.run_id)
        rows.append(("A cancelled run", "sleep", done.status, done.last_seq,
                     time.monotonic() - began))

        console.print(Rule("[bold]A batch of 20[/bold] (echo)"))
        began = time.monotonic()
        batch = client.submit_batch([{"agent": "echo", "input": {"n": i}} for i in range(20)])
        console.print(f"[dim]{url}/ui/batches/{batch.batch_id}[/dim]")
        with Progress(console=console) as progress:
            bar = progress.add_task("batch", total=batch.total)
            while True:
                status = client.batch(batch.batch_id)
                ended = sum(n for s, n in status.counts.items() if s not in ("queued", "running"))
                progress.update(bar, completed=ended)
                if status.done:
                    break
                time.sleep(0.05)
        rows.append(("A batch of 20", "echo", ", ".join(f"{n} {s}" for s, n in
                                                         status.counts.items()),
                     batch.total, time.monotonic() - began))
        if keep_open:
            code = _summary(console, rows)
            _hold(console, url)
            return code
    return _summary(console, rows)


def _summary(console: Console, rows: list) -> int:
    table = Table(title="runcast demo summary")
    for column in ("what", "agent", "status", "events / runs", "seconds"):
        table.add_column(column)
    for title, agent, status, count, seconds in rows:
        colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(status, "")
        table.add_row(title, agent, f"[{colour}]{status}[/{colour}]" if colour else status,
                      str(count), f"{seconds:.2f}")
    console.print(table)
    expected = ["succeeded", "succeeded", "succeeded", "failed", "cancelled"]
    ok = [row[2] for row in rows[:5]] == expected and rows[5][2] == "20 succeeded"
    console.print("[green]demo finished as expected[/green]" if ok
                  else "[red]demo did not finish as expected[/red]")
    return 0 if ok else 1
