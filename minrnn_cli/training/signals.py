"""SIGINT and SIGTERM during training: finish the current step, save last.pt, stop with one line.

While `stop_signals()` is active the first SIGINT (Ctrl-C) or SIGTERM (a scheduler's kill, `docker stop`)
only records itself; the loop checks after every step, saves and raises `Interrupted`. A second signal
stops at once (the default behaviour), for a save that hangs.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from minrnn_cli.errors import UserError

HANDLED = (signal.SIGINT, signal.SIGTERM)


class Interrupted(UserError):
    """Training stopped by a signal after saving; exits with 128 + the signal number, like the shell."""

    ends_sweep = True  # the user stopped the whole command, not one job of a sweep

    def __init__(self, signum: int, step: int, checkpoint: Path):
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}, saved {checkpoint}; continue "
                         f"with the same command plus trainer.resume={checkpoint}")
        self.exit_code = 128 + signum
        self.where = f"stopped by {signal.Signals(signum).name} at step {step}, saved {checkpoint}"

    def sweep_advice(self, rerun: str) -> str:
        """The advice for a job of a sweep: each job must continue its own run, so no checkpoint path. `rerun`:
        the command that starts the sweep again in its folder ("the same command", or it plus the folder)."""
        return (f"error: {self.where}; continue the sweep with {rerun} (finished jobs are kept, each unfinished "
                "job continues from its own last.pt)")


class FinalPhaseInterrupted(UserError):
    """A stop after the last training step, while the results are being written (the best weights loaded, their
    scores, the summary): every checkpoint is saved, and a resume from last.pt writes the results without
    training."""

    ends_sweep = True

    def __init__(self, signum: int, step: int, checkpoint: Path):
        self.where = (f"stopped by {signal.Signals(signum).name} while the results were being written (training "
                      f"finished at step {step}, checkpoints saved)")
        super().__init__(f"{self.where}; get the results with the same command plus trainer.resume={checkpoint}")
        self.exit_code = 128 + signum

    def sweep_advice(self, rerun: str) -> str:
        """A job of a sweep: the sweep started again finishes this job from its last.pt (no path to give)."""
        return (f"error: {self.where}; get the results with {rerun} (finished jobs are kept; this one writes its "
                "results without training)")


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None
        self.on_signal = None  # called at once with the signal number (the final phase: stop right away)

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_signals() -> Iterator[StopRequest]:
    """Catch SIGINT/SIGTERM for the duration; outside the main thread (signals cannot be caught there) the
    request never fires and the signals keep their default effect."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.getsignal(signum) or signal.SIG_DFL for signum in HANDLED}

    def handle(signum, frame) -> None:
        if request.requested:  # the second signal: give up on a clean stop
            for handled, handler in previous.items():
                signal.signal(handled, handler)
            signal.raise_signal(signum)
            return
        request.signum = signum
        if request.on_signal is not None:
            request.on_signal(signum)

    for signum in HANDLED:
        signal.signal(signum, handle)
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def agreed_stop_signal(request: StopRequest, replica) -> int:
    """The signal that stops training now (0: none). Under data parallelism every rank must stop at the same
    step, so the ranks agree on it (one tiny all-reduce per step)."""
    if not replica.distributed:
        return request.signum or 0
    import torch
    import torch.distributed as dist

    signum = torch.tensor([request.signum or 0])
    dist.all_reduce(signum, op=dist.ReduceOp.MAX)
    return int(signum.item())
