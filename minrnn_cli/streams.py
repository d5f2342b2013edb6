"""Standard output and error that survive a reader that goes away (`minrnn train | head -1`, a closed
terminal): after the first broken pipe, further writes to that stream go to /dev/null, so a run that has
lost its reader still finishes and writes its results and checkpoints."""

from __future__ import annotations

import contextlib
import os
import sys


class SurvivingStream:
    """A text stream wrapper: writes and flushes as the wrapped one, until its pipe breaks."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def _to_devnull(self) -> None:
        """Point the stream's file descriptor at /dev/null (what is buffered for the broken pipe is dropped)."""
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)

    def __getattr__(self, name: str):  # isatty, fileno, encoding, buffer, ...
        return getattr(self._stream, name)


def survive_closed_pipes() -> None:
    """Wrap sys.stdout and sys.stderr (call once, before anything holds a reference to them)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, SurvivingStream):
            setattr(sys, name, SurvivingStream(stream))
