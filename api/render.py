"""Show a run's events to a person: a progress bar, token text, updates, custom events."""

from __future__ import annotations

import json
from collections.abc import Iterable

from rich.console import Console
from rich.pretty import Pretty
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from streaming.events import Event

EXIT_CODES = {"complete": 0, "error": 1, "cancelled": 2}


class RunRenderer:
    """Feed it events in order; it draws them and remembers how the run ended."""

    def __init__(self, console: Console, title: str = "") -> None:
        self.console = console
        self.title = title
        self.progress: Progress | None = None
        self.bar = None
        self.in_text = False  # token text printed without a newline yet
        self.terminal: Event | None = None
        self.count = 0

    def _end_text(self) -> None:
        if self.in_text:
            self.console.print()
            self.in_text = False

    def _progress(self, fraction: float, label: str) -> None:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold blue]{task.description}"), BarColumn(), TaskProgressColumn(),
                TimeElapsedColumn(), console=self.console, transient=False,
            )
            self.progress.start()
            self.bar = self.progress.add_task(label or self.title, total=1.0)
        self.progress.update(self.bar, completed=fraction, description=label or self.title)

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def show(self, event: Event) -> None:
        self.count += 1
        data = event.data or {}
        kind = event.type
        if kind == "progress":
            self._end_text()
            label = " ".join(str(p) for p in (data.get("step"), data.get("message")) if p)
            self._progress(float(data.get("progress") or 0.0), label)
        elif kind == "token":
            self.console.print(data.get("content", ""), end="", soft_wrap=True, markup=False,
                               highlight=False)
            self.in_text = True
            if data.get("finish_reason"):
                self._end_text()
        elif kind == "update":
            self._end_text()
            self.console.print(f"[dim]… {data.get('text', '')}[/dim]")
        elif kind.startswith("custom:"):
            self._end_text()
            self.console.print(f"[magenta]• {kind[7:]}[/magenta] {json.dumps(data)}",
                               highlight=False)
        elif kind == "started":
            self.console.print(
                f"[dim]started {self.title} (attempt {data.get('attempt')}, "
                f"worker {data.get('worker')})[/dim]"
            )
        elif kind in EXIT_CODES:
            self._end_text()
            self._stop_progress()
            self.terminal = event
            self._show_end(event)

    def _show_end(self, event: Event) -> None:
        data = event.data or {}
        if event.type == "complete":
            self.console.print(f"[green]✓ succeeded[/green] in {data.get('latency_seconds')} s")
            self.console.print(Pretty(data.get("output")))
        elif event.type == "error":
            self.console.print(f"[red]✗ failed[/red] ({data.get('code')}): {data.get('error')}")
        else:
            self.console.print(f"[yellow]■ cancelled[/yellow]: {data.get('reason') or ''}")

    def follow(self, events: Iterable[Event]) -> int:
        """Draw every event; returns the exit code: 0 succeeded, 1 failed, 2 cancelled."""
        try:
            for event in events:
                self.show(event)
        finally:
            self._end_text()
            self._stop_progress()
        return self.exit_code

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.terminal.type, 1) if self.terminal else 1
