"""The console log handler of minrnn and of Hydra (conf/hydra/job_logging/rich.yaml for a job's records,
conf/hydra/hydra_logging/rich.yaml for Hydra's own, such as a sweep's `Launching 2 jobs locally`).

Every line has one format, `HH:MM:SS LEVEL message`. On a terminal, records go through rich on the same
console as the live progress bar, so they print above it; anywhere else (CI logs, pipes, files) they are
plain, unwrapped lines.
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

        # time and level come from the formatter below, as in the plain lines, not from rich's own columns
        handler = RichHandler(console=console, show_time=False, show_level=False, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_TIME_FORMAT))
    return handler
