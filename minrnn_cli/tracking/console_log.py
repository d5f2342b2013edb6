"""The console log handler of a job (named in conf/hydra/job_logging/rich.yaml).

On a terminal, records go through rich on the same console as the live progress bar, so they print above
it. Anywhere else (CI logs, pipes, files) they are plain, unwrapped `time level message` lines.
"""

from __future__ import annotations

import logging
import sys

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(message)s"
PLAIN_TIME_FORMAT = "%H:%M:%S"


def console_handler() -> logging.Handler:
    from rich import get_console

    console = get_console()
    if console.is_terminal:
        from rich.logging import RichHandler

        return RichHandler(console=console, show_path=False, markup=False)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_TIME_FORMAT))
    return handler
