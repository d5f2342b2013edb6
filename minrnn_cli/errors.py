"""User mistakes and how a command ends on one.

`UserError` is a mistake in what the user asked for (a bad value, a missing file, an unusable checkpoint);
its message names the bad value and what is allowed. `UserAbort` carries a finished one-line message to
the CLI: it is a BaseException, so frameworks that catch every Exception a job raises (Hydra reprints those
with a stack-trace hint) let it pass, as they let KeyboardInterrupt pass. Neither depends on Hydra.
"""

from __future__ import annotations

USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake in what the user asked for; the message names the bad value and what is allowed."""

    exit_code = USER_ERROR_EXIT

    def __str__(self) -> str:
        return f"error: {super().__str__()}"


class UserAbort(BaseException):
    """A job's one-line failure on its way to the CLI."""

    def __init__(self, message: str, exit_code: int = USER_ERROR_EXIT):
        super().__init__(message)
        self.exit_code = exit_code


def one_line(error: BaseException | str) -> str:
    """The message on one line, prefixed with `error:` (UserError adds it itself)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if text.startswith("error:") else f"error: {text}"
