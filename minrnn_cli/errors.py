"""User mistakes and how a command ends on one.

`UserError` is a mistake in what the user asked for (a bad value, a missing file, an unusable checkpoint);
its message names the bad value and what is allowed. `UserAbort` carries a finished one-line message to
the CLI: it is a BaseException, so frameworks that catch every Exception a job raises (Hydra reprints those
with a stack-trace hint) let it pass, as they let KeyboardInterrupt pass. Neither depends on Hydra.
"""

from __future__ import annotations

import errno
from pathlib import Path

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake in what the user asked for; the message names the bad value and what is allowed."""

    exit_code = USER_ERROR_EXIT

    def __str__(self) -> str:
        return f"error: {super().__str__()}"


def require_flag(key: str, value) -> bool:
    """A true/false option as given (`task.eval_full=5` or `=yes` is a mistake, not a truthy value)."""
    if not isinstance(value, bool):
        raise UserError(f"{key}={value!r} is invalid: it must be true or false")
    return value


class UserAbort(BaseException):
    """A job's one-line failure on its way to the CLI."""

    def __init__(self, message: str, exit_code: int = USER_ERROR_EXIT):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(error: BaseException | str) -> str:
    """The message on one line, prefixed with `error:` (UserError adds it itself)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if text.startswith("error:") else f"error: {text}"


# Why a file could not be written, for the errors a full disk or an unwritable folder gives (not a bug's).
WRITE_FAILURES = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "the file grew past the file-size limit (ulimit -f) or the file system's",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def write_failure(error: BaseException) -> OSError | None:
    """The OSError of a full disk or an unwritable folder behind `error` (itself, its cause or its context:
    torch.save reports a failed write as a RuntimeError raised while handling it), else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in WRITE_FAILURES:
            return error
        error = error.__cause__ or error.__context__
    return None


class CannotWrite(UserError):
    """A file the command needs could not be written; in a sweep the next jobs would fail the same way."""

    ends_sweep = True


def cannot_write(path: str | Path, error: OSError, then: str = "", advice: str = "") -> CannotWrite:
    """One line: which file could not be written and why, what became of it (`then`) and what to do."""
    where = f" ({error.filename})" if error.filename and str(error.filename) != str(path) else ""
    advice = advice or ("free some space or write elsewhere (outputs_dir=DIR or MINRNN_OUTPUTS=DIR for every run, "
                        "hydra.run.dir=DIR or hydra.sweep.dir=DIR for this one)")
    return CannotWrite(f"cannot write {path}: {WRITE_FAILURES[error.errno]}{where}{then}; {advice}")
