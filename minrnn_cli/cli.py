"""The `minrnn` command line: a Typer app in front of Hydra.

Every command hands its raw arguments (overrides, `-m`, Hydra's own flags) to Hydra's own entry point
(minrnn_cli.hydra_app), so multirun goes through Hydra's sweeper and launcher plugins exactly as under
`@hydra.main`. A command is one entry in COMMANDS: its config name and its task function, imported only when
it runs, which keeps `minrnn --help` free of torch, hydra, wandb and datasets.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import typer
from typer.core import HAS_RICH, TyperCommand, TyperGroup

from minrnn_cli.errors import USER_ERROR_EXIT, UserAbort, UserError
from minrnn_cli.hydra_app.launch import Launch
from minrnn_cli.paths import config_groups, outputs_dir


@dataclass(frozen=True)
class Command:
    launch: Launch  # what Hydra runs: the config name and the task function
    summary: str
    example: str  # runs as it is (tests/test_help.py runs it); at most 67 characters: one line in an 80-column help
    overrides_example: str  # a few of the command's own overrides, for the overrides argument's help
    groups: tuple[str, ...] = ()  # the config groups its help lists with their options (read from conf/)

    @property
    def name(self) -> str:
        return self.launch.name


JOBS = "minrnn_cli.hydra_app.jobs"
TRAIN_GROUPS = ("model", "task", "optim", "trainer", "logger", "experiment", "hparams_search")
COMMANDS = (
    Command(Launch("train", "train", f"{JOBS}:train_job"),
            "Train a model on a task (default: minGRU on Tiny Shakespeare, a few minutes on a CPU).",
            "minrnn train model=minlstm trainer.max_steps=3000",
            "model=minlstm experiment=cpu_selective_copying trainer.max_steps=500", TRAIN_GROUPS),
    Command(Launch("eval", "eval", f"{JOBS}:eval_job"),
            "Evaluate a checkpoint on every split of its task (checkpoint=latest: the newest best.pt).",
            "minrnn eval checkpoint=latest trainer.device=cpu",
            "checkpoint=path/to/best.pt trainer.device=cuda", ("trainer",)),
    Command(Launch("generate", "generate", f"{JOBS}:generate_job"),
            "Sample text from a Shakespeare checkpoint, one token at a time (O(1) state for RNNs).",
            "minrnn generate prompt='ROMEO:' max_new_tokens=300 temperature=0.8",
            "checkpoint=latest prompt='ROMEO:' top_k=5", ("trainer",)),
    Command(Launch("prepare", "prepare", f"{JOBS}:prepare_job", runs_nothing=True),
            "Tokenise a text task's corpus into the cache now (train does it on first use).",
            "minrnn prepare task=shakespeare",
            "task=enwik8 task.data_files=PATH/enwik8", ("task",)),
    Command(Launch("config", "train", f"{JOBS}:show_config", runs_nothing=True),
            "Print the composed config (add --config-name eval|generate|bench for another command's).",
            "minrnn config experiment=paper_shakespeare model=minlstm",
            "model=minlstm experiment=paper_shakespeare", TRAIN_GROUPS),
    Command(Launch("bench", "bench", f"{JOBS}:bench_job"),
            "Time and measure the memory of every model's training and inference steps.",
            "minrnn bench models=[mingru,gru,gru_loop] seq_len=[64,256]",
            "models=[minlstm,lstm] seq_len=[512] dtype=bfloat16 device=cuda"),
)
# The bench's main keys, shown in its help (all of them: `minrnn config --config-name bench`); its config is
# BenchConfig, which imports torch, so the names are listed here (tests/test_help.py checks them against it).
BENCH_KEYS = ("seq_len", "batch_size", "d_model", "depth", "dtype", "device", "scan_backend", "repeats",
              "budget_s", "inference", "memory", "plot")


def as_help(text: str) -> str:
    """`text` as Typer should print it: where Typer renders help with rich, `[a,b]` is markup and vanishes."""
    if not HAS_RICH:
        return text
    from rich.markup import escape

    return escape(text)


class PlainFlags:
    """Flags (--help, -m, --install-completion) shown without the `<bool>` value Typer 0.29 gives them."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False):
                param.metavar = ""
        return params


class Group(PlainFlags, TyperGroup):
    pass


class CommandWithChoices(PlainFlags, TyperCommand):
    """A command whose help ends with what its overrides may choose: config groups and their options, read from
    conf/ only when the help is shown (so `minrnn --help` reads nothing)."""

    def format_help(self, ctx, formatter) -> None:
        super().format_help(ctx, formatter)
        title, rows = choices(self.name)
        if not rows:
            return
        if not HAS_RICH or self.rich_markup_mode is None:  # Typer's plain help, as in super().format_help
            with formatter.section(title):
                formatter.write_dl(rows)
            return
        from rich.console import Console
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text
        from typer.rich_utils import ALIGN_OPTIONS_PANEL, STYLE_OPTIONS_PANEL_BORDER

        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for name, options in rows:
            table.add_row(Text(name), Text(options))  # Text: no markup, so `[a,b]` stays
        Console().print(Panel(table, title=Text(title), title_align=ALIGN_OPTIONS_PANEL,
                              border_style=STYLE_OPTIONS_PANEL_BORDER))


def choices(command_name: str) -> tuple[str, list[tuple[str, str]]]:
    """The title and rows of a command's choices panel: (group, its options) or, for bench, (key, values)."""
    groups = config_groups()
    if command_name == "bench":
        return "Keys (key=value; lists: key=[a,b])", [
            ("models", "a list of " + ", ".join(groups["model"])),
            ("other keys", ", ".join(BENCH_KEYS) + " (all, with defaults: minrnn config --config-name bench)"),
        ]
    command = next((command for command in COMMANDS if command.name == command_name), None)
    rows = [(group, ", ".join(groups[group])) for group in command.groups if group in groups] if command else []
    return "Config groups (group=option)", rows


app = typer.Typer(
    name="minrnn",
    cls=Group,
    help="Experiments with the minimal RNNs of 'Were RNNs All We Needed?' (minGRU, minLSTM) and baselines.\n\n"
    "Every command takes Hydra overrides (key=value, +key=value, group=option), -m/--multirun for sweeps "
    "and Hydra's flags (--cfg job, --info, -cd DIR); `minrnn COMMAND -- --help` shows Hydra's help.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def complete_overrides(incomplete: str, command_name: str = "train") -> list[str]:
    """Tab completion for a command: the config groups it takes and a group's options (bench: its keys)."""
    if command_name == "bench":
        return [f"{key}=" for key in ("models", *BENCH_KEYS) if key.startswith(incomplete)]
    command = next(command for command in COMMANDS if command.name == command_name)
    groups = {group: options for group, options in config_groups().items() if group in command.groups}
    if "=" in incomplete:
        group, _, prefix = incomplete.lstrip("+").partition("=")
        sign = "+" if incomplete.startswith("+") else ""
        return [f"{sign}{group}={option}" for option in groups.get(group, []) if option.startswith(prefix)]
    return [f"{group}=" for group in groups if group.startswith(incomplete)]


# ---- the commands ----------------------------------------------------------------------------------

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def add_command(command: Command) -> None:
    def complete(incomplete: str) -> list[str]:
        return complete_overrides(incomplete, command.name)

    def run(
        overrides: list[str] | None = typer.Argument(
            None, autocompletion=complete,
            help=as_help("Hydra overrides: key=value, +key=value, ~key, group=option "
                         f"(e.g. {command.overrides_example})."),
        ),
        multirun: bool = typer.Option(
            False, "-m", "--multirun", help="Sweep through Hydra's sweeper and launcher (a=1,2 b=x,y)."
        ),
    ) -> None:
        from minrnn_cli.hydra_app.launch import run_with_hydra

        try:
            run_with_hydra(command.launch, overrides or [], multirun)
        except (UserError, UserAbort) as error:
            typer.echo(str(error), err=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    app.command(
        command.name,
        cls=CommandWithChoices,
        help=as_help(f"{command.summary}\n\nExample: {command.example}"),
        context_settings=PASS_THROUGH,
    )(run)


for _command in COMMANDS:
    add_command(_command)


REPORT_EXAMPLE = "minrnn report outputs --out outputs/report"
REPORT_HELP = ("Collect every results.json under PATHS and group the runs by config but for the seed: one table per "
               "task, models as rows, mean ± std over seeds, the step and seconds each run first reached a target, "
               "the paper's figure beside ours (rich, Markdown, CSV), and each task's validation curves against "
               f"step and seconds as PNG.\n\nExample: {REPORT_EXAMPLE}")


@app.command("report", cls=CommandWithChoices, help=as_help(REPORT_HELP))
def report(
    paths: list[Path] | None = typer.Argument(
        None, help="Run or multirun folders (default: the outputs folder, $MINRNN_OUTPUTS or ./outputs)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Where report.md/.csv and the PNGs go (default: <outputs folder>/report)."),
    target: list[str] | None = typer.Option(
        None, "--target", "-t", metavar="METRIC=VALUE",
        help="A target to report steps and seconds to, e.g. val_loss=1.6 or val_accuracy=0.95 (repeatable; "
             "losses, bpc and bpb are reached at or below, accuracies and scores at or above); replaces the "
             "per-task defaults."),
) -> None:
    from minrnn_cli.errors import cannot_write, write_failure
    from minrnn_cli.reporting.command import write_report
    from minrnn_cli.reporting.groups import parse_target

    out = out or outputs_dir() / "report"
    try:
        targets = tuple(dict.fromkeys(parse_target(text) for text in target or ()))
        write_report(paths or [outputs_dir()], out, targets)
    except UserError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(USER_ERROR_EXIT) from None
    except OSError as error:  # a full disk or an unwritable --out folder
        if write_failure(error) is None:
            raise
        typer.echo(str(cannot_write(error.filename or out, error, then=f"; the report in {out} is incomplete",
                                    advice="free some space or give another folder with --out")), err=True)
        raise typer.Exit(USER_ERROR_EXIT) from None


def main() -> None:
    from minrnn_cli.streams import survive_closed_pipes

    survive_closed_pipes()  # a reader that goes away (`| head`) must not cost a run its results
    app(prog_name="minrnn")


if __name__ == "__main__":
    sys.exit(main())
