"""The two core tasks: Tiny Shakespeare (data, split, blocks, its prepared corpus) and Selective
Copying (sequence layout, targets, fixed evaluation sets, scoring only the answers)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_task

from minrnn_cli.errors import UserError
from minrnn_cli.paths import shakespeare_path
from minrnn_cli.tasks import build_task
from minrnn_cli.tasks.selective_copying import QUERY_TOKEN, make_batch


@pytest.fixture(scope="module")
def shakespeare():
    return make_task("shakespeare", seq_len=32, batch_size=8, eval_batches=3)


def decode(ids, task) -> str:
    return task.codec.decode(np.asarray(ids).tolist())


# ---- Tiny Shakespeare (task=text's preset; tests/test_text_task.py has the corpus machinery) ------------------

def test_shakespeare_vocabulary_and_split_are_nanogpts(shakespeare):
    text = shakespeare_path().read_text(encoding="utf-8")
    assert shakespeare.vocab_size == 65 and shakespeare.codec.chars == sorted(set(text))
    assert (len(shakespeare.data["train"]), len(shakespeare.data["val"])) == (1_003_854, 111_540)
    joined = decode(shakespeare.data["train"], shakespeare)
    assert joined == text[: len(joined)]  # the first 90%, newlines kept
    assert decode(shakespeare.data["val"], shakespeare) == text[len(joined):]


def test_shakespeare_is_prepared_once_into_the_corpus_cache(shakespeare):
    """A local text file is read directly (tasks/corpus/direct.py), its ids kept in the corpus cache."""
    cache = Path(os.environ["MINRNN_CACHE_DIR"]) / "corpora"
    assert {path.name for path in cache.rglob("*.bin")} >= {"train.bin", "val.bin"}


def test_shakespeare_batches_are_contiguous_blocks_shifted_by_one(shakespeare):
    inputs, targets = shakespeare.train_batch(torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (8, 32) and inputs.dtype == torch.long
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    train_text = decode(shakespeare.data["train"], shakespeare)
    for row_in, row_out in zip(inputs, targets, strict=True):
        block = decode(row_in, shakespeare) + shakespeare.codec.chars[row_out[-1]]
        assert block in train_text


def test_shakespeare_eval_set_is_fixed_and_from_the_validation_split(shakespeare):
    first = shakespeare.eval_set("val")
    again = make_task("shakespeare", seq_len=32, batch_size=8, eval_batches=3).eval_set("val")
    assert len(first) == 3
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    val_text = decode(shakespeare.data["val"], shakespeare)
    assert decode(first[0][0][0], shakespeare) in val_text


def test_shakespeare_metrics_are_nats_and_bits_per_char(shakespeare):
    metrics = shakespeare.split_metrics("val", 1.5)
    assert metrics["loss"] == 1.5 and metrics["bpc"] == pytest.approx(1.5 / math.log(2))
    assert metrics["bpb"] == pytest.approx(metrics["bpc"])  # Tiny Shakespeare is ASCII: a character is a byte
    uniform = torch.zeros(2, 4, 65)
    loss, _, counted = shakespeare.score(uniform, torch.zeros(2, 4, dtype=torch.long))
    assert loss.item() == pytest.approx(math.log(65)) and counted == 8


def test_own_text_file_and_a_changed_file_is_read_again(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("abcab\n" * 50)
    assert make_task("shakespeare", seq_len=8, batch_size=2, data_files=str(path)).codec.chars == ["\n", "a", "b", "c"]
    path.write_text("xyzzy!\n" * 60)  # a stale cache would return the old text
    assert make_task("shakespeare", seq_len=8, batch_size=2, data_files=str(path)).codec.chars == \
        ["\n", "!", "x", "y", "z"]


@pytest.mark.parametrize(("setup", "needle"), [
    ("missing", "missing.txt"),
    ("binary", "not UTF-8"),
    ("short", "task.seq_len=32"),
])
def test_unusable_text_files_are_one_line_user_errors(tmp_path, setup, needle):
    path = tmp_path / ("missing.txt" if setup == "missing" else "data.txt")
    if setup == "binary":
        path.write_bytes(b"\xff\xfe\xfa" * 100)
    elif setup == "short":
        path.write_text("tiny text")
    with pytest.raises(UserError, match=needle) as raised:
        make_task("shakespeare", seq_len=32, batch_size=2, data_files=str(path))
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("options", [{"seq_len": 0}, {"batch_size": 0}, {"eval_batches": 0}, {"seq_len": "8"}])
def test_shakespeare_settings_are_checked(options):
    with pytest.raises(UserError, match=next(iter(options))):
        make_task("shakespeare", **options)


# ---- Selective Copying ----------------------------------------------------------------------------------

def test_selective_copying_sequences_follow_the_official_layout():
    vocab, length, memorize = 16, 64, 16
    inputs, targets = make_batch(32, length, memorize, vocab, torch.Generator().manual_seed(3))
    assert inputs.shape == (32, length + memorize) and targets.shape == (32, memorize)
    noise = vocab - 1
    body, queries = inputs[:, :length], inputs[:, length:]
    assert (queries == QUERY_TOKEN).all()
    is_data = body != noise
    assert (is_data.sum(dim=1) == memorize).all()  # exactly n_memorize data tokens, noise elsewhere
    assert ((targets >= 1) & (targets <= vocab - 2)).all()
    for row, target in zip(body, targets, strict=True):
        assert torch.equal(row[row != noise], target)  # the answers are the data tokens in order
    assert len({tuple(row.nonzero().flatten().tolist()) for row in is_data}) > 1  # positions vary


def test_selective_copying_eval_sets_are_fixed_and_differ_between_splits():
    task = make_task("selective_copying", seq_len=40, n_memorize=4, batch_size=4, eval_batches=2)
    again = make_task("selective_copying", seq_len=40, n_memorize=4, batch_size=4, eval_batches=2)
    val, test = task.eval_set("val"), task.eval_set("test")
    assert all(torch.equal(a[0], b[0]) for a, b in zip(val, again.eval_set("val"), strict=True))
    assert not torch.equal(val[0][0], test[0][0])
    generator = torch.Generator().manual_seed(0)
    assert not torch.equal(task.train_batch(generator)[0], task.train_batch(generator)[0])
    assert task.tokens_per_batch == 4 * (40 + 4)


def test_selective_copying_scores_only_the_answer_positions():
    task = make_task("selective_copying", seq_len=20, n_memorize=4, vocab_size=8, batch_size=3)
    inputs, targets = task.train_batch(torch.Generator().manual_seed(1))
    logits = torch.randn(3, inputs.shape[1], 8)  # noise everywhere
    logits[:, -4:] = torch.nn.functional.one_hot(targets, 8).float() * 50  # right answers at the queries
    loss, correct, counted = task.score(logits, targets)
    assert loss.item() < 1e-6 and (int(correct), counted) == (12, 12)
    logits[0, -1] = torch.nn.functional.one_hot((targets[0, -1] % 6) + 1, 8).float() * 50  # one wrong answer
    if (targets[0, -1] % 6) + 1 != targets[0, -1]:
        assert int(task.score(logits, targets)[1]) == 11
    assert task.metrics(0.5, 0.75) == {"loss": 0.5, "accuracy": 0.75}


@pytest.mark.parametrize(("options", "needle"), [
    ({"seq_len": 0}, "task.seq_len"),
    ({"seq_len": 8, "n_memorize": 9}, "task.n_memorize"),
    ({"vocab_size": 2}, "task.vocab_size"),
    ({"batch_size": 0}, "task.batch_size"),
])
def test_selective_copying_settings_are_checked(options, needle):
    with pytest.raises(UserError, match=needle):
        make_task("selective_copying", **options)


def test_build_task_names_the_tasks_it_knows():
    assert make_task("selective_copying", seq_len=16, n_memorize=2).name == "selective_copying"
    with pytest.raises(UserError, match="shakespeare") as raised:
        build_task({"name": "nope"})
    assert "selective_copying" in str(raised.value)
