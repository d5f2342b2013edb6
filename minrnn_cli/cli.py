"""The `minrnn` command line: a Typer app in front of Hydra.

Every command hands its raw arguments (overrides, `-m`, Hydra's own flags) to Hydra's own entry point,
so multirun goes through Hydra's sweeper and launcher plugins exactly as under `@hydra.main`. A command
is one entry in COMMANDS: its config name and its task function, imported only when it runs, which keeps
`minrnn --help` free of torch, wandb and datasets.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer

from minrnn_cli.errors import UserError
from minrnn_cli.hydra_errors import check_run_flags, one_line_hydra_errors
from minrnn_cli.job_failures import USER_ERROR_EXIT, UserAbort
from minrnn_cli.paths import config_dir


@dataclass(frozen=True)
class Command:
    name: str
    config_name: str
    task_function: str  # "module:function"
    summary: str
    example: str
    runs_nothing: bool = False  # outputs go to a temporary folder, deleted afterwards


COMMANDS = (
    Command("train", "train", "minrnn_cli.training.jobs:train_job",
            "Train a model on a task (default: minGRU on Tiny Shakespeare, a few minutes on a CPU).",
            "minrnn train model=minlstm experiment=cpu_selective_copying trainer.max_steps=500"),
    Command("eval", "eval", "minrnn_cli.training.jobs:eval_job",
            "Evaluate a checkpoint on every split of its task (checkpoint=latest: the newest best.pt).",
            "minrnn eval checkpoint=outputs/runs/<run>/checkpoints/best.pt"),
    Command("generate", "generate", "minrnn_cli.training.jobs:generate_job",
            "Sample text from a Shakespeare checkpoint, one token at a time (O(1) state for RNNs).",
            "minrnn generate prompt='ROMEO:' max_new_tokens=300 temperature=0.8"),
    Command("config", "train", "minrnn_cli.training.jobs:show_config",
            "Print the composed config (add --config-name eval|generate|bench for another command's).",
            "minrnn config experiment=paper_shakespeare model=minlstm", runs_nothing=True),
    Command("bench", "bench", "minrnn_cli.benchmarking.command:bench_job",
            "Time and measure the memory of every model's training and inference steps.",
            "minrnn bench models=[mingru,gru] seq_len=[64,256]"),
)

HYDRA_INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
NOT_A_CHOICE_GROUP = "hydra"

app = typer.Typer(
    name="minrnn",
    help="Experiments with the minimal RNNs of 'Were RNNs All We Needed?' (minGRU, minLSTM) and baselines.\n\n"
    "Every command takes Hydra overrides (key=value, +key=value, group=option), -m/--multirun for sweeps "
    "and Hydra's flags (--cfg job, --info, -cd DIR); `minrnn COMMAND -- --help` shows Hydra's help.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


# ---- tab completion: config groups and their options ------------------------------------------------

def config_groups(root: Path | None = None) -> dict[str, list[str]]:
    """{group: [options]} for every config group folder (the hydra/ folder aside)."""
    root = root or config_dir()
    groups = {}
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and path.name != NOT_A_CHOICE_GROUP):
        options = sorted(path.stem for path in folder.glob("*.yaml"))
        if options:
            groups[folder.name] = options
    return groups


def complete_overrides(incomplete: str) -> list[str]:
    groups = config_groups()
    if "=" in incomplete:
        group, _, prefix = incomplete.lstrip("+").partition("=")
        sign = "+" if incomplete.startswith("+") else ""
        return [f"{sign}{group}={option}" for option in groups.get(group, []) if option.startswith(prefix)]
    return [f"{group}=" for group in groups if group.startswith(incomplete)]


# ---- checks before Hydra runs ----------------------------------------------------------------------

def check_group_choices(overrides: list[str], extra_config_dir: str | None) -> None:
    """A one-line error for `model=nope` (Hydra's own message spans many lines)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        raise UserError(str(error).splitlines()[0]) from None
    if any(override.key_or_group.startswith("hydra.searchpath") for override in parsed):
        return  # options may come from folders we do not see here
    groups = config_groups()
    if extra_config_dir and Path(extra_config_dir).is_dir():
        for group, options in config_groups(Path(extra_config_dir)).items():
            groups[group] = sorted({*groups.get(group, []), *options})
    for override in parsed:
        group = override.key_or_group
        if group not in groups or override.is_delete() or override.package:
            continue
        if override.is_sweep_override():
            try:
                values = list(override.sweep_string_iterator())
            except Exception:  # range() and interval() sweeps are not option lists
                continue
        else:
            values = [override.value()]
        for value in values:
            if isinstance(value, str) and value not in groups[group]:
                raise UserError(f"unknown {group} {value!r}; choose one of {', '.join(groups[group])}")


def hydra_argv(tokens: list[str], multirun: bool, command: Command, scratch: Path | None) -> list[str]:
    """The argument list for Hydra's parser: the user's tokens, our fixed overrides, `--multirun`."""
    argv = list(tokens)
    for i, token in enumerate(argv):
        # `--info` takes an optional topic: keep it from swallowing an override that follows it
        if token == "--info" and i + 1 < len(argv) and argv[i + 1] not in HYDRA_INFO_TOPICS:
            argv.append(argv.pop(i))
            break
    argv.insert(0, f"hydra.job.name={command.name}")
    if scratch is not None:
        argv += [f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}", "hydra.output_subdir=null",
                 "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    if multirun:
        argv.append("--multirun")
    return argv


def load_task_function(spec: str) -> Callable:
    module_name, _, function_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


@dataclass(frozen=True)
class TaskFunction:
    """The job Hydra runs: imports the command's function only when it runs (a module-level class, so the
    joblib and submitit launchers can pickle it)."""

    spec: str  # "module:function"

    def __call__(self, cfg):
        from minrnn_cli.job_failures import run_job

        return run_job(load_task_function(self.spec), cfg)


def run_with_hydra(command: Command, tokens: list[str], multirun: bool) -> None:
    import hydra.version
    from hydra._internal.utils import _run_hydra, get_args_parser

    hydra.version.setbase("1.3")
    scratch = Path(tempfile.mkdtemp(prefix="minrnn-config-")) if command.runs_nothing else None
    try:
        parser = get_args_parser()
        argv = hydra_argv(tokens, multirun, command, scratch)
        if command.name == "train":
            from minrnn_cli.training.distributed import torchrun_overrides

            argv += torchrun_overrides(tokens, multirun)  # under torchrun: all ranks share rank 0's run folder
        args = parser.parse_intermixed_args(argv)
        check_run_flags(args)
        check_group_choices(args.overrides, args.config_dir)
        with one_line_hydra_errors():
            _run_hydra(args=args, args_parser=parser, task_function=TaskFunction(command.task_function),
                       config_path=str(config_dir()), config_name=command.config_name)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


# ---- the commands ----------------------------------------------------------------------------------

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def add_command(command: Command) -> None:
    def run(
        overrides: list[str] | None = typer.Argument(
            None, autocompletion=complete_overrides,
            help="Hydra overrides: key=value, +key=value, ~key, group=option (e.g. model=minlstm).",
        ),
        multirun: bool = typer.Option(
            False, "-m", "--multirun", help="Sweep through Hydra's sweeper and launcher (a=1,2 b=x,y)."
        ),
    ) -> None:
        try:
            run_with_hydra(command, overrides or [], multirun)
        except (UserError, UserAbort) as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(getattr(error, "exit_code", USER_ERROR_EXIT)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    app.command(
        command.name,
        help=f"{command.summary}\n\nExample: {command.example}",
        context_settings=PASS_THROUGH,
    )(run)


for _command in COMMANDS:
    add_command(_command)


@app.command("report")
def report(
    paths: list[Path] | None = typer.Argument(None, help="Run or multirun folders (default: outputs)."),
    out: Path = typer.Option(Path("outputs/report"), "--out", "-o", help="Where report.md/.csv and curves go."),
) -> None:
    """Collect every results.json under PATHS into one table beside the paper's figures (rich, Markdown, CSV)
    and save each run's loss/accuracy curves as PNG.

    Example: minrnn report outputs/multirun/<sweep> --out outputs/report
    """
    from minrnn_cli.reporting.command import write_report

    try:
        write_report(paths or [Path("outputs")], out)
    except UserError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


def main() -> None:
    app(prog_name="minrnn")


if __name__ == "__main__":
    sys.exit(main())
