"""The only use of Hydra's private API, kept small: run a command the way `@hydra.main` does, from an
argument list the CLI builds, and shape the errors Hydra reports.

Why private: the Compose API cannot multirun, and `@hydra.main` reads `sys.argv` itself. `_run_hydra` is what
`@hydra.main` calls (run, multirun, --cfg, --info), so sweepers and launchers behave exactly as under it.
`run_and_report` is where Hydra prints a failing command's error over several lines; wrapping it lets a
compact error leave as one line; `Hydra.format_config_groups` is where `--help` lists the config groups. All
have had these signatures since Hydra 1.2; SUPPORTED pins the range
pyproject.toml allows, and tests/test_hydra_app.py checks the signatures against the installed Hydra.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
from collections.abc import Callable, Iterator

from minrnn_cli.paths import is_user_group

SUPPORTED = ((1, 3), (1, 4))  # hydra-core >=1.3 (1.3.2 for pkg://), <1.4: as pyproject.toml pins it
RUN_HYDRA_PARAMETERS = ("args", "args_parser", "task_function", "config_path", "config_name")


def check_version() -> None:
    """RuntimeError unless the installed Hydra is one whose private API this module was written against."""
    import hydra

    version = tuple(int(part) for part in hydra.__version__.split(".")[:2])
    if not SUPPORTED[0] <= version < SUPPORTED[1]:
        raise RuntimeError(f"minrnn needs hydra-core >=1.3,<1.4 (it calls Hydra's _run_hydra); found "
                           f"{hydra.__version__}")


def parse_args(argv: list[str]) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """Hydra's own argument parser over `argv`. Intermixed: flags may come after overrides (Hydra 1.3's
    plain `parse_args` rejects that)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    return parser, parser.parse_intermixed_args(argv)


def run_hydra(parser: argparse.ArgumentParser, args: argparse.Namespace, task_function: Callable,
              config_dir: str, config_name: str) -> None:
    """What `@hydra.main(config_path, config_name)` does with parsed arguments; its `--help` lists only the
    config groups a user chooses from (no `experiment/base`)."""
    import hydra.version
    from hydra._internal.utils import _run_hydra

    check_version()
    hydra.version.setbase("1.3")
    with help_lists_only(lambda group: group.startswith("hydra/") or is_user_group(group)):
        _run_hydra(args=args, args_parser=parser, task_function=task_function, config_path=config_dir,
                   config_name=config_name)


@contextlib.contextmanager
def help_lists_only(shown: Callable[[str], bool]) -> Iterator[None]:
    """While active, Hydra's `--help` and `--hydra-help` list only the config groups for which `shown` holds
    (Hydra's `format_config_groups(predicate)` builds both lists)."""
    from hydra._internal.hydra import Hydra

    original = Hydra.format_config_groups
    Hydra.format_config_groups = lambda self, predicate, *args, **kwargs: original(
        self, lambda group: predicate(group) and shown(group), *args, **kwargs)
    try:
        yield
    finally:
        Hydra.format_config_groups = original


@contextlib.contextmanager
def reported_errors(shape: Callable[[Callable], object]) -> Iterator[None]:
    """While active, every function Hydra runs and reports on (`run_and_report(function)`) is run as
    `shape(function)`, which may turn its exceptions into one-line ones. HYDRA_FULL_ERROR=1 leaves Hydra's
    own reporting untouched."""
    import hydra._internal.utils as hydra_utils

    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        yield
        return
    original = hydra_utils.run_and_report
    hydra_utils.run_and_report = lambda function: original(lambda: shape(function))
    try:
        yield
    finally:
        hydra_utils.run_and_report = original


def failed_output_dir(error: BaseException) -> str | None:
    """The job folder Hydra was setting up when `error` was raised in its `run_job` (creating the folder,
    writing `.hydra/`), read from that frame's `output_dir`; None when the error came from elsewhere."""
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        if frame.f_code.co_name == "run_job" and frame.f_globals.get("__name__") == "hydra.core.utils":
            return frame.f_locals.get("output_dir")
        traceback = traceback.tb_next
    return None


def signatures_match() -> bool:
    """Whether the installed Hydra's private functions take what this module passes them."""
    import hydra._internal.utils as hydra_utils
    from hydra._internal.hydra import Hydra

    run_parameters = inspect.signature(hydra_utils._run_hydra).parameters
    report_parameters = list(inspect.signature(hydra_utils.run_and_report).parameters)
    groups_parameters = list(inspect.signature(Hydra.format_config_groups).parameters)
    return (all(name in run_parameters for name in RUN_HYDRA_PARAMETERS) and report_parameters == ["func"]
            and groups_parameters[:2] == ["self", "predicate"])
