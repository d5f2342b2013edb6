"""The CPU suite of docs/RESULTS.md ("The suite"), every table in turn, then its report.

    python scripts/run_suite.py                      # every table, in the order below
    python scripts/run_suite.py listops chomsky      # some of them
    python scripts/run_suite.py --dry-run            # print the commands

Each table is one `minrnn train -m` sweep in its own named folder (outputs/multirun/suite_<table>), so the
same command started again after a stop (Ctrl-C, a shutdown, a crash) keeps the finished jobs and continues
each stopped one from its own last.pt: start this script again and it picks up where it stopped. Two jobs
run at a time, one thread each (`pip install -e ".[sweeps]"` for the joblib launcher). After each table,
`minrnn report` writes its tables and curves into the sweep folder's report/. tests/test_suite_presets.py
checks that these are the commands docs/RESULTS.md shows.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys

JOBS = "logger=none hydra/launcher=joblib hydra.launcher.n_jobs=2"


def presets(table: str, models: str) -> str:
    return "experiment=" + ",".join(f"suite_{table}/{model}" for model in models.split())


SIX = "mingru minlstm gru lstm mamba transformer"
FIVE = "mingru minlstm lstm mamba transformer"
CHOMSKY_TASKS = "parity_check,even_pairs,cycle_nav,majority,majority_count,missing_duplicate,bucket_sort"

# table -> the sweep's overrides (its folder is outputs/multirun/suite_<table>)
TABLES: dict[str, str] = {
    "shakespeare": f"{presets('shakespeare', SIX)} trainer.seed=1,2,3",
    "selective_copying": f"{presets('selective_copying', SIX)} trainer.seed=1,2,3",
    "selective_copying_depth": f"{presets('selective_copying', 'mingru minlstm')} model.n_layers=1,2 "
                               "trainer.seed=1,2,3",
    "chomsky": f"{presets('chomsky', FIVE)} task={CHOMSKY_TASKS} trainer.seed=1",
    "listops": f"{presets('listops', FIVE)} trainer.seed=1,2,3",
}


def command(table: str) -> list[str]:
    """`minrnn train -m ...` for the table (run with OMP_NUM_THREADS=1)."""
    return ["minrnn", "train", "-m", *shlex.split(TABLES[table]), *shlex.split(JOBS),
            f"hydra.sweep.dir=outputs/multirun/suite_{table}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="*", metavar="TABLE",
                        help=f"tables to run, in this order (default: all: {', '.join(TABLES)})")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args()
    unknown = [table for table in args.tables if table not in TABLES]
    if unknown:
        parser.error(f"unknown table {unknown[0]!r}; choose from {', '.join(TABLES)}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for table in args.tables or TABLES:
        sweep = f"outputs/multirun/suite_{table}"
        steps = [command(table), ["minrnn", "report", sweep, "--out", f"{sweep}/report"]]
        for step in steps:
            print("OMP_NUM_THREADS=1 " + shlex.join(step), flush=True)
            if not args.dry_run and subprocess.run(step, env=env).returncode != 0:
                sys.exit(f"stopped at table {table}: start the script again to continue where it stopped")


if __name__ == "__main__":
    main()
