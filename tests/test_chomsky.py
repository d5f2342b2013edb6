"""Chomsky-hierarchy tasks: deterministic generators, labels against direct computation, padding that
cannot reach a causal model's answer, scaled accuracy, and a tiny end-to-end training run."""

import json
import subprocess
import sys
from collections import Counter

import pytest
import torch
from conftest import make_task, task_config

from minrnn_cli.errors import UserError
from minrnn_cli.models import build_lm
from minrnn_cli.tasks import CHOMSKY_TASKS
from minrnn_cli.tasks.chomsky import IGNORE, PROBLEMS, ChomskyTask, make_example


def reference_answers(name: str, symbols: list[int], query: list[int]) -> list[int]:
    """The answers computed directly from the symbols, independently of the generators."""
    if name == "parity_check":
        return [symbols.count(1) % 2]
    if name == "even_pairs":
        return [int(symbols[0] != symbols[-1])]  # unequal neighbours are even iff the ends agree
    if name == "cycle_nav":
        position = 0
        for move in symbols:
            position = (position + {0: -1, 1: 0, 2: 1}[move]) % 5
        return [position]
    if name == "bucket_sort":
        return sorted(symbols)
    counts = Counter(symbols)
    if name == "majority":
        top = max(counts.values())
        return [max(symbol for symbol, count in counts.items() if count == top)]
    if name == "majority_count":
        return [max(counts.values())]
    if name == "missing_duplicate":
        copied = query[:-1]
        assert copied == symbols[: len(copied)]
        return [symbols[len(copied)]]
    raise AssertionError(name)


@pytest.mark.parametrize("name", CHOMSKY_TASKS)
@pytest.mark.parametrize("length", [1, 2, 5, 17])
def test_answers_match_direct_computation(name, length):
    problem = PROBLEMS[name]
    generator = torch.Generator().manual_seed(length)
    for _ in range(30):
        inputs, answers = make_example(problem, length, generator)
        symbols, query = inputs[:length].tolist(), inputs[length:].tolist()
        assert all(0 <= s < problem.n_symbols for s in symbols)
        assert query[-1] == problem.n_symbols  # the EMPTY query token ends every example
        assert answers.tolist() == reference_answers(name, symbols, query)


@pytest.mark.parametrize("name", CHOMSKY_TASKS)
def test_batches_are_deterministic_and_answers_sit_at_the_end(name):
    task, twin = make_task(name, batch_size=6, eval_batches=2), make_task(name, batch_size=6, eval_batches=2)
    first = task.train_batch(torch.Generator().manual_seed(3))
    again = twin.train_batch(torch.Generator().manual_seed(3))
    other = task.train_batch(torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0]) or not torch.equal(first[1], other[1])
    for (x1, y1), (x2, y2) in zip(task.eval_set("test"), twin.eval_set("test"), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(task.eval_set("val")[0][0], task.eval_set("test")[0][0])

    pad = PROBLEMS[name].n_symbols + 1
    inputs, targets = first
    for row, answers in zip(inputs, targets, strict=True):
        length = int((row != pad).sum())
        assert (row[:length] != pad).all() and (row[length:] == pad).all()  # right padding only
        answered = (answers != IGNORE).nonzero().flatten()
        assert answered.max() == length - 1 and len(answered) == answered.max() - answered.min() + 1


def test_lengths_follow_the_train_and_eval_ranges():
    task = make_task("parity_check", batch_size=64, eval_batches=1)
    inputs, _ = task.train_batch(torch.Generator().manual_seed(0))
    train_lengths = (inputs != 3).sum(1) - 1  # minus the EMPTY token
    assert train_lengths.min() >= 1 and train_lengths.max() <= 40 and len(train_lengths.unique()) > 10
    eval_inputs, _ = task.eval_set("val")[0]
    eval_lengths = (eval_inputs != 3).sum(1) - 1
    assert eval_lengths.min() >= 40 and eval_lengths.max() <= 256


def test_padding_does_not_reach_a_causal_models_answers():
    task = make_task("bucket_sort", min_train_length=2, max_train_length=9, batch_size=5)
    inputs, targets = task.train_batch(torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = build_lm("mingru", task.vocab_size, d_model=16, n_layers=2, conv=True, mlp=False).double().eval()
    batched, _ = model(inputs)
    pad = PROBLEMS["bucket_sort"].n_symbols + 1
    for row in range(len(inputs)):
        length = int((inputs[row] != pad).sum())
        alone, _ = model(inputs[row : row + 1, :length])
        answered = targets[row] != IGNORE
        torch.testing.assert_close(batched[row][answered], alone[0][answered[:length]])


def test_scores_only_the_answer_positions_and_scales_accuracy():
    task = make_task("cycle_nav")
    targets = torch.full((2, 4), IGNORE)
    targets[0, 3], targets[1, 2] = 4, 1
    logits = torch.zeros(2, 4, task.vocab_size)
    logits[0, 3, 4] = 10.0  # right
    logits[1, 2, 0] = 10.0  # wrong
    logits[0, 0, 2] = 10.0  # an unscored position
    _, correct, counted = task.score(logits, targets)
    assert (int(correct), counted) == (1, 2)
    assert task.metrics(1.0, 0.2)["scaled_accuracy"] == pytest.approx(0.0)  # chance: 1 of 5 positions
    assert task.metrics(1.0, 1.0)["scaled_accuracy"] == pytest.approx(1.0)


def test_majority_count_vocabulary_holds_every_count():
    task = make_task("majority_count", max_eval_length=300)
    assert task.vocab_size == 301


def test_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="unknown Chomsky task"):
        ChomskyTask("parity", **{k: v for k, v in task_config("parity_check").items() if k != "name"})
    with pytest.raises(UserError, match="task.max_eval_length"):
        make_task("parity_check", min_eval_length=50, max_eval_length=40)


def test_tiny_training_run_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = [sys.executable, "-m", "minrnn_cli", "train", "task=majority", "logger=none", "trainer.max_steps=3",
               "trainer.eval_every=3", "model.d_model=16", "model.n_layers=2", "model.mlp=false",
               "task.batch_size=8", "task.eval_batches=1", "task.max_eval_length=60"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    (results_file,) = tmp_path.glob("outputs/runs/*/results.json")
    results = json.loads(results_file.read_text())
    assert results["task"] == "majority" and results["steps"] == 3
    assert 0.0 <= results["test_accuracy"] <= 1.0 and "test_scaled_accuracy" in results
