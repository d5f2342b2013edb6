"""The error type for user mistakes (bad values, missing files, unusable checkpoints).

It derives from Hydra's CompactHydraException, so when one escapes a job Hydra prints its message as a
single line and exits non-zero, with no traceback; the CLI reports it the same way outside Hydra.
"""

from __future__ import annotations

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """A mistake in what the user asked for; the message names the bad value and what is allowed."""

    def __str__(self) -> str:
        return f"error: {super().__str__()}"
