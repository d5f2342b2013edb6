"""`minrnn report` over seeds: runs grouped by config but for the seed, mean ± std, steps and seconds to a target
(k/n reached), the paper's Shakespeare figure beside our val loss, byte-identical reruns; and metrics.jsonl's
elapsed_s written by a real run and continued by a resumed one."""

from __future__ import annotations

import csv
import json
import statistics

import pytest
import torch
from conftest import TINY_SHAKESPEARE, TINY_TRAINER, newest_run_dir, only_run_dir, run_minrnn, run_ok

from minrnn_cli.tracking.records import read_metrics

VAL_LOSS = {"mingru": (1.5, 1.6, 1.7), "transformer": (1.8, 1.9, 2.0)}
# the step each seed's validation loss first drops to 1.88 or below (None: never); elapsed_s is step / 10 + seed
REACHES = {"mingru": (200, 300, 300), "transformer": (400, 400, None)}


def write_run(folder, model, seed, val_loss, reach_step, *, layers=3, d_model=64, timed=True, extra="",
              task="shakespeare"):
    """A finished Shakespeare run by hand: .hydra/config.yaml, results.json and metrics.jsonl (evaluations every
    100 steps to 400; the loss is 2.5 before reach_step and 1.85 from it)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(
        f"model:\n  name: {model}\n  n_layers: {layers}\n  d_model: {d_model}\ntask:\n  name: {task}\n"
        f"  seq_len: 128\ntrainer:\n  seed: {seed}\n  max_steps: 400\n  device: cpu\n  eval_every: 100\n"
        f"outputs_dir: {folder.parent}\nlogger:\n  name: none\n{extra}")
    (folder / "results.json").write_text(json.dumps({
        "command": "train", "model": model, "task": task, "params": 1000 * layers, "steps": 400,
        "wall_time_s": 40.0 + seed, "best_step": 400, "val_loss": val_loss, "val_bpc": val_loss / 0.6931}))
    rows = []
    for step in (100, 200, 300, 400):
        row = {"step": step, "val_loss": 1.85 if reach_step and step >= reach_step else 2.5}
        if timed:
            row["elapsed_s"] = step / 10 + seed
        rows.append(row)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """2 models x 3 seeds (the seeds' run folders, devices and eval_every differ: not the result), one
    single-seed LSTM without elapsed_s (an older metrics.jsonl), and a minGRU of another width."""
    monkeypatch.chdir(tmp_path)
    for model, losses in VAL_LOSS.items():
        for seed, (loss, reach) in enumerate(zip(losses, REACHES[model], strict=True)):
            extra = "hydra:\n  run:\n    dir: somewhere\n" if seed == 1 else ""
            write_run(tmp_path / "sweep" / f"{model}-{seed}", model, seed, loss, reach, extra=extra)
    write_run(tmp_path / "sweep" / "lstm-0", "lstm", 0, 2.2, 100, layers=2, timed=False)
    write_run(tmp_path / "wide" / "mingru-0", "mingru", 0, 1.4, 100, d_model=128)
    return tmp_path


def report(folder, *args: str):
    result = run_minrnn(folder, "report", "sweep", "wide", *args)
    assert result.exit_code == 0, result.stdout + result.stderr
    return result


def groups_csv(path) -> dict[tuple, dict]:
    with path.open() as handle:
        return {(row["model"], row["layers"], row["setting"]): row for row in csv.DictReader(handle)}


def test_groups_mean_std_and_steps_and_seconds_to_a_target(runs):
    result = report(runs, "--out", "rep")
    groups = groups_csv(runs / "rep" / "groups.csv")
    assert set(groups) == {("mingru", "3", "model.d_model=64"), ("mingru", "3", "model.d_model=128"),
                           ("transformer", "3", ""), ("lstm", "2", "")}
    mingru = groups["mingru", "3", "model.d_model=64"]
    assert (mingru["n"], mingru["seeds"]) == ("3", "0 1 2")
    assert float(mingru["val_loss_mean"]) == pytest.approx(1.6)
    assert float(mingru["val_loss_std"]) == pytest.approx(statistics.stdev(VAL_LOSS["mingru"]))  # n-1
    assert float(mingru["wall_time_s_mean"]) == 41.0 and float(mingru["params_mean"]) == 3000
    # val_loss<=1.88 (Shakespeare's default): steps 200, 300, 300 at elapsed 20+0, 30+1, 30+2
    assert mingru["val_loss<=1.88 reached"] == "3"
    assert float(mingru["val_loss<=1.88 step"]) == pytest.approx(800 / 3)
    assert float(mingru["val_loss<=1.88 s"]) == pytest.approx((20 + 31 + 32) / 3)
    transformer = groups["transformer", "3", ""]
    assert transformer["val_loss<=1.88 reached"] == "2"  # seed 2 never reached it: the mean is over two
    assert float(transformer["val_loss<=1.88 step"]) == 400
    assert float(transformer["val_loss<=1.88 s"]) == pytest.approx((40 + 41) / 2)
    assert transformer["val_loss<=1.575 reached"] == "0" and transformer["val_loss<=1.575 step"] == ""
    lstm = groups["lstm", "2", ""]
    assert (lstm["n"], lstm["val_loss_std"]) == ("1", "")
    assert lstm["val_loss<=1.88 step"] == "100.0" and lstm["val_loss<=1.88 s"] == ""  # no elapsed_s: no seconds

    markdown = (runs / "rep" / "report.md").read_text()
    assert "| mingru | 3 | model.d_model=64 | 3 | 1.6000 ± 0.1000 |" in markdown
    assert "| lstm | 2 |  | 1 | 2.2000 ± - |" in markdown
    assert "| 267 | 27.7 | 3/3 |" in markdown and "| 400 | 40.5 | 2/3 |" in markdown
    assert "| 1.548 |" in markdown  # the paper's minGRU figure, beside our val loss with the note saying why
    assert "the paper's test_loss (mingru 1.548, transformer 1.547) beside our val_loss" in markdown
    assert "our validation split (1,003,854 / 111,540 characters)" in markdown
    assert "![shakespeare: validation curves](shakespeare.png)" in markdown
    assert (runs / "rep" / "shakespeare.png").read_bytes()[:4] == b"\x89PNG"
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "1 run(s)" in warnings[0] and "sweep/lstm-0" in warnings[0]
    assert "elapsed_s" in warnings[0]


def test_runs_of_several_tasks_get_an_overview_of_one_metric_by_task_and_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for task, losses in (("shakespeare", {"mingru": (1.5, 1.7), "lstm": (1.9,)}), ("listops", {"mingru": (1.2,)})):
        for model, seeds in losses.items():
            for seed, loss in enumerate(seeds):
                write_run(tmp_path / "sweep" / f"{task}-{model}-{seed}", model, seed, loss, 100, task=task)
    run_ok(tmp_path, "report", "sweep", "--out", "rep")
    text = (tmp_path / "rep" / "report.md").read_text()
    overview = text[text.index("# Overview: val_loss by task"):text.index("# Results by task")]
    assert "| task | mingru | lstm |" in overview
    assert "| listops | 1.2000 ± - |  |" in overview  # a model without runs of a task: an empty cell
    assert "| shakespeare | 1.6000 ± 0.1414 | 1.9000 ± - |" in overview
    run_ok(tmp_path, "report", "sweep/listops-mingru-0", "--out", "one")  # one task: its own table is enough
    assert "Overview" not in (tmp_path / "one" / "report.md").read_text()


def test_targets_from_the_command_line_replace_the_defaults(runs):
    report(runs, "--out", "rep", "--target", "val_loss=2.0", "-t", "val_accuracy=0.9")
    groups = groups_csv(runs / "rep" / "groups.csv")
    header = next(iter(groups.values()))
    assert "val_loss<=2 reached" in header and "val_loss<=1.88 reached" not in header
    assert header["val_accuracy>=0.9 reached"] == "0"  # a metric the runs do not log is never reached
    assert groups["transformer", "3", ""]["val_loss<=2 reached"] == "2"


def test_the_same_folders_give_the_same_bytes(runs):
    report(runs, "--out", "first")
    (runs / "sweep" / "mingru-0" / "results.json").touch()  # a newer file time changes nothing
    report(runs, "--out", "second")
    for name in ("report.md", "report.csv", "groups.csv", "shakespeare.png"):
        assert (runs / "first" / name).read_bytes() == (runs / "second" / name).read_bytes(), name


def test_elapsed_s_is_written_and_a_resumed_run_continues_it(tmp_path):
    args = ["train", *TINY_SHAKESPEARE, *TINY_TRAINER, "trainer.max_steps=4", "trainer.eval_every=2",
            "trainer.log_every=1"]
    run_ok(tmp_path, *args)
    first = only_run_dir(tmp_path)
    rows = read_metrics(first)
    elapsed = [row["elapsed_s"] for row in rows]
    assert len(rows) == 6 and elapsed == sorted(elapsed) and elapsed[-1] > elapsed[0] >= 0
    saved = torch.load(first / "checkpoints" / "last.pt", weights_only=True)["elapsed_s"]
    assert round(saved, 3) >= elapsed[-1]  # saved after the last row was logged (rows keep 3 decimals)

    run_ok(tmp_path, *args, "trainer.max_steps=6", f"trainer.resume={first / 'checkpoints' / 'last.pt'}")
    resumed = read_metrics(newest_run_dir(tmp_path))
    assert resumed[:6] == rows  # the earlier rows carried over
    later = [row["elapsed_s"] for row in resumed[6:]]
    assert [row["step"] for row in resumed[6:]] == [5, 6, 6] and later == sorted(later)
    assert later[0] >= round(saved, 3)  # counted on from the checkpoint's seconds, not from 0


def test_runs_are_listed_in_their_folder_numbers_order():
    from minrnn_cli.reporting.collect import natural_key

    names = ["sweep/10", "sweep/2", "sweep/1", "other/3", "sweep/a"]
    assert sorted(names, key=natural_key) == ["other/3", "sweep/1", "sweep/2", "sweep/10", "sweep/a"]
