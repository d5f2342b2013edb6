"""Hydra's own errors (composition, missing configs, flags) as one line, like minrnn's UserError.

Hydra prints a composition error over several lines plus a hint about HYDRA_FULL_ERROR, from inside its
private `run_and_report`. While a command runs, `one_line_hydra_errors()` wraps that function so a
CompactHydraException leaves as a one-line `UserAbort` instead; every other exception (a bug) keeps Hydra's
stack trace, and HYDRA_FULL_ERROR=1 still shows everything.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

from minrnn_cli.errors import UserError
from minrnn_cli.job_failures import USER_ERROR_EXIT, UserAbort, one_line

RUN_FLAGS = ("-m/--multirun", "--cfg", "--info", "--shell-completion")


def describe(error: BaseException) -> str:
    """One line for a Hydra exception; an unknown key also names the keys that are allowed there."""
    cause = error.__cause__
    key = getattr(cause, "full_key", None)
    parent = getattr(cause, "parent_node", None)
    if str(error).startswith("Could not override") and key and parent is not None:
        allowed = ", ".join(name for name in parent if name != "hydra")
        return (f"error: unknown key {key!r}; the keys there are: {allowed} "
                f"(to add a new key, prefix it with '+': +{key}=...)")
    if str(error).startswith("Cannot find primary config"):
        from minrnn_cli.paths import config_dir

        names = ", ".join(sorted(path.stem for path in config_dir().glob("*.yaml")))
        return f"error: {str(error).splitlines()[0].split('. ')[0]}; choose one of {names}"
    lines: list[str] = []
    for raw in str(error).splitlines():
        line = raw.strip().rstrip(".:")
        if not line or line.startswith(("Config search path", "provider=")):
            continue
        if raw.startswith("\t") and lines and lines[-1].startswith("Available options"):
            lines[-1] += (": " if lines[-1].endswith("'") else ", ") + line  # the options, one per line
        else:
            lines.append(line)
    if cause is not None and str(cause):
        lines.append(str(cause).splitlines()[0])
    return one_line("; ".join(lines) or type(error).__name__)


def _compact(function):
    from hydra.errors import CompactHydraException

    try:
        return function()
    except UserError as error:  # minrnn's own: already one line
        raise UserAbort(str(error), getattr(error, "exit_code", USER_ERROR_EXIT)) from None
    except CompactHydraException as error:
        raise UserAbort(describe(error)) from None


@contextlib.contextmanager
def one_line_hydra_errors() -> Iterator[None]:
    import hydra._internal.utils as hydra_utils

    original = hydra_utils.run_and_report
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return
    hydra_utils.run_and_report = lambda function: original(lambda: _compact(function))
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


def check_run_flags(args: argparse.Namespace) -> None:
    """Hydra runs one of: a job, a sweep, --cfg, --info, --shell-completion; naming two is a mistake."""
    chosen = [flag for flag, on in zip(RUN_FLAGS, (args.multirun, args.cfg is not None, args.info is not None,
                                                    args.shell_completion), strict=True) if on]
    if len(chosen) > 1:
        raise UserError(f"{' and '.join(chosen)} cannot be combined; use one of {', '.join(RUN_FLAGS)}")
    if args.resolve and args.cfg is None:
        raise UserError("--resolve only works with --cfg job|hydra|all")
