"""The run's own records in its output folder: metrics.jsonl (one JSON object per logged step, appended
as training goes), results.json (the final summary, written once at the end), error.txt (a failed job's
one-line error), and what marks a folder as already holding a run."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from minrnn_cli.errors import cannot_write, write_failure

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
ERROR_FILE = "error.txt"
CHECKPOINTS_DIR = "checkpoints"
RUN_MARKERS = (".hydra", RESULTS_FILE, METRICS_FILE, CHECKPOINTS_DIR, ERROR_FILE)

# Config keys that do not change what a run computes (None: the whole group): where it writes and logs, how it
# is resumed, on which device, how often it reports, whether it is compiled. `minrnn report` groups runs by the
# rest but for trainer.seed; a resumed run may change these and trainer.max_steps
# (minrnn_cli.training.checkpoint.MAY_CHANGE_ON_RESUME). Here, not there: report runs without torch.
RESULT_NEUTRAL_KEYS = {"hydra": None, "logger": None, "outputs_dir": None,
                       "trainer": ("resume", "device", "eval_every", "log_every", "compile")}


def earlier_run(folder: Path, ignore: tuple[str, ...] = ()) -> list[str]:
    """The names in `folder` that show a run was already written there (`ignore`: markers not to count)."""
    return [name for name in RUN_MARKERS if name not in ignore and (folder / name).exists()]


class MetricsLog:
    """Appends `{"step": N, "elapsed_s": S, ...metrics}` lines to metrics.jsonl and forwards them to W&B when a
    run is open. `elapsed` gives S: the wall-clock seconds since the run's first training step (start-up left
    out, periodic evaluations counted, as a user waits them; a resumed run continues its checkpoint's count).
    Files written before `elapsed_s` existed lack it: readers must take rows without it."""

    def __init__(self, run_dir: Path, elapsed: Callable[[], float], wandb_run=None):
        self.path = run_dir / METRICS_FILE
        self.elapsed = elapsed
        self.wandb_run = wandb_run

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, "elapsed_s": round(self.elapsed(), 3), **metrics}
        try:
            with self.path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
        except OSError as error:  # a torn last line is skipped by read_metrics
            raise _cannot_write(self.path, error) from None
        if self.wandb_run is not None:
            self.wandb_run.log({key: value for key, value in row.items() if key != "step"}, step=step)


def read_metrics(run_dir: Path) -> list[dict]:
    """Every complete row of metrics.jsonl: a run killed while appending leaves a torn last line, which is
    skipped (as is any line that is not a JSON object with a step)."""
    rows = []
    for line in (run_dir / METRICS_FILE).read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append(row)
    return rows


def copy_metrics(source_dir: Path, run_dir: Path, up_to_step: int) -> None:
    """Start a resumed run's metrics.jsonl with the earlier run's lines up to the step it resumes from, so the
    file holds every step once (the earlier run may have logged past its last checkpoint)."""
    if not (source_dir / METRICS_FILE).is_file():
        return
    lines = [json.dumps(row) + "\n" for row in read_metrics(source_dir) if row["step"] <= up_to_step]
    try:
        (run_dir / METRICS_FILE).write_text("".join(lines))
    except OSError as error:
        raise _cannot_write(run_dir / METRICS_FILE, error) from None


def write_whole(path: Path, write: Callable[[Path], None]) -> None:
    """`write(target)` into a temporary name beside `path`, then renamed: the file is whole or not there, and
    a failed write (a full disk) leaves no partial file; the OSError goes to the caller."""
    partial = path.with_name(path.name + ".partial")
    try:
        write(partial)
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise


def write_text_whole(path: Path, text: str) -> None:
    write_whole(path, lambda target: target.write_text(text))


def write_results(run_dir: Path, results: dict) -> Path:
    """results.json, whole or not at all."""
    path = run_dir / RESULTS_FILE
    try:
        write_text_whole(path, json.dumps(results, indent=2) + "\n")
    except OSError as error:
        raise _cannot_write(path, error) from None
    return path


def _cannot_write(path: Path, error: OSError) -> Exception:
    """A record that could not be written (full disk, unwritable folder): one line, with how to go on from the
    run's last checkpoint when it has one; any other OSError is returned as it is (a bug)."""
    if write_failure(error) is None:
        return error
    last = path.parent / CHECKPOINTS_DIR / "last.pt"
    if not last.is_file():
        return cannot_write(path, error)
    return cannot_write(path, error, then="; the run's checkpoints are kept",
                        advice=f"free some space, then continue with the same command plus trainer.resume={last}")


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / RESULTS_FILE).read_text())
