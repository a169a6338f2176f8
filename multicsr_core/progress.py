"""Progress of long work, reported one way everywhere (the CLI, the Prefect tasks).

Core functions take a plain ``progress(done, total)`` callback (:data:`Progress`). :class:`ProgressReporter`
implements it: a rich bar on a terminal (a log line every 10% otherwise, so CI logs stay
readable), the rate in items per second, and optional extra sinks such as the Prefect progress
artifact that ``multicsr.orchestration.progress`` adds.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as ProgressBar

# what every long core call takes: progress(done, total), called as items finish
Progress = Callable[[int, int], None]


class ProgressReporter:
    def __init__(self, stage: str, unit: str = "items", sinks: list[Callable[[int, int, float], None]] | None = None,
                 console: Console | None = None):
        self.stage, self.unit = stage, unit
        self.sinks = list(sinks or [])
        self.console = console or Console(stderr=True)
        self.started = time.monotonic()
        self._bar: ProgressBar | None = None
        self._task_id = None
        self._last_logged_decile = -1

    def __enter__(self) -> "ProgressReporter":
        if self.console.is_terminal:
            self._bar = ProgressBar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=self.console, transient=False)
            self._bar.start()
            self._task_id = self._bar.add_task(self.stage, total=None, rate="")
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, done: int, total: int) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = done / elapsed
        if self._bar is not None:
            self._bar.update(self._task_id, completed=done, total=total, rate=f"{rate:.1f} {self.unit}/s")
        elif total:
            decile = int(10 * done / total)
            if decile != self._last_logged_decile:
                self._last_logged_decile = decile
                print(f"[{self.stage}] {done}/{total} {self.unit} ({100 * done / total:.0f}%, {rate:.1f}/s)",
                      file=sys.stderr, flush=True)
        for sink in self.sinks:
            sink(done, total, rate)
