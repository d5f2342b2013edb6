"""ListOps: deterministic generator, labels against a separate stack evaluator, LRA's grammar and length
bounds, held-out expressions kept out of training, the padded classifier, and a tiny end-to-end run."""

import json
import random
import statistics
import subprocess
import sys

import pytest
import torch
from conftest import make_task

from minrnn_cli.errors import UserError
from minrnn_cli.tasks.listops import END, OPERATORS, PAD, TOKENS, sample_expression, value_of
from minrnn_cli.training.model_setup import build_task_model


def stack_evaluate(tokens: list[str]) -> int:
    """Evaluates a token list left to right with an explicit stack (no recursion, no trees)."""
    stack: list = []
    for token in tokens:
        if token == END:
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            operator = stack.pop()
            result = {"[MIN": min(args), "[MAX": max(args), "[SM": sum(args) % 10,
                      "[MED": int(statistics.median(args))}[operator]
            stack.append(result)
        else:
            stack.append(token if token in OPERATORS else int(token))
    (value,) = stack
    return value


def decode(row: torch.Tensor) -> list[str]:
    return [TOKENS[i] for i in row.tolist() if i != PAD]


def check_grammar(tokens: list[str], max_depth: int, max_args: int) -> None:
    depth, counts = 0, []
    for token in tokens:
        if token in OPERATORS:
            if counts:
                counts[-1] += 1
            depth += 1
            counts.append(0)
            assert depth < max_depth  # operators only strictly below max_depth, digits may sit at max_depth
        elif token == END:
            assert 2 <= counts.pop() <= max_args
            depth -= 1
        else:
            counts[-1] += 1
    assert depth == 0 and not counts


def test_median_of_an_even_count_is_the_floor_of_the_middle_mean():
    assert value_of(("[MED", [1, 2])) == 1
    assert value_of(("[MED", [9, 3, 8, 4])) == 6
    assert value_of(("[SM", [9, 8, ("[MAX", [1, 7])])) == 4


@pytest.mark.parametrize("lengths", [(5, 40), (60, 200)])
def test_labels_match_a_stack_evaluator_and_the_grammar(lengths):
    task = make_task("listops", min_length=lengths[0], max_length=lengths[1], batch_size=16, eval_batches=1)
    inputs, labels = task.train_batch(torch.Generator().manual_seed(0))
    assert inputs.shape[0] == 16 and labels.max() < 10
    for row, label in zip(inputs, labels, strict=True):
        tokens = decode(row)
        assert lengths[0] < len(tokens) < lengths[1]
        assert tokens[0] in OPERATORS
        check_grammar(tokens, max_depth=10, max_args=10)
        assert stack_evaluate(tokens) == int(label)


def test_generator_is_deterministic_and_keeps_held_out_expressions_out_of_training():
    task = make_task("listops", min_length=3, max_length=8, batch_size=32, eval_batches=2)
    twin = make_task("listops", min_length=3, max_length=8, batch_size=32, eval_batches=2)
    first = task.train_batch(torch.Generator().manual_seed(5))
    again = twin.train_batch(torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    for (x1, y1), (x2, y2) in zip(task.eval_set("val"), twin.eval_set("val"), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    held_out = {tuple(decode(row)) for split in task.splits for inputs, _ in task.eval_set(split) for row in inputs}
    generator = torch.Generator().manual_seed(6)
    for _ in range(5):  # short expressions repeat often, so this would catch a leak
        inputs, _ = task.train_batch(generator)
        assert not {tuple(decode(row)) for row in inputs} & held_out
    rng, twin_rng = random.Random(1), random.Random(1)
    assert [sample_expression(rng, 3, 8, 10, 10) for _ in range(5)] == \
        [sample_expression(twin_rng, 3, 8, 10, 10) for _ in range(5)]


def test_classifier_reads_each_padded_expression_at_its_own_end():
    task = make_task("listops", min_length=5, max_length=30, batch_size=6, eval_batches=1)
    inputs, _ = task.train_batch(torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    model_cfg = {"name": "mingru", "d_model": 16, "n_layers": 2, "conv": True, "mlp": True}
    model = build_task_model(model_cfg, task).double().eval()
    batched, _ = model(inputs)
    assert batched.shape == (6, 10)
    for row in range(len(inputs)):
        length = int((inputs[row] != PAD).sum())
        alone, _ = model(inputs[row : row + 1, :length])
        torch.testing.assert_close(batched[row], alone[0])


def test_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="task.max_length"):
        make_task("listops", min_length=50, max_length=40)
    with pytest.raises(UserError, match="task.pool"):
        make_task("listops", pool="max")


def test_tiny_training_run_and_eval_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = [sys.executable, "-m", "minrnn_cli"]
    train = [*base, "train", "task=listops", "logger=none", "trainer.max_steps=3", "trainer.eval_every=3",
             "model.d_model=16", "model.n_layers=1", "task.batch_size=4", "task.eval_batches=1",
             "task.min_length=5", "task.max_length=40"]
    finished = subprocess.run(train, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr[-2000:]
    (results_file,) = tmp_path.glob("outputs/runs/*/results.json")
    results = json.loads(results_file.read_text())
    assert results["task"] == "listops" and results["steps"] == 3 and 0 <= results["test_accuracy"] <= 1
    checkpoint = results_file.parent / "checkpoints" / "best.pt"
    evaluated = subprocess.run([*base, "eval", f"checkpoint={checkpoint}"], capture_output=True, text=True,
                               timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    (eval_file,) = tmp_path.glob("outputs/evals/*/results.json")
    assert json.loads(eval_file.read_text())["test_accuracy"] == pytest.approx(results["test_accuracy"])
