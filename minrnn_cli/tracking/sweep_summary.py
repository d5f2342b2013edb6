"""A Hydra callback: after a multirun, one table (and summary.csv in the sweep folder) comparing the
final results.json of every job. It reads the files, so it works whatever launcher ran the jobs."""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from minrnn_cli.tracking.records import RESULTS_FILE, read_results
from minrnn_cli.tracking.tables import comparison_table, write_csv

SUMMARY_CSV = "summary.csv"


def _job_number(job_dir: Path) -> tuple[int, str]:
    return (int(job_dir.name), "") if job_dir.name.isdigit() else (1 << 30, job_dir.name)


def collect_sweep(sweep_dir: Path) -> list[dict]:
    """One row per job folder holding a results.json: `job` (its overrides) and the results."""
    rows = []
    job_dirs = sorted((path.parent for path in sweep_dir.glob(f"*/{RESULTS_FILE}")), key=_job_number)
    for job_dir in job_dirs:
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = OmegaConf.load(overrides_file) if overrides_file.is_file() else []
        rows.append({"job": " ".join(overrides) or job_dir.name, **read_results(job_dir)})
    return rows


class SweepSummary(Callback):
    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if self.sweep_dir is None or not self.sweep_dir.is_dir():
            return
        rows = collect_sweep(self.sweep_dir)
        if not rows:
            return
        write_csv(self.sweep_dir / SUMMARY_CSV, rows)
        self.console.print(comparison_table(f"Sweep {self.sweep_dir}", rows))
        self.console.print(f"comparison written to {self.sweep_dir / SUMMARY_CSV}")
