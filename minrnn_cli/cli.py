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

from minrnn_cli.errors import USER_ERROR_EXIT, UserAbort, UserError
from minrnn_cli.hydra_app.launch import Launch
from minrnn_cli.paths import config_groups


@dataclass(frozen=True)
class Command:
    launch: Launch  # what Hydra runs: the config name and the task function
    summary: str
    example: str

    @property
    def name(self) -> str:
        return self.launch.name


JOBS = "minrnn_cli.hydra_app.jobs"
COMMANDS = (
    Command(Launch("train", "train", f"{JOBS}:train_job"),
            "Train a model on a task (default: minGRU on Tiny Shakespeare, a few minutes on a CPU).",
            "minrnn train model=minlstm experiment=cpu_selective_copying trainer.max_steps=500"),
    Command(Launch("eval", "eval", f"{JOBS}:eval_job"),
            "Evaluate a checkpoint on every split of its task (checkpoint=latest: the newest best.pt).",
            "minrnn eval checkpoint=outputs/runs/<run>/checkpoints/best.pt"),
    Command(Launch("generate", "generate", f"{JOBS}:generate_job"),
            "Sample text from a Shakespeare checkpoint, one token at a time (O(1) state for RNNs).",
            "minrnn generate prompt='ROMEO:' max_new_tokens=300 temperature=0.8"),
    Command(Launch("config", "train", f"{JOBS}:show_config", runs_nothing=True),
            "Print the composed config (add --config-name eval|generate|bench for another command's).",
            "minrnn config experiment=paper_shakespeare model=minlstm"),
    Command(Launch("bench", "bench", f"{JOBS}:bench_job"),
            "Time and measure the memory of every model's training and inference steps.",
            "minrnn bench models=[mingru,gru] seq_len=[64,256]"),
)

app = typer.Typer(
    name="minrnn",
    help="Experiments with the minimal RNNs of 'Were RNNs All We Needed?' (minGRU, minLSTM) and baselines.\n\n"
    "Every command takes Hydra overrides (key=value, +key=value, group=option), -m/--multirun for sweeps "
    "and Hydra's flags (--cfg job, --info, -cd DIR); `minrnn COMMAND -- --help` shows Hydra's help.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def complete_overrides(incomplete: str) -> list[str]:
    """Tab completion: config groups, and the options of a group."""
    groups = config_groups()
    if "=" in incomplete:
        group, _, prefix = incomplete.lstrip("+").partition("=")
        sign = "+" if incomplete.startswith("+") else ""
        return [f"{sign}{group}={option}" for option in groups.get(group, []) if option.startswith(prefix)]
    return [f"{group}=" for group in groups if group.startswith(incomplete)]


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
        raise typer.Exit(USER_ERROR_EXIT) from None


def main() -> None:
    from minrnn_cli.streams import survive_closed_pipes

    survive_closed_pipes()  # a reader that goes away (`| head`) must not cost a run its results
    app(prog_name="minrnn")


if __name__ == "__main__":
    sys.exit(main())
