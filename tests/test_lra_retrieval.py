"""LRA Retrieval: the AAN TSV files read as LRA reads them, byte tokens, batches of pairs, the two-tower
classifier (towers independent, padding changes nothing), and a tiny run end to end from a TSV folder."""

from __future__ import annotations

import pytest
import torch
from cli_faults import assert_one_line_error
from conftest import TINY_TRAINER, make_task, run_minrnn, run_ok

from minrnn_cli.errors import UserError
from minrnn_cli.models import build_classifier
from minrnn_cli.tasks.lra_retrieval import SPLIT_FILES, encode_pairs, read_pairs
from minrnn_cli.tracking.records import read_results
from minrnn_cli.training.model_setup import build_task_model


def tsv_line(label: str, first: str, second: str, ids=("a", "b")) -> str:
    return "\t".join([label, *ids, first, second]) + "\n"


def write_split(path, rows: list[tuple[int, str, str]]) -> None:
    path.write_text("".join(tsv_line(f"{label}.0", first, second) for label, first, second in rows))


@pytest.fixture
def tsv_data(tmp_path):
    """A tsv_data folder: 12 training pairs, 5 validation and 3 test pairs of short texts."""
    generator = torch.Generator().manual_seed(0)

    def rows(count):
        out = []
        for index in range(count):
            length = int(torch.randint(1, 30, (1,), generator=generator))
            out.append((index % 2, f"doc {index} " + "x" * length, f"cites {index % 3} é"))
        return out

    for split, count in (("train", 12), ("val", 5), ("test", 3)):
        write_split(tmp_path / SPLIT_FILES[split], rows(count))
    return tmp_path


def test_read_pairs_keeps_bytes_cut_to_max_length_and_labels(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text(tsv_line("1.0", "abcdef", "é!") + tsv_line("0", "b'quoted'", "") + tsv_line("0.0", "x", "y"))
    pairs, labels = read_pairs(path, max_length=4)
    assert pairs == [(b"abcd", "é!".encode()), (b"b'qu", b""), (b"x", b"y")]  # é is two bytes
    assert labels.tolist() == [1, 0, 0]


def test_a_header_line_is_skipped(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("label\tid1\tid2\ttext1\ttext2\n" + tsv_line("1", "a", "b"))
    pairs, labels = read_pairs(path, max_length=10)
    assert pairs == [(b"a", b"b")] and labels.tolist() == [1]


@pytest.mark.parametrize(("line", "message"), [
    ("1.0\ta\tb\tonly four\n", "line 2: 4 tab-separated fields"),
    ("2\ta\tb\tc\td\n", "line 2: label '2' is not 0 or 1"),
    ("yes\ta\tb\tc\td\n", "line 2: label 'yes' is not 0 or 1"),
])
def test_a_malformed_line_is_named(tmp_path, line, message):
    path = tmp_path / "pairs.tsv"
    path.write_text(tsv_line("0", "a", "b") + line)
    with pytest.raises(UserError, match=message):
        read_pairs(path, max_length=10)


def test_encode_pairs_gives_bytes_plus_one_right_padded():
    tokens = encode_pairs([(b"ab", b"\x00"), (b"", b"xyz")])
    assert tokens.shape == (2, 2, 3)
    assert tokens[0].tolist() == [[ord("a") + 1, ord("b") + 1, 0], [1, 0, 0]]
    assert tokens[1].tolist() == [[0, 0, 0], [ord("x") + 1, ord("y") + 1, ord("z") + 1]]


def test_task_batches_are_seeded_and_eval_sets_cover_each_split_in_order(tsv_data):
    task = make_task("lra_retrieval", data_path=str(tsv_data), batch_size=2)
    first = task.train_batch(torch.Generator().manual_seed(3))
    again = task.train_batch(torch.Generator().manual_seed(3))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert first[0].shape[:2] == (2, 2) and task.tokens_per_batch > 0
    val = task.eval_set("val")
    assert [len(labels) for _, labels in val] == [2, 2, 1]
    assert torch.cat([labels for _, labels in val]).tolist() == [0, 1, 0, 1, 0]
    limited = make_task("lra_retrieval", data_path=str(tsv_data), batch_size=2, eval_batches=1)
    assert len(limited.eval_set("test")) == 1


@pytest.mark.parametrize("pool", ["last", "mean"])
@pytest.mark.parametrize("name", ["mingru", "minlstm", "transformer"])
def test_pair_logits_do_not_depend_on_padding_or_on_the_other_pairs(name, pool, tsv_data):
    """A pair batched with longer documents (more right padding) gets the logits it gets alone."""
    task = make_task("lra_retrieval", data_path=str(tsv_data), pool=pool)
    torch.manual_seed(0)
    model = build_task_model({"name": name, "d_model": 8, "n_layers": 2, "conv": True, "mlp": True}, task).eval()
    pair = (b"short", b"tiny doc")
    alone, _ = model(encode_pairs([pair]))
    batched, _ = model(encode_pairs([pair, (b"a much longer first document", b"and a long second one too")]))
    torch.testing.assert_close(batched[:1], alone, rtol=1e-5, atol=1e-6)


def test_the_towers_share_one_encoder_and_compare_its_two_readings():
    torch.manual_seed(0)
    model = build_classifier("mingru", 257, 2, "last", paired=True, d_model=8, n_layers=1).eval()
    idx = encode_pairs([(b"first text", b"second")])
    lengths = (idx != 0).sum(-1)
    encoded, _ = model.backbone(idx[0])  # both documents through the same backbone
    u, v = encoded[0, lengths[0, 0] - 1], encoded[1, lengths[0, 1] - 1]
    expected = model.head(torch.cat([u, v, u * v, u - v]))
    torch.testing.assert_close(model(idx, lengths)[0], expected)
    swapped = model(idx.flip(1), lengths.flip(1))  # [u, v] order matters: a two-tower, not a bag
    assert not torch.allclose(swapped, model(idx, lengths))


def test_tiny_retrieval_run_trains_and_scores_val_and_test(tsv_data, tmp_path):
    args = ["train", "task=lra_retrieval", f"task.data_path={tsv_data}", "task.batch_size=4",
            "model.d_model=8", "model.n_layers=1", *TINY_TRAINER]
    run_ok(tmp_path, *args)
    run_dir = next((tmp_path / "outputs" / "runs").iterdir())
    results = read_results(run_dir)
    assert results["task"] == "lra_retrieval" and results["steps"] == 6
    for key in ("val_accuracy", "test_accuracy", "val_loss", "test_loss"):
        assert key in results
    assert 0 <= results["test_accuracy"] <= 1
    run_ok(tmp_path, "eval", f"checkpoint={run_dir / 'checkpoints' / 'best.pt'}", "trainer.device=cpu")


def test_a_folder_without_the_tsv_files_gives_one_line(tmp_path):
    result = run_minrnn(tmp_path, "train", "task=lra_retrieval", f"task.data_path={tmp_path}", *TINY_TRAINER)
    line = assert_one_line_error(result)
    assert "lacks new_aan_pairs.train.tsv" in line and "AAN document pairs" in line
