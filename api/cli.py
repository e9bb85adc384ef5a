"""The `runcast` command."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

app = typer.Typer(help="runcast: run AI-agent work in the background and stream its events.",
                  no_args_is_help=True, add_completion=False)
console = Console()
err = Console(stderr=True)
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _client():
    from api.client import Client

    url = os.environ.get("RUNCAST_URL", "http://localhost:8000")
    return Client(url, api_key=os.environ.get("RUNCAST_API_KEY") or None)


def _fail(message: str, code: int = 3) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _call(fn, *args, **kwargs) -> Any:
    """Run a client call, turning its errors into one clear line."""
    from api.client import NotFound, RuncastClientError, ServerUnavailable, Unauthorized

    try:
        return fn(*args, **kwargs)
    except ServerUnavailable as exc:
        url = os.environ.get("RUNCAST_URL", "http://localhost:8000")
        _fail(f"cannot reach runcast at {url} ({exc.detail}); is `runcast api` running? "
              "Set RUNCAST_URL to point elsewhere.")
    except Unauthorized:
        _fail("the server refused the API key: set RUNCAST_API_KEY to a valid key")
    except NotFound as exc:
        _fail(str(exc.detail), 4)
    except RuncastClientError as exc:
        _fail(str(exc.detail), 4)


def _show(model) -> None:
    console.print_json(model.model_dump_json())


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            console.print(f"runcast {version('runcast')}", highlight=False)
        except PackageNotFoundError:  # a source tree that was never installed
            console.print("runcast (not installed: no version)", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the installed version and exit.")] = False,
) -> None:
    pass


@app.command()
def dev(host: str = "127.0.0.1", port: int = 8000) -> None:
    """API and worker in one process, embedded (no Redis): for development."""
    import uvicorn

    from api.app import create_app
    from tasks.settings import Settings

    settings = Settings(redis_url="memory://")
    console.print(f"runcast dev: embedded mode at http://{host}:{port} (events kept in memory)")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


@app.command(context_settings=PASS_THROUGH)
def api(ctx: typer.Context) -> None:
    """The HTTP API under uvicorn; extra options go to uvicorn (e.g. --port 8000)."""
    os.execv(sys.executable, [sys.executable, "-m", "uvicorn", "api.app:app", *ctx.args])


IO_BOUND_CONCURRENCY = 1000


def worker_args(args: list[str], io_bound: bool) -> list[str]:
    """Celery's arguments; `--io-bound` adds a threads pool of 1,000 unless the pool or the
    concurrency is given."""
    if not io_bound:
        return args
    given = {arg.split("=", 1)[0] for arg in args}
    extra = []
    if not given & {"-P", "--pool"}:
        extra += ["--pool", "threads"]
    if not given & {"-c", "--concurrency"}:
        extra += ["--concurrency", str(IO_BOUND_CONCURRENCY)]
    return [*extra, *args]


@app.command(context_settings=PASS_THROUGH)
def worker(
    ctx: typer.Context,
    io_bound: Annotated[bool, typer.Option(
        "--io-bound", help="many I/O-bound agents per process: a threads pool of 1,000 "
        "(async handlers share one event loop); -c N sets another size")] = False,
) -> None:
    """A Celery worker (`celery -A tasks worker -E`); extra options go to Celery."""
    os.execv(sys.executable, [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-E",
                              *worker_args(ctx.args, io_bound)])


@app.command()
def demo(
    keep_open: Annotated[bool, typer.Option(
        "--keep-open", help="keep the service (and its web UI) up after the demo, until Ctrl-C",
    )] = False,
) -> None:
    """Start the embedded service and drive the demo agents over HTTP."""
    from api.demo import run_demo

    raise typer.Exit(run_demo(console, keep_open=keep_open))


@app.command()
def submit(
    agent: str,
    input: Annotated[str, typer.Option("--input", "-i", help="the input, as JSON")] = "{}",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="show events live")] = False,
    events: Annotated[str | None, typer.Option(help="event filter: preset or list")] = None,
    timeout: Annotated[float | None, typer.Option(help="seconds the run may take")] = None,
) -> None:
    """Submit a run (and, with --follow, watch it to the end)."""
    try:
        payload = json.loads(input)
    except json.JSONDecodeError as exc:
        _fail(f"--input is not JSON: {exc.msg}", 4)
    client = _client()
    run = _call(client.submit, agent, payload, events=events, timeout=timeout)
    if not follow:
        _show(run)
        return
    err.print(f"[dim]run {run.run_id}[/dim]")
    raise typer.Exit(_follow(client, run.run_id, agent))


def _follow(client, run_id: str, title: str) -> int:
    from api.render import RunRenderer

    renderer = RunRenderer(console, title)
    with client.stream(run_id) as stream:
        _call(renderer.follow, stream)
    return renderer.exit_code


@app.command()
def tail(run_id: str) -> None:
    """Follow a run's events from its first one to the end."""
    client = _client()
    run = _call(client.get, run_id)
    raise typer.Exit(_follow(client, run_id, run.agent))


@app.command()
def cancel(run_id: str, reason: Annotated[str | None, typer.Option()] = None) -> None:
    """Cancel a run."""
    _show(_call(_client().cancel, run_id, reason))


@app.command()
def get(run_id: str) -> None:
    """Show a run."""
    _show(_call(_client().get, run_id))


@app.command()
def runs(
    status: Annotated[str | None, typer.Option()] = None,
    agent: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
) -> None:
    """List runs, newest first."""
    page = _call(_client().list_runs, status=status, agent=agent, limit=limit)
    # run ids and statuses are never cut short: they are what a user copies into get/cancel/tail
    id_width = max((len(run.run_id) for run in page.runs), default=6)
    table = Table(Column("run_id", no_wrap=True, min_width=id_width), "agent",
                  Column("status", no_wrap=True, min_width=9), "created_at", "last_seq")
    for run in page.runs:
        table.add_row(run.run_id, run.agent, run.status, run.created_at, str(run.last_seq))
    console.print(table)


@app.command()
def batch(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="one JSON input a line")],
    agent: Annotated[str, typer.Option(help="the agent every line runs")],
    out: Annotated[Path | None, typer.Option(help="results, one line per input line")] = None,
) -> None:
    """Run one run per line of FILE.jsonl; run it again to pick up where it stopped."""
    from api.batch_file import run_batch

    out = out or file.with_suffix(".results.jsonl")
    try:
        failures = _call(run_batch, _client(), file, agent, out, console)
    except ValueError as exc:
        _fail(str(exc), 4)
    console.print(f"results in {out}" + (f"; {failures} runs did not succeed" if failures else ""))
    raise typer.Exit(1 if failures else 0)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
