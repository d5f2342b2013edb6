"""`minrnn report`: runs and multirun jobs in one table beside the paper's figures, CSV/Markdown, curves."""

import csv
import json

from typer.testing import CliRunner

from minrnn_cli.cli import app


def fake_run(folder, model, task, layers, results, metrics=()):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(
        f"model:\n  name: {model}\n  n_layers: {layers}\ntask:\n  name: {task}\ntrainer:\n  seed: 7\n")
    (folder / "results.json").write_text(json.dumps({"model": model, "task": task, "steps": 100,
                                                     "wall_time_s": 12.5, **results}))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in metrics))


def test_report_collects_runs_and_sweeps_beside_the_paper(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = [{"step": 50, "train_loss": 2.0}, {"step": 100, "train_loss": 1.0, "val_loss": 1.1,
                                                 "val_accuracy": 0.6}]
    fake_run(tmp_path / "outputs/runs/a", "mingru", "selective_copying", 1, {"test_accuracy": 0.41}, metrics)
    fake_run(tmp_path / "outputs/multirun/s/0", "minlstm", "selective_copying", 3, {"test_accuracy": 0.9})
    fake_run(tmp_path / "outputs/multirun/s/1", "mingru", "shakespeare", 3, {"val_loss": 1.5, "val_bpc": 2.164})
    fake_run(tmp_path / "outputs/multirun/s/2", "mingru", "parity_check", 2,
             {"test_accuracy": 0.75, "test_scaled_accuracy": 0.5})
    fake_run(tmp_path / "outputs/multirun/s/3", "minlstm", "d4rl", 3,
             {"val_loss": 0.03, "val_score": 40.0, "test_return": 5000.0, "test_score": 42.5})

    result = CliRunner().invoke(app, ["report", "outputs/runs", "outputs/multirun", "--out", "rep"])
    assert result.exit_code == 0, result.output
    with (tmp_path / "rep/report.csv").open() as handle:
        rows = {row["run"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"outputs/runs/a", *(f"outputs/multirun/s/{job}" for job in range(4))}
    assert (rows["outputs/runs/a"]["paper"], rows["outputs/runs/a"]["ours"]) == ("~0.37", "0.41")
    assert rows["outputs/multirun/s/0"]["paper"] == "0.960 ± 0.028"  # minLSTM, 3 layers
    assert (rows["outputs/multirun/s/1"]["metric"], rows["outputs/multirun/s/1"]["paper"]) == ("val_loss", "1.548")
    assert rows["outputs/multirun/s/2"]["paper"] == "" and rows["outputs/multirun/s/2"]["test_scaled_accuracy"] == "0.5"
    assert (rows["outputs/multirun/s/3"]["metric"], rows["outputs/multirun/s/3"]["ours"]) == ("test_score", "42.5")
    assert rows["outputs/runs/a"]["seed"] == "7" and rows["outputs/runs/a"]["layers"] == "1"

    markdown = (tmp_path / "rep/report.md").read_text()
    assert "| outputs/runs/a | mingru | selective_copying | 1 |" in markdown  # every run, under the groups
    assert "Mamba (S6)" in markdown and "Mamba paper" in markdown  # the quoted baselines, for context
    assert (tmp_path / "rep/selective_copying.png").read_bytes()[:4] == b"\x89PNG"  # the task's curves


def test_report_without_runs_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["report", "empty"])
    assert result.exit_code == 2
    assert "no results.json under empty" in result.output
    assert CliRunner().invoke(app, ["report", "missing"]).exit_code == 2


def test_damaged_run_files_are_one_line_errors_and_a_torn_metrics_line_is_skipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metrics = [{"step": 50, "train_loss": 2.0}, {"step": 100, "val_loss": 1.1}]
    fake_run(tmp_path / "runs/ok", "mingru", "shakespeare", 3, {"val_loss": 1.1}, metrics)
    with (tmp_path / "runs/ok/metrics.jsonl").open("a") as handle:
        handle.write('{"step": 150, "train_lo')  # a run killed while appending
    assert CliRunner().invoke(app, ["report", "runs", "--out", "rep"]).exit_code == 0

    for damage, needle in ((lambda run: (run / "results.json").write_text('{"model": "min'), "results.json is damaged"),
                           (lambda run: (run / "results.json").write_text("[1, 2]"), "holds a list"),
                           (lambda run: (run / ".hydra/config.yaml").write_text("model: [unclosed\n"),
                            "config.yaml is damaged")):
        run = tmp_path / f"bad{needle[:4]}"
        fake_run(run / "run", "mingru", "shakespeare", 3, {"val_loss": 1.2})
        damage(run / "run")
        result = CliRunner().invoke(app, ["report", str(run), "--out", "rep2"])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert needle in lines[0] and "leave it out of the paths" in lines[0]
        assert result.exception is None or isinstance(result.exception, SystemExit)
