"""The Hydra task functions behind `minrnn train`, `eval`, `generate`, `prepare`, `config` and `bench`.

Each is a module-level function of the installed package (joblib and submitit launchers pickle them): it
takes the composed config, finds its job folder and hands both to the Hydra-free code that does the work.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax

from minrnn_cli.hydra_app.context import in_multirun, job_dir, sweep_group, task_overrides


def train_job(cfg: DictConfig) -> float | None:
    """Train; an optimising sweeper (hparams_search=...) gets `optimize_metric`'s final value back. A sweep's
    job keeps or continues what its folder already holds: FreshOutputFolder lets a sweep into a folder that
    holds runs only when it is the same sweep started again."""
    from minrnn_cli.training.runs import train_run

    results = train_run(cfg, job_dir(), group=sweep_group(), continued=in_multirun())
    metric = cfg.get("optimize_metric")
    return results.get(metric) if results and metric else None


def eval_job(cfg: DictConfig) -> None:
    from minrnn_cli.training.runs import eval_run

    eval_run(cfg, job_dir())


def generate_job(cfg: DictConfig) -> None:
    from minrnn_cli.training.runs import generate_run

    generate_run(cfg, job_dir())


def prepare_job(cfg: DictConfig) -> None:
    """`minrnn prepare`: the task's corpus tokenised into the cache, and a summary of it."""
    from minrnn_cli.tasks.corpus.job import prepare_job as prepare
    from minrnn_cli.tracking.tables import print_summary

    summary = prepare(OmegaConf.to_container(cfg.task, resolve=True))
    print_summary(Console(), f"corpus of task {cfg.task.name}", summary)


def show_config(cfg: DictConfig) -> None:
    """`minrnn config`: print the composed config as YAML and run nothing."""
    yaml = OmegaConf.to_yaml(cfg, resolve=False)
    Console().print(Syntax(yaml, "yaml", theme="ansi_dark", background_color="default"))


def bench_job(cfg: DictConfig) -> None:
    """Run the benchmark `cfg` describes; a bad setting exits with one line naming it."""
    from minrnn_cli.benchmarking import BenchConfig, run_bench
    from minrnn_cli.errors import UserError

    try:
        settings = OmegaConf.to_container(cfg, resolve=True)
        settings.pop("outputs_dir", None)  # where the bench's folder goes (hydra.run.dir), not a setting it measures
        config = BenchConfig.from_mapping(settings)
        run_bench(config, job_dir(), command="minrnn bench " + " ".join(task_overrides()))
    except (ValueError, UserError) as error:
        print(f"minrnn bench: {str(error).removeprefix('error: ')}", file=sys.stderr)
        raise SystemExit(2) from None
