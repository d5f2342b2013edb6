"""Where runs live, run as a user would (`python -m minrnn_cli` in a subprocess, from folders other than the
repository): one outputs folder (`outputs_dir=` or MINRNN_OUTPUTS) for every command, one layout
(<outputs>/<kind>/<timestamp>, <outputs>/multirun/<timestamp>/<job>), `checkpoint=` as `latest`, a run folder
or a run name, `minrnn report` telling trained runs from evaluations, and generate's seed mixed with the prompt."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cli_faults import subprocess_env
from conftest import TINY_SHAKESPEARE, TINY_TRAINER

TINY = [*TINY_SHAKESPEARE, *TINY_TRAINER, "trainer.max_steps=4", "task.sample_chars=0"]
STAMP = re.compile(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}")


def minrnn(cwd: Path, *args: str, outputs: Path | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    """`minrnn ARGS` in `cwd`; `outputs`: MINRNN_OUTPUTS for it."""
    env = subprocess_env(**({"MINRNN_OUTPUTS": str(outputs)} if outputs else {}))
    done = subprocess.run([sys.executable, "-m", "minrnn_cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    if ok:
        assert done.returncode == 0, f"{args}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done


def one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def only(folder: Path) -> Path:
    (found,) = [path for path in folder.iterdir() if path.is_dir()]
    return found


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A folder with one finished training run (outputs/runs/<stamp>) and a one-job sweep
    (outputs/multirun/<stamp>/0), trained there."""
    home = tmp_path_factory.mktemp("home")
    minrnn(home, "train", *TINY)
    minrnn(home, "train", "-m", *TINY, "trainer.seed=3")
    return home


@pytest.fixture
def elsewhere(tmp_path) -> Path:
    """A working folder that holds no runs."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def test_each_command_writes_its_own_folder_and_no_empty_log(tmp_path):
    outputs = tmp_path / "my outputs"  # a space in the path, set by the variable for every command
    minrnn(tmp_path, "train", *TINY, outputs=outputs)
    minrnn(tmp_path, "eval", "trainer.device=cpu", outputs=outputs)
    minrnn(tmp_path, "generate", "prompt=KING:", "max_new_tokens=8", "trainer.device=cpu", outputs=outputs)
    minrnn(tmp_path, "bench", "models=[mingru]", "seq_len=[8]", "batch_size=2", "d_model=8", "threads=1",
           "device=cpu", "inference=false", "memory=false", "plot=false", "repeats=1", "min_repeats=1",
           "warmup=0", outputs=outputs)
    minrnn(tmp_path, "eval", "-m", "trainer.device=cpu", "trainer.precision=fp32", outputs=outputs)
    assert not (tmp_path / "outputs").exists()
    assert sorted(path.name for path in outputs.iterdir()) == ["bench", "evals", "multirun", "runs", "samples"]
    for kind in ("runs", "evals", "samples", "bench", "multirun"):
        assert STAMP.fullmatch(only(outputs / kind).name), kind
    run, evaluation = only(outputs / "runs"), only(outputs / "evals")
    assert results(run)["command"] == "train" and (run / "checkpoints" / "best.pt").is_file()
    assert results(evaluation)["command"] == "eval"
    assert results(evaluation)["checkpoint"] == str(run.absolute() / "checkpoints" / "best.pt")
    sample = only(outputs / "samples")
    assert (sample / "sample.txt").read_text().startswith("KING:") and not (sample / "results.json").exists()
    bench = only(outputs / "bench")
    assert (bench / "bench.json").is_file() and not list(bench.glob("*.log"))
    assert results(only(outputs / "multirun") / "0")["command"] == "eval"  # a sweep of eval: multirun/<stamp>/0
    logs = list(outputs.rglob("*.log"))
    assert logs and all(log.stat().st_size > 0 for log in logs), [str(log) for log in logs]


def test_eval_and_generate_find_the_newest_run_from_another_folder(home, elsewhere):
    newest = only(only(home / "outputs" / "multirun")) / "checkpoints" / "best.pt"  # the sweep's job: the newest
    minrnn(elsewhere, "eval", "trainer.device=cpu", outputs=home / "outputs")
    assert results(only(home / "outputs" / "evals"))["checkpoint"] == str(newest)
    done = minrnn(elsewhere, "generate", f"outputs_dir={home / 'outputs'}", "prompt=KING:", "max_new_tokens=8",
                  "trainer.device=cpu")
    assert f"loaded {newest}" in done.stdout + done.stderr
    assert (only(home / "outputs" / "samples") / "sample.txt").is_file()
    assert not (elsewhere / "outputs").exists()
    shutil.rmtree(home / "outputs" / "evals")
    shutil.rmtree(home / "outputs" / "samples")


def test_checkpoint_takes_a_run_folder_or_a_run_name(home, elsewhere):
    outputs = home / "outputs"
    run, sweep = only(outputs / "runs"), only(outputs / "multirun")
    given = {str(run): run, run.name: run, f"{sweep.name}/0": sweep / "0"}
    for checkpoint, run_dir in given.items():
        minrnn(elsewhere, "eval", f"checkpoint={checkpoint}", "trainer.device=cpu", outputs=outputs)
        evaluation = sorted((outputs / "evals").iterdir())[-1]
        assert results(evaluation)["checkpoint"] == str(run_dir / "checkpoints" / "best.pt"), checkpoint
    shutil.rmtree(outputs / "evals")


def test_nothing_found_is_one_line_saying_where_it_looked(home, elsewhere):
    line = one_line_error(minrnn(elsewhere, "eval", ok=False))
    assert f"under {elsewhere.resolve() / 'outputs'};" in line
    assert "outputs_dir=" in line and "MINRNN_OUTPUTS=" in line and "checkpoint=PATH" in line
    line = one_line_error(minrnn(elsewhere, "generate", ok=False, outputs=elsewhere / "runs-here"))
    assert f"under {elsewhere.resolve() / 'runs-here'};" in line
    line = one_line_error(minrnn(elsewhere, "eval", "checkpoint=no_such_run", ok=False,
                                 outputs=home / "outputs"))
    assert line.startswith("error: checkpoint=no_such_run is not a .pt file, a run folder or a run name")
    assert f"{home / 'outputs' / 'runs'} and {home / 'outputs' / 'multirun'}" in line and "outputs_dir=" in line
    unfinished = elsewhere / "unfinished"
    (unfinished / "checkpoints").mkdir(parents=True)
    line = one_line_error(minrnn(elsewhere, "eval", "checkpoint=unfinished", ok=False))
    assert f"the run folder {unfinished} has no checkpoints/best.pt" in line
    assert not list(elsewhere.rglob("results.json"))


def test_resume_auto_looks_under_the_outputs_folder(home, elsewhere):
    """An unfinished run (a copy of the finished one without its results) under MINRNN_OUTPUTS is continued
    from a folder that has no outputs of its own."""
    outputs = elsewhere.parent / "resume-outputs"
    copied = outputs / "runs" / "unfinished"
    shutil.copytree(only(home / "outputs" / "runs"), copied)
    (copied / "results.json").unlink()
    done = minrnn(elsewhere, "train", *TINY, "trainer.max_steps=6", "trainer.resume=auto", outputs=outputs)
    assert f"resumed from {copied / 'checkpoints' / 'last.pt'} at step 4" in done.stdout + done.stderr
    resumed = [path for path in (outputs / "runs").iterdir() if path != copied]
    assert len(resumed) == 1 and results(resumed[0])["steps"] == 6
    assert not (elsewhere / "outputs").exists()


def test_report_lists_evaluations_apart_from_trained_runs(home, tmp_path):
    outputs = tmp_path / "outputs"
    shutil.copytree(home / "outputs" / "runs", outputs / "runs")
    minrnn(tmp_path, "eval", "trainer.device=cpu")
    old = outputs / "evals" / "written-before-the-command-field"
    shutil.copytree(only(outputs / "evals"), old)
    (old / "results.json").write_text(json.dumps({k: v for k, v in results(old).items() if k != "command"}))
    report = tmp_path / "report"
    report.mkdir()
    done = minrnn(report, "report", outputs=outputs)  # the default input and --out: the outputs folder
    assert "1 run(s)" in done.stdout and "2 evaluation(s)" in done.stdout
    with (outputs / "report" / "report.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [row["run"] for row in rows] == [str(only(outputs / "runs"))]
    markdown = (outputs / "report" / "report.md").read_text()
    listed = [line.split("|")[1].strip() for line in markdown.split("# Evaluations", 1)[1].split("\n# ", 1)[0]
              .splitlines() if line.startswith("| ")][1:]  # the run column, header left out
    assert len(listed) == 2 and all("/evals/" in run for run in listed) and old.name in " ".join(listed)


def test_generate_mixes_the_prompt_into_the_seed(home, elsewhere):
    """The default seed: two prompts give different text, the same prompt the same text; the seed is shown."""
    def sample(prompt: str) -> tuple[str, str]:
        done = minrnn(elsewhere, "generate", f"prompt={prompt}", "max_new_tokens=40", "trainer.device=cpu",
                      "temperature=1.0", outputs=home / "outputs")
        newest = sorted((home / "outputs" / "samples").iterdir())[-1]
        return (newest / "sample.txt").read_text().removeprefix(prompt), done.stderr

    first, stderr = sample("KING:")
    again, _ = sample("KING:")
    other, _ = sample("QUEEN:")
    assert first == again and first != other
    assert "seed=1337" in stderr and "seed=N" in stderr
    shutil.rmtree(home / "outputs" / "samples")


def test_a_runs_checkpoints_folder_stands_for_the_run(tmp_path):
    """checkpoint=<run>/checkpoints (a natural slip for the run folder) picks the run's best.pt."""
    from minrnn_cli.training.checkpoint import resolve_checkpoint

    best = tmp_path / "run" / "checkpoints" / "best.pt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"")
    assert resolve_checkpoint(str(best.parent), tmp_path / "outputs") == best.absolute()
    assert resolve_checkpoint(str(best.parent.parent), tmp_path / "outputs") == best.absolute()
