"""Numerical faults: a non-finite loss or gradient stops the run with one line naming the step, keeping the
last good checkpoint (trainer.on_nonfinite=stop), or skips that update (skip)."""

from __future__ import annotations

import math

import pytest
import torch
from cli_faults import TINY, assert_one_line_error, invoke

from minrnn_cli.tasks.selective_copying import SelectiveCopying
from minrnn_cli.tracking.records import read_metrics, read_results
from minrnn_cli.training.checkpoint import load_checkpoint

BAD_STEP = 3


@pytest.fixture
def nan_loss_at_step_3(monkeypatch):
    """The training loss of the third step (and only that one) becomes NaN; evaluation is untouched."""
    score = SelectiveCopying.score
    calls = {"training": 0}

    def poisoned(self, logits, targets):
        loss, correct, counted = score(self, logits, targets)
        if torch.is_grad_enabled():
            calls["training"] += 1
            if calls["training"] == BAD_STEP:
                loss = loss * float("nan")
        return loss, correct, counted

    monkeypatch.setattr(SelectiveCopying, "score", poisoned)


def test_nonfinite_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(nan_loss_at_step_3, tmp_path):
    run_dir = tmp_path / "run"
    result = invoke(["train", *TINY, f"hydra.run.dir={run_dir}"])  # checkpoints at steps 2 and 4
    line = assert_one_line_error(result)
    checkpoint = run_dir / "checkpoints" / "last.pt"
    assert f"non-finite loss (nan) at step {BAD_STEP}" in line and f"{checkpoint} (step 2)" in line, line
    assert "trainer.on_nonfinite=skip" in line
    payload = load_checkpoint(checkpoint)
    assert payload["step"] == 2
    assert all(torch.isfinite(value).all() for value in payload["model"].values())
    assert not (run_dir / "results.json").exists()
    assert (run_dir / "error.txt").read_text().strip() == line
    assert [row["step"] for row in read_metrics(run_dir) if "train_loss" in row] == [1, 2]


def test_nonfinite_loss_is_skipped_when_configured(nan_loss_at_step_3, tmp_path):
    run_dir = tmp_path / "run"
    result = invoke(["train", *TINY, "trainer.on_nonfinite=skip", f"hydra.run.dir={run_dir}"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert f"step {BAD_STEP}: non-finite loss or gradient; update skipped" in result.stdout
    results = read_results(run_dir)
    assert results["skipped_steps"] == 1 and results["steps"] == 4
    rows = [row for row in read_metrics(run_dir) if "train_loss" in row]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    assert math.isnan(rows[2]["train_loss"]) and rows[2]["skipped_steps"] == 1  # the window held only the bad step
    assert all(math.isfinite(row["train_loss"]) for row in rows if row["step"] != BAD_STEP)
    assert all(torch.isfinite(v).all() for v in load_checkpoint(run_dir / "checkpoints" / "last.pt")["model"].values())


def test_skipped_update_leaves_the_weights_as_they_were(nan_loss_at_step_3, tmp_path):
    args = ["train", *TINY, "trainer.on_nonfinite=skip", "trainer.eval_every=1", "trainer.max_steps=3"]
    assert invoke([*args, f"hydra.run.dir={tmp_path / 'run'}"]).exit_code == 0
    val_loss = {row["step"]: row["val_loss"] for row in read_metrics(tmp_path / "run") if "val_loss" in row}
    assert val_loss[2] == val_loss[3] != val_loss[1]  # step 3 changed nothing; the steps before did


def test_a_real_divergence_stops_the_run(tmp_path):
    """No injection: a learning rate of 1e30 overflows the weights after the first update."""
    result = invoke(["train", *TINY, "optim.lr=1e30", "optim.warmup_steps=0", f"hydra.run.dir={tmp_path / 'run'}"])
    line = assert_one_line_error(result)
    assert "non-finite" in line and "at step 2" in line and "no checkpoint had been written yet" in line
    assert not (tmp_path / "run" / "results.json").exists()
