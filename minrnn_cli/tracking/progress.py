"""Training progress: a live rich bar on a terminal, plain log lines otherwise (CI logs, files, pipes)."""

from __future__ import annotations

import logging
import time

from rich import get_console
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

log = logging.getLogger("minrnn")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}"


class TrainingProgress:
    """`update(step, loss, tokens_per_s)` after every few steps; use as a context manager."""

    def __init__(self, total_steps: int, start_step: int, console: Console | None = None):
        self.total_steps, self.start_step = total_steps, start_step
        self.console = console or get_console()  # the console the log handler prints to
        self.started = time.perf_counter()
        self.bar: Progress | None = None
        if self.console.is_terminal:
            self.bar = Progress(
                TextColumn("step {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TextColumn("{task.fields[tokens_per_s]:,.0f} tok/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self.task_id = self.bar.add_task("train", total=total_steps, completed=start_step,
                                             loss=float("nan"), tokens_per_s=0.0)

    def __enter__(self) -> TrainingProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task_id, completed=step, loss=loss, tokens_per_s=tokens_per_s)
            return
        elapsed = time.perf_counter() - self.started
        done = step - self.start_step
        eta = elapsed / done * (self.total_steps - step) if done else 0.0
        log.info(f"step {step}/{self.total_steps} | loss {loss:.4f} | {tokens_per_s:,.0f} tok/s | "
                 f"ETA {_duration(eta)}")
