"""What a failing job leaves behind: one line for the user, nothing that looks like a result.

A single run ends the command: the line travels to the CLI as a `UserAbort`, and a run folder left holding
only Hydra's bookkeeping is removed. A sweep job writes its line to `error.txt` in its folder and returns, so
the other jobs still run; the sweep summary marks it failed and the sweep exits non-zero at the end.
"""

from __future__ import annotations

import logging
import shutil
import traceback
from pathlib import Path

from minrnn_cli.errors import UserError

log = logging.getLogger("minrnn")

ERROR_FILE = "error.txt"
USER_ERROR_EXIT = 2
BOOKKEEPING = (".hydra",)  # with `<job name>.log`, all Hydra writes into a run folder before the job starts


class UserAbort(BaseException):
    """A job's one-line failure on its way to the CLI. Hydra catches every Exception a job raises and reprints
    it with a stack-trace hint; a BaseException passes through (like KeyboardInterrupt)."""

    def __init__(self, message: str, exit_code: int = USER_ERROR_EXIT):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(error: BaseException | str) -> str:
    """The message on one line, prefixed with `error:` (UserError adds it itself)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if text.startswith("error:") else f"error: {text}"


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _run_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def holds_only_bookkeeping(run_dir: Path) -> bool:
    return run_dir.is_dir() and all(entry.name in BOOKKEEPING or entry.suffix == ".log" for entry in run_dir.iterdir())


def run_job(function, cfg):
    """Run a task function; user mistakes (and, in a sweep, any failure) end as described above."""
    try:
        return function(cfg)
    except (SystemExit, KeyboardInterrupt) as stop:  # bench reports its own mistakes and exits; Ctrl-C
        run_dir = _run_dir()
        failed = not isinstance(stop, SystemExit) or stop.code not in (0, None)
        if failed and not _in_multirun() and run_dir and holds_only_bookkeeping(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    except Exception as error:
        return _fail(error, cfg)


def _describe(error: Exception) -> str:
    """An OmegaConf error (a `${...}` naming a missing key, say) leads with the key it is about."""
    key = getattr(error, "full_key", None)
    if isinstance(error, UserError) or not key:
        return str(error)
    return f"{key}: {str(error).splitlines()[0]} (a ${{...}} interpolation must name an existing key)"


def _fail(error: Exception, cfg):
    from omegaconf.errors import OmegaConfBaseException

    multirun = _in_multirun()
    user_mistake = isinstance(error, (UserError, OmegaConfBaseException))  # OmegaConf: `${..}` to a missing key
    if not user_mistake and not multirun:
        raise error  # a bug: Hydra prints the stack trace
    message = one_line(_describe(error) if user_mistake else f"{type(error).__name__}: {error}")
    run_dir = _run_dir()
    if run_dir is not None and run_dir.is_dir():
        if not multirun and holds_only_bookkeeping(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            details = "" if user_mistake else "".join(traceback.format_exception(error))
            (run_dir / ERROR_FILE).write_text(message + "\n" + details)
    if multirun and not getattr(error, "ends_sweep", False):
        log.error(message)
        return float("nan") if cfg.get("optimize_metric") else None  # a failed trial for optimising sweepers
    raise UserAbort(message, getattr(error, "exit_code", USER_ERROR_EXIT if user_mistake else 1)) from None
