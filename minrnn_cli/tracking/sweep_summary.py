"""After a multirun, one table (and summary.csv in the sweep folder) comparing the final results.json of
every job. It reads the files, so it works whatever launcher ran the jobs (the Hydra callback that calls it
is minrnn_cli.hydra_app.callbacks.SweepSummary). A job that failed (its folder holds error.txt) is a row
marked failed with its one-line error, and the sweep then exits non-zero."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console

from minrnn_cli.errors import UserAbort, cannot_write, write_failure
from minrnn_cli.tracking.records import ERROR_FILE, RESULTS_FILE, read_results
from minrnn_cli.tracking.tables import print_comparison, write_csv

SUMMARY_CSV = "summary.csv"


def _job_number(job_dir: Path) -> tuple[int, str]:
    return (int(job_dir.name), "") if job_dir.name.isdigit() else (1 << 30, job_dir.name)


def _overrides(job_dir: Path) -> list[str]:
    overrides_file = job_dir / ".hydra" / "overrides.yaml"
    return list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []


def collect_sweep(sweep_dir: Path) -> list[dict]:
    """One row per job folder holding a results.json: `job` (the folder), `overrides` (those that differ
    between the jobs, i.e. what the sweep varied) and the job's results."""
    finished = {path.parent for name in (RESULTS_FILE, ERROR_FILE) for path in sweep_dir.glob(f"*/{name}")}
    job_dirs = sorted(finished, key=_job_number)
    overrides = [_overrides(job_dir) for job_dir in job_dirs]
    shared = set.intersection(*(set(job) for job in overrides)) if len(overrides) > 1 else set()
    return [
        {"job": job_dir.name, "overrides": " ".join(o for o in job if o not in shared), **_outcome(job_dir)}
        for job_dir, job in zip(job_dirs, overrides, strict=True)
    ]


def _outcome(job_dir: Path) -> dict:
    """`status` ok with the results, or failed with the error's first line."""
    error_file = job_dir / ERROR_FILE
    if error_file.is_file():
        return {"status": "failed", "error": error_file.read_text().splitlines()[0]}
    return {"status": "ok", **read_results(job_dir)}


def summarise_sweep(sweep_dir: Path) -> None:
    """Print the comparison table and write summary.csv; UserAbort (non-zero exit) when a job failed."""
    rows = collect_sweep(sweep_dir)
    if not rows:
        return
    try:
        write_csv(sweep_dir / SUMMARY_CSV, rows)
    except OSError as error:  # raised as a UserAbort: Hydra turns a callback's Exception into a warning
        if write_failure(error) is None:
            raise
        raise UserAbort(str(cannot_write(sweep_dir / SUMMARY_CSV, error, then="; each job's results are in its "
                                         "own folder", advice=f"free some space, then `minrnn report {sweep_dir}` "
                                         "collects them"))) from None
    console = Console()
    print_comparison(console, f"Sweep: {len(rows)} jobs", rows)
    console.print(f"comparison written to {sweep_dir / SUMMARY_CSV}", soft_wrap=True)  # a path stays one line
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        raise UserAbort(f"error: {len(failed)} of {len(rows)} jobs failed (job {failed[0]['job']}: "
                        f"{failed[0]['error'].removeprefix('error: ')}); see {sweep_dir / SUMMARY_CSV}")
