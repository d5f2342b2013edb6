"""One line for every user mistake, wherever it surfaces: Hydra's own errors (composition, missing configs,
flags), minrnn's UserError, and a failing job's error.

Hydra prints a composition error over several lines plus a hint about HYDRA_FULL_ERROR; `compact` (run
inside Hydra's reporting, see internals.reported_errors) turns it into a one-line `UserAbort`, and every other
exception (a bug) keeps Hydra's stack trace. A job's failure ends as `run_job` says below.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import traceback
from pathlib import Path

from minrnn_cli.errors import USER_ERROR_EXIT, UserAbort, UserError, cannot_write, one_line, write_failure
from minrnn_cli.hydra_app.context import in_multirun, job_dir, sweep_rerun
from minrnn_cli.paths import config_groups
from minrnn_cli.tracking.records import ERROR_FILE

log = logging.getLogger("minrnn")

RUN_FLAGS = ("-m/--multirun", "--cfg", "--info", "--shell-completion")
BOOKKEEPING = (".hydra",)  # with `<job name>.log`, all Hydra writes into a run folder before the job starts


def describe(error: BaseException, config_name: str | None = None) -> str:
    """One line for a Hydra exception; an unknown key also names the keys that are allowed there.
    `config_name`: the primary config being composed (bench, eval, ...)."""
    missing_group = re.match(r"Could not override '([^']+)'\.\s+No match in the defaults list", str(error))
    if missing_group and config_name and missing_group[1] in config_groups():
        line = no_group_here(config_name, missing_group[1])
        if line:
            return line
    cause = error.__cause__
    key = getattr(cause, "full_key", None)
    parent = getattr(cause, "parent_node", None)
    if str(error).startswith("Could not override") and key and parent is not None:
        allowed = ", ".join(name for name in parent if name != "hydra")
        return (f"error: unknown key {key!r}; the keys there are: {allowed} "
                f"(to add a new key, prefix it with '+': +{key}=...)")
    if str(error).startswith("Cannot find primary config"):
        from minrnn_cli.hydra_app.launch import primary_configs

        names = ", ".join(primary_configs())
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


CHECKPOINT_CONFIGS = ("eval", "generate")  # their model and task come from the checkpoint


def no_group_here(config_name: str, group: str) -> str | None:
    """One line for `group=...` given to a command whose config has no such group, where Hydra would advise
    `+group=...` (which only adds a section the command never reads); None for train's config, where that
    advice may fit."""
    if config_name == "bench" and group == "model":
        return (f"error: bench takes models=[...], a list (e.g. models=[minlstm] or models=[mingru,gru]), not "
                f"model=...; models: {', '.join(config_groups()['model'])}")
    if config_name in CHECKPOINT_CONFIGS and group in ("model", "task"):
        return (f"error: {group}=... is not taken here: the model and task come from the checkpoint; drop the "
                f"{group} override")
    if config_name in ("bench", *CHECKPOINT_CONFIGS):
        return (f"error: {config_name} has no {group} group, so {group}=... does not apply; `minrnn {config_name} "
                "--help` lists what it takes")
    return None


def compact(function, config_name: str | None = None):
    """Run `function`; a UserError or a compact Hydra error leaves as a one-line UserAbort (`config_name`: the
    primary config, for errors that depend on it)."""
    from hydra.errors import CompactHydraException

    try:
        return function()
    except UserError as error:  # minrnn's own: already one line
        raise UserAbort(str(error), error.exit_code) from None
    except CompactHydraException as error:
        raise UserAbort(describe(error, config_name)) from None
    except Exception as error:  # Hydra's own writes (the run folder, .hydra/) and any other on a full disk
        failure = write_failure(error)
        if failure is None:
            raise
        from minrnn_cli.hydra_app.internals import failed_output_dir

        run_dir = failed_output_dir(error)
        if run_dir is not None and not in_multirun() and holds_only_bookkeeping(Path(run_dir)):
            remove_run_folder(Path(run_dir))  # Hydra's torn .hydra/ files: no run started there
        where = failure.filename or (f"the run folder {run_dir}" if run_dir else "the output folder")
        raise UserAbort(str(cannot_write(where, failure))) from None


def check_run_flags(args: argparse.Namespace) -> None:
    """Hydra runs one of: a job, a sweep, --cfg, --info, --shell-completion; naming two is a mistake."""
    chosen = [flag for flag, on in zip(RUN_FLAGS, (args.multirun, args.cfg is not None, args.info is not None,
                                                    args.shell_completion), strict=True) if on]
    if len(chosen) > 1:
        raise UserError(f"{' and '.join(chosen)} cannot be combined; use one of {', '.join(RUN_FLAGS)}")
    if args.resolve and args.cfg is None:
        raise UserError("--resolve only works with --cfg job|hydra|all")


# ---- a failing job -----------------------------------------------------------------------------------
# A single run ends the command: the line travels to the CLI as a `UserAbort`, and a run folder left holding
# only Hydra's bookkeeping is removed. A sweep job writes its line to `error.txt` in its folder and returns,
# so the other jobs still run; the sweep summary marks it failed and the sweep exits non-zero at the end.


def remove_run_folder(run_dir: Path) -> None:
    """A failed run's folder holding only Hydra's bookkeeping, and the folders its creation left empty
    (outputs/evals/, outputs/), up to the working directory: a mistyped command leaves nothing behind."""
    shutil.rmtree(run_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    for parent in run_dir.resolve().parents:
        if cwd not in parent.parents:
            return
        try:
            parent.rmdir()  # only an empty one; another run's folder keeps it
        except OSError:
            return


def holds_only_bookkeeping(run_dir: Path) -> bool:
    return run_dir.is_dir() and all(entry.name in BOOKKEEPING or entry.suffix == ".log" for entry in run_dir.iterdir())


def run_job(function, cfg):
    """Run a task function; user mistakes (and, in a sweep, any failure) end as described above."""
    try:
        return function(cfg)
    except (SystemExit, KeyboardInterrupt) as stop:  # bench reports its own mistakes and exits; Ctrl-C
        run_dir = job_dir()
        failed = not isinstance(stop, SystemExit) or stop.code not in (0, None)
        if failed and not in_multirun() and run_dir and holds_only_bookkeeping(run_dir):
            remove_run_folder(Path(run_dir))
        raise
    except Exception as error:
        return _fail(error, cfg)


def _describe_job_error(error: Exception) -> str:
    """An OmegaConf error (a `${...}` naming a missing key, say) leads with the key it is about."""
    key = getattr(error, "full_key", None)
    if isinstance(error, UserError) or not key:
        return str(error)
    return f"{key}: {str(error).splitlines()[0]} (a ${{...}} interpolation must name an existing key)"


def _fail(error: Exception, cfg):
    from omegaconf.errors import OmegaConfBaseException

    multirun = in_multirun()
    failure = write_failure(error)
    if failure is not None and not isinstance(error, UserError):  # a full disk or an unwritable folder
        error = cannot_write(failure.filename or f"a file in {job_dir() or 'the output folder'}", failure)
    user_mistake = isinstance(error, (UserError, OmegaConfBaseException))  # OmegaConf: `${..}` to a missing key
    if not user_mistake and not multirun:
        raise error  # a bug: Hydra prints the stack trace
    message = one_line(_describe_job_error(error) if user_mistake else f"{type(error).__name__}: {error}")
    if multirun and hasattr(error, "sweep_advice"):  # an interrupted sweep: never one job's checkpoint for all
        message = error.sweep_advice(sweep_rerun())
    run_dir = job_dir()
    if run_dir is not None and run_dir.is_dir():
        if not multirun and holds_only_bookkeeping(run_dir):
            remove_run_folder(Path(run_dir))
        else:
            details = "" if user_mistake else "".join(traceback.format_exception(error))
            try:
                (run_dir / ERROR_FILE).write_text(message + "\n" + details)
            except OSError as unwritten:  # the disk that failed the job may refuse this too: the line still goes out
                log.warning(f"could not write {run_dir / ERROR_FILE} ({unwritten.strerror})")
    if multirun and not getattr(error, "ends_sweep", False):
        log.error(message)
        return float("nan") if cfg.get("optimize_metric") else None  # a failed trial for optimising sweepers
    raise UserAbort(message, getattr(error, "exit_code", USER_ERROR_EXIT if user_mistake else 1)) from None
