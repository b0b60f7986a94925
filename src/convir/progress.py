"""Progress for long commands, on stderr, whether or not it is a terminal.

On a terminal: a rich bar. Redirected to a file or a pipe (CI logs, ``nohup``), rich draws
nothing until the end, so a plain line is printed instead every ``every_s`` seconds and at
the end ("dialogues 40/200 (20%), 0:03:12 elapsed, ~0:12:48 left"). Both share the small
subset of rich's ``Progress`` API the commands use (``add_task``, ``advance``, context manager).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def progress(label: str, quiet: bool = False, stream: TextIO | None = None, every_s: float = 30.0) -> Any:
    """A progress display for ``label`` (e.g. "dialogues"); silent with ``quiet``."""
    stream = stream or sys.stderr
    if not quiet and not stream.isatty():
        return LineProgress(label, stream, every_s)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=stream),
        disable=quiet,
    )


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class LineProgress:
    """Plain-text progress lines for non-terminal output."""

    def __init__(self, label: str, stream: TextIO, every_s: float = 30.0) -> None:
        self.label, self.stream, self.every_s = label, stream, every_s
        self.total: int | None = None
        self.done = 0
        self.start = self.last = time.monotonic()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.total is not None and self.done:
            self._line()

    def add_task(self, description: str, total: int | None = None, **_: Any) -> int:
        self.total, self.done = total, 0
        self.start = self.last = time.monotonic()
        self._line()
        return 0

    def advance(self, task: int, n: float = 1) -> None:
        self.done += int(n)
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self._line()

    def _line(self) -> None:
        elapsed = time.monotonic() - self.start
        if self.total:
            pct = 100 * self.done / self.total
            left = f", ~{_hms(elapsed / self.done * (self.total - self.done))} left" if self.done else ""
            msg = f"{self.label} {self.done}/{self.total} ({pct:.0f}%), {_hms(elapsed)} elapsed{left}"
        else:
            msg = f"{self.label} {self.done}, {_hms(elapsed)} elapsed"
        print(msg, file=self.stream, flush=True)
