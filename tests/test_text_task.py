"""task=text: every source kind and tokenizer, splits carved at the text level, the memmap cache (hits,
invalidation, interruptions), the metrics, full-split evaluation and the Shakespeare preset (all offline, on
small generated data, in a cache folder of each test's own)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, TINY_TRAINER, make_task, run_minrnn, task_config

from minrnn_cli.errors import UserError
from minrnn_cli.paths import shakespeare_path
from minrnn_cli.tasks import build_task
from minrnn_cli.tasks.corpus import direct
from minrnn_cli.tasks.corpus import prepare as prepare_module
from minrnn_cli.tasks.corpus.tokenizers import BPECodec, ByteCodec, CharCodec, codec_from_vocabulary, train_bpe
from minrnn_cli.tasks.text import full_split_loss

ROWS = [f"line {i}: the quick brown fox, é{'!' * (i % 3)}" for i in range(60)]
TEXT = "".join(row + "\n" for row in ROWS)  # what the rows give with the separator "\n"
SMALL = {"seq_len": 8, "batch_size": 2, "eval_batches": 2}


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MINRNN_CACHE_DIR", str(folder))
    return folder / "corpora"


def text_task(preset: str = "text", **settings):
    return make_task(preset, **{**SMALL, **settings})


def split_text(task, split: str) -> str:
    return task.codec.decode(np.asarray(task.data[split]).tolist())


def entries(cache: Path) -> list[Path]:
    return sorted(cache.iterdir()) if cache.is_dir() else []


# ---- sources ------------------------------------------------------------------------------------------------

def write_source(kind: str, folder: Path) -> dict:
    """ROWS as a source of `kind`: the task settings that read it."""
    import datasets

    rows = datasets.Dataset.from_dict({"text": ROWS, "n": list(range(len(ROWS)))})
    if kind == "txt":
        (folder / "a.txt").write_text("".join(row + "\n" for row in ROWS[:30]))
        (folder / "b.txt").write_text("".join(row + "\n" for row in ROWS[30:]))
        return {"data_files": str(folder / "*.txt")}  # a glob: both files, in order
    if kind == "jsonl":
        (folder / "rows.jsonl").write_text("".join(json.dumps({"text": row}) + "\n" for row in ROWS))
        return {"data_files": str(folder / "rows.jsonl")}
    if kind == "csv":
        rows.to_csv(str(folder / "rows.csv"))
        return {"data_files": [str(folder / "rows.csv")]}
    if kind == "parquet":
        rows.to_parquet(str(folder / "rows.parquet"))
        return {"data_files": str(folder / "rows.parquet")}
    if kind == "arrow":
        import pyarrow as pa

        with pa.OSFile(str(folder / "rows.arrow"), "wb") as sink, pa.ipc.new_stream(sink, rows.data.schema) as out:
            out.write_table(rows.data.table)
        return {"data_files": str(folder / "rows.arrow")}
    if kind == "save_to_disk":
        datasets.DatasetDict({"train": rows}).save_to_disk(str(folder / "saved"))
        return {"dataset": str(folder / "saved")}
    # a dataset repository as the Hub client sees one (a folder of data files, loaded by name through
    # load_dataset, offline)
    (folder / "hub" / "data").mkdir(parents=True)
    rows.to_parquet(str(folder / "hub" / "data" / "train-00000-of-00001.parquet"))
    return {"dataset": str(folder / "hub")}


@pytest.mark.parametrize("kind", ["txt", "jsonl", "csv", "parquet", "arrow", "save_to_disk", "hub"])
def test_every_source_kind_gives_the_same_text(kind, tmp_path):
    task = text_task(**write_source(kind, tmp_path))
    assert split_text(task, "train") + split_text(task, "val") == TEXT
    assert task.splits == ("val",) and task.codec.chars == sorted(set(TEXT[:len(split_text(task, "train"))]))


def test_text_files_keep_their_bytes_exactly(tmp_path, caplog):
    text = "no final newline\nunix line\n\n\ttabs  and spaces \u2028 separator\nlast"
    (tmp_path / "t.txt").write_text(text, newline="")
    task = text_task(data_files=str(tmp_path / "t.txt"), tokenizer="byte", seq_len=2, batch_size=1)
    assert (split_text(task, "train") + split_text(task, "val")).encode() == text.encode()
    assert not caplog.records
    # the text builder reads \r\n as \n: one warning says so
    (tmp_path / "t.txt").write_text(text.replace("unix line\n", "windows line\r\n"), newline="")
    task = text_task(data_files=str(tmp_path / "t.txt"), tokenizer="byte", seq_len=2, batch_size=1)
    assert split_text(task, "train") + split_text(task, "val") == text.replace("unix", "windows")
    assert sum("carriage returns" in record.message for record in caplog.records) == 1


def test_the_dataset_own_splits(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ROWS[:40]}),
                          "validation": datasets.Dataset.from_dict({"text": ROWS[40:50]}),
                          "test": datasets.Dataset.from_dict({"text": ROWS[50:]})}).save_to_disk(str(tmp_path / "d"))
    task = text_task(dataset=str(tmp_path / "d"), split_names={"train": "train", "val": "validation", "test": "test"},
                     val_fraction=None, test_fraction=None)
    assert task.splits == ("val", "test")
    assert split_text(task, "val") == "".join(row + "\n" for row in ROWS[40:50])
    assert split_text(task, "test") == "".join(row + "\n" for row in ROWS[50:])


# ---- splits carved at the text level -------------------------------------------------------------------------

def test_byte_splits_are_exact_byte_counts_and_cut_inside_rows_and_characters(tmp_path):
    text = "".join(f"{i:04d} héllo wörld ✓\n" for i in range(80))  # multi-byte characters everywhere
    (tmp_path / "t.txt").write_text(text)
    task = text_task(data_files=str(tmp_path / "t.txt"), tokenizer="byte", val_fraction=0.05, test_fraction=0.05)
    total = len(text.encode())
    counts = {split: len(task.data[split]) for split in ("train", "val", "test")}
    assert counts == {"train": int(total * 9 / 10), "val": total - int(total * 9 / 10) - total // 20,
                      "test": total // 20}
    joined = b"".join(np.asarray(task.data[split], dtype=np.uint8).tobytes() for split in ("train", "val", "test"))
    assert joined == text.encode()
    meta = task.corpus.meta["splits"]
    assert all(meta[split]["tokens"] == meta[split]["bytes"] == counts[split] for split in counts)


def test_char_splits_equal_the_token_level_cut(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    task = text_task(data_files=str(tmp_path / "t.txt"), val_fraction=0.1, test_fraction=0.2)
    cut, test_start = int(len(TEXT) * 0.7), len(TEXT) - int(len(TEXT) * 0.2)
    assert split_text(task, "train") == TEXT[:cut]
    assert split_text(task, "val") == TEXT[cut:test_start] and split_text(task, "test") == TEXT[test_start:]
    assert task.corpus.meta["splits"]["val"]["bytes"] == len(TEXT[cut:test_start].encode())


def test_characters_missing_from_training_get_one_unk_id_and_a_warning(tmp_path, caplog):
    (tmp_path / "t.txt").write_text("ab" * 200 + "z" * 10)  # the last 10%: 41 characters, 10 of them z
    task = text_task(data_files=str(tmp_path / "t.txt"))
    assert task.codec.chars == ["a", "b"] and task.vocab_size == 3
    assert "z" not in split_text(task, "val") and "<unk>" in split_text(task, "val")
    assert sum("not in the training split" in record.message for record in caplog.records) == 1


# ---- tokenizers ---------------------------------------------------------------------------------------------

def test_codecs_round_trip_and_rebuild_from_a_checkpoint_vocabulary(tmp_path):
    text = "Grüße, world — 你好!\n"
    bpe = BPECodec(train_bpe([ROWS, [text]], vocab_size=300))
    for codec in (CharCodec(sorted(set(text))), ByteCodec(), bpe):
        assert codec.decode(codec.encode(text).tolist()) == text
        again = codec_from_vocabulary(json.loads(json.dumps(codec.vocabulary())), "checkpoint x")
        assert again.vocab_size == codec.vocab_size
        assert again.encode(text).tolist() == codec.encode(text).tolist()
    old = codec_from_vocabulary({"chars": ["\n", "a", "b"]}, "checkpoint old.pt")  # before task=text
    assert old.decode(old.encode("ab\n").tolist()) == "ab\n"
    assert codec_from_vocabulary({"obs_mean": [0.0]}, "checkpoint d4rl.pt") is None


def test_a_trained_bpe_is_saved_in_the_cache_entry_and_a_tokenizer_file_is_taken(tmp_path, cache):
    (tmp_path / "t.txt").write_text(TEXT)
    trained = text_task(data_files=str(tmp_path / "t.txt"), tokenizer="bpe", vocab_size=280)
    assert 256 < trained.vocab_size <= 280 and (trained.corpus.folder / "tokenizer.json").is_file()
    assert split_text(trained, "train") + split_text(trained, "val") == TEXT
    assert len(trained.data["train"]) < len(TEXT) * 0.9  # merges happened
    from_file = text_task(data_files=str(tmp_path / "t.txt"),
                          tokenizer=str(trained.corpus.folder / "tokenizer.json"))
    assert np.array_equal(from_file.data["val"], trained.data["val"])


def test_a_tokenizer_named_from_the_local_hf_cache(tmp_path, monkeypatch):
    """A name resolves through huggingface_hub's cache layout (models--org--name/snapshots/<commit>), offline."""
    from huggingface_hub import constants

    snapshot = tmp_path / "hub" / "models--someone--tiny-bpe" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    train_bpe([ROWS], vocab_size=290).save(str(snapshot / "tokenizer.json"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    (tmp_path / "t.txt").write_text(TEXT)
    task = text_task(data_files=str(tmp_path / "t.txt"), tokenizer="someone/tiny-bpe")
    assert task.codec.kind == "bpe" and split_text(task, "train") + split_text(task, "val") == TEXT


def test_worker_processes_give_the_same_tokens(tmp_path, monkeypatch):
    """num_proc=2 (datasets.map's workers, each writing its own Arrow shard) tokenises in the same order (and
    is no part of the cache key)."""
    (tmp_path / "t.txt").write_text("".join(f"{i} {ROWS[i % len(ROWS)]}\n" for i in range(25_000)))
    one = text_task(data_files=str(tmp_path / "t.txt"), tokenizer="byte")
    monkeypatch.setenv("MINRNN_CACHE_DIR", str(tmp_path / "other_cache"))
    two = text_task(data_files=str(tmp_path / "t.txt"), tokenizer="byte", num_proc=2)
    assert two.corpus.folder.name == one.corpus.folder.name and two.corpus.folder != one.corpus.folder
    assert all(np.array_equal(one.data[split], two.data[split]) for split in ("train", "val"))


def test_a_vocabulary_past_uint16_is_stored_as_uint32(tmp_path):
    chars = "".join(chr(0x4E00 + i) if i < 20000 else chr(0x10000 + i) for i in range(66000))
    (tmp_path / "t.txt").write_text(chars + chars[:66000 // 9] + "\n")
    task = text_task(data_files=str(tmp_path / "t.txt"))
    assert task.corpus.meta["dtype"] == "uint32" and task.vocab_size > 2**16
    assert task.codec.decode(np.asarray(task.data["train"][-3:]).tolist()) == chars[-3:]


# ---- the memmap and its cache -------------------------------------------------------------------------------

def test_windows_are_slices_of_the_token_list(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    task = text_task(data_files=str(tmp_path / "t.txt"), seq_len=16, batch_size=4)
    ids = task.codec.encode(TEXT).tolist()
    train = ids[:len(task.data["train"])]
    generator = torch.Generator().manual_seed(3)
    inputs, targets = task.train_batch(generator)
    starts = torch.randint(len(train) - 16, (4,), generator=torch.Generator().manual_seed(3)).tolist()
    for row, start in enumerate(starts):
        assert inputs[row].tolist() == train[start:start + 16] and targets[row].tolist() == train[start + 1:start + 17]
    assert inputs.dtype == torch.long and isinstance(task.data["train"], np.memmap)


def test_the_cache_is_hit_and_invalidated_by_a_changed_file_or_tokenizer(tmp_path, cache, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    first = text_task(data_files=str(path))
    runs = []
    for kind in (prepare_module.Preparation, direct.DirectPreparation):
        monkeypatch.setattr(kind, "run", lambda self, chosen, original=kind.run: runs.append(1) or
                            original(self, chosen))
    assert text_task(data_files=str(path)).corpus.folder == first.corpus.folder and runs == []
    assert text_task(data_files=str(path), tokenizer="byte").corpus.folder != first.corpus.folder
    path.write_text(TEXT.replace("fox", "cat"))
    changed = text_task(data_files=str(path))
    assert changed.corpus.folder != first.corpus.folder and "cat" in split_text(changed, "train")
    assert len(runs) == 2 and len(entries(cache)) == 3


@pytest.mark.parametrize("path_kind", ["direct", "datasets"])
def test_an_interrupted_preparation_leaves_nothing_that_is_read(tmp_path, cache, monkeypatch, path_kind):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    if path_kind == "direct":
        kind, name = direct.DirectPreparation, "write_part"
        original = kind.write_part

        def interrupted(self, split, *args):
            original(self, split, *args)
            if split.name == "val":
                raise KeyboardInterrupt  # after train.bin and part of val.bin, before meta.json and the rename
    else:
        monkeypatch.setattr(direct, "usable", lambda source, settings: False)
        kind, name = prepare_module.Preparation, "write_split"
        original = kind.write_split

        def interrupted(self, split, parts, tokenise):
            counts = original(self, split, parts, tokenise)
            if split == "val":
                raise KeyboardInterrupt  # after train.bin and val.bin, before meta.json and the rename
            return counts

    monkeypatch.setattr(kind, name, interrupted)
    with pytest.raises(KeyboardInterrupt):
        text_task(data_files=str(path))
    assert entries(cache) == []
    # a folder a killed process left (no process has its id) is removed, never read
    monkeypatch.setattr(kind, name, original)
    key = prepare_module.cache_key(*key_parts(path))
    abandoned = cache / f".{key}.tmp-999999999-deadbeef"
    abandoned.mkdir(parents=True)
    (abandoned / "train.bin").write_bytes(b"\x00\x00")
    task = text_task(data_files=str(path))
    assert split_text(task, "train") + split_text(task, "val") == TEXT
    assert entries(cache) == [task.corpus.folder]


def prepared_files(task) -> dict:
    folder = task.corpus.folder
    meta = json.loads((folder / "meta.json").read_text())
    return {"splits": meta["splits"], "dtype": meta["dtype"], "vocabulary": task.codec.vocabulary(),
            **{split: (folder / f"{split}.bin").read_bytes() for split in meta["splits"]}}


@pytest.mark.parametrize("tokenizer", ["byte", "char", "bpe"])
def test_text_files_read_directly_give_the_datasets_path_tokens(tokenizer, tmp_path, monkeypatch):
    """corpus.direct (chunks as small as a few bytes, so characters and lines are cut at chunk boundaries) ==
    the datasets text builder and datasets.map, token for token, with files of several lines, one without a
    final line break, multi-byte characters, leading and trailing spaces, and a test split."""
    lines = [f"{'  ' * (i % 3)}line {i} é日本{'!' * (i % 4)} \U0001F600 {' ' * (i % 2)}\n" for i in range(300)]
    (tmp_path / "a.txt").write_text("".join(lines[:170]) + "no newline at the end")
    (tmp_path / "b.txt").write_text("\n\n" + "".join(lines[170:]))
    settings = {"data_files": str(tmp_path / "*.txt"), "tokenizer": tokenizer, "test_fraction": 0.05,
                "vocab_size": 300, "bpe_train_bytes": None}
    monkeypatch.setattr(direct, "CHUNK", 7)
    monkeypatch.setattr(direct, "BPE_CHUNK", 11)
    fast = text_task(**settings)
    monkeypatch.setenv("MINRNN_CACHE_DIR", str(tmp_path / "other"))
    monkeypatch.setattr(direct, "usable", lambda source, settings: False)
    slow = text_task(**settings)
    assert fast.corpus.folder.name == slow.corpus.folder.name  # the same entry, whichever path made it
    assert prepared_files(fast) == prepared_files(slow)
    assert fast.splits == ("val", "test") and all(fast.corpus.meta["splits"][s]["tokens"] for s in ("val", "test"))


@pytest.mark.parametrize("tokenizer", ["byte", "char"])
def test_text_read_directly_is_still_checked(tokenizer, tmp_path, cache, monkeypatch):
    """Bytes that are not UTF-8 (or NUL) past the first chunk: the one-line error, and no cache entry."""
    monkeypatch.setattr(direct, "CHUNK", 16)
    path = tmp_path / "t.txt"
    path.write_bytes(TEXT.encode() + b"\xff\xfe" + TEXT.encode())
    with pytest.raises(UserError, match=f"t.txt is not UTF-8 text \\(byte {len(TEXT.encode())}\\)"):
        text_task(data_files=str(path), tokenizer=tokenizer)
    path.write_bytes(TEXT.encode() + b"\x00")
    with pytest.raises(UserError, match="looks binary"):
        text_task(data_files=str(path), tokenizer=tokenizer)
    assert entries(cache) == []


def test_the_shakespeare_preset_read_directly_equals_the_datasets_path(tmp_path, monkeypatch):
    fast = make_task("shakespeare")
    monkeypatch.setenv("MINRNN_CACHE_DIR", str(tmp_path / "other"))
    monkeypatch.setattr(direct, "usable", lambda source, settings: False)
    assert prepared_files(make_task("shakespeare")) == prepared_files(fast)


def test_a_cache_hit_reads_no_file_and_imports_no_datasets(tmp_path, cache, monkeypatch):
    import subprocess
    import sys

    path = tmp_path / "t.txt"
    path.write_text(TEXT * 3)
    first = text_task(data_files=str(path), tokenizer="byte")
    config = {**task_config("text"), "data_files": str(path), "tokenizer": "byte", **SMALL}
    script = ("import sys; from minrnn_cli.tasks import build_task; "
              "from minrnn_cli.tasks.corpus import direct, sources; "
              "direct.decoded_chunks = direct.raw_chunks = None; "
              "sources.check_file = (lambda check: lambda path, text, content=True: 1 / 0 if content and text "
              "else check(path, text, content))(sources.check_file); "
              f"task = build_task({config!r}); "
              "print(task.corpus.folder.name, 'datasets' in sys.modules, 'pyarrow' in sys.modules)")
    env = {**__import__("os").environ, "MINRNN_CACHE_DIR": str(cache.parent)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [first.corpus.folder.name, "False", "False"]


def test_a_rewrite_that_keeps_size_and_times_is_caught_by_the_racy_digest(tmp_path, cache, monkeypatch):
    from minrnn_cli.tasks.corpus import sources

    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    first = text_task(data_files=str(path))
    assert "files_digest" in first.corpus.meta  # prepared right after the file was written: racy
    stats = sources.file_stats([path])
    path.write_text(TEXT.replace("fox", "cat"))  # the same size; as if in the same clock tick:
    monkeypatch.setattr(sources, "file_stats", lambda files: stats)
    changed = text_task(data_files=str(path))
    assert changed.corpus.folder == first.corpus.folder and "cat" in split_text(changed, "train")


def test_a_bpe_trained_on_a_bounded_sample(tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text("".join(f"{i} {ROWS[i % len(ROWS)]}\n" for i in range(3000)))
    monkeypatch.setattr(direct, "BLOCK", 1000)
    seen = []
    original = direct.train_bpe
    monkeypatch.setattr(direct, "train_bpe", lambda texts, size: original(
        (seen.append(sum(len(row.encode()) for row in batch)) or batch for batch in texts), size))
    bounded = text_task(data_files=str(tmp_path / "t.txt"), tokenizer="bpe", vocab_size=300, bpe_train_bytes=10_000)
    assert 5_000 <= sum(seen) <= 10_000 and len(seen) == 10  # ten stretches of whole lines
    whole = text_task(data_files=str(tmp_path / "t.txt"), tokenizer="bpe", vocab_size=300, bpe_train_bytes=None)
    assert bounded.corpus.folder != whole.corpus.folder and sum(seen) > 100_000
    assert split_text(bounded, "val") == split_text(whole, "val")  # tokens differ, the text does not


def key_parts(path: Path):
    from minrnn_cli.tasks.corpus.sources import load_source

    source = load_source(dataset=None, dataset_config=None, data_files=str(path), download=False)
    settings = prepare_module.Settings("text", "char", None, None, 0.1, 0.0, None, 1)
    return source, settings, ""


# ---- metrics and full-split evaluation -------------------------------------------------------------------------

def test_bits_per_byte_against_a_hand_computation(tmp_path):
    text = "é" * 300 + "e" * 100  # 400 characters, 700 bytes
    (tmp_path / "t.txt").write_text(text)
    task = text_task(data_files=str(tmp_path / "t.txt"), val_fraction=0.25)
    assert task.corpus.meta["splits"]["val"] == {"tokens": 100, "bytes": 100}  # the last quarter: all "e"
    assert task.corpus.meta["splits"]["train"] == {"tokens": 300, "bytes": 600}
    metrics = task.split_metrics("train", 1.2)
    assert metrics["bpc"] == pytest.approx(1.2 / math.log(2)) and metrics["ppl"] == pytest.approx(math.exp(1.2))
    assert metrics["bpb"] == pytest.approx(1.2 * 300 / 600 / math.log(2))


@pytest.mark.parametrize("model_name", ["mingru", "transformer"])
def test_full_split_evaluation_equals_one_long_forward(model_name):
    from minrnn_cli.models import build_lm

    torch.manual_seed(0)
    model = build_lm(model_name, 11, d_model=16, n_layers=2, **({"n_heads": 2} if model_name == "transformer" else {}))
    model.eval()
    tokens = np.random.default_rng(0).integers(0, 11, size=101).astype(np.uint16)
    ids = torch.from_numpy(tokens.astype(np.int64))
    with torch.no_grad():
        logits, _ = model(ids[None, :-1])
    expected = torch.nn.functional.cross_entropy(logits[0], ids[1:]).item()
    if model_name == "mingru":  # chunks of 16 with the state carried: the same as reading it in one go
        assert full_split_loss(model, tokens, 16, torch.device("cpu"), "fp32") == pytest.approx(expected, rel=1e-5)
    else:  # a window as long as the split: one forward; shorter windows see less context
        assert full_split_loss(model, tokens, 100, torch.device("cpu"), "fp32") == pytest.approx(expected, rel=1e-5)
        assert full_split_loss(model, tokens, 16, torch.device("cpu"), "fp32") != pytest.approx(expected, rel=1e-5)


def test_eval_full_scores_the_whole_split(tmp_path):
    from minrnn_cli.models import build_lm

    (tmp_path / "t.txt").write_text(TEXT)
    task = text_task(data_files=str(tmp_path / "t.txt"), eval_full=True)
    model = build_lm("mingru", task.vocab_size, d_model=16, n_layers=1)
    metrics = task.evaluate_split(model.eval(), "val", torch.device("cpu"), "fp32")
    expected = full_split_loss(model, task.data["val"], 8, torch.device("cpu"), "fp32")
    assert metrics["loss"] == pytest.approx(expected) and set(metrics) == {"loss", "bpc", "ppl", "bpb"}


# ---- the presets ---------------------------------------------------------------------------------------------

def test_shakespeare_preset_batches_are_nanogpts():
    """The vocabulary, the 90/10 split and the batches of the loader before task=text, computed here directly."""
    task = make_task("shakespeare")
    text = shakespeare_path().read_text(encoding="utf-8")
    chars = sorted(set(text))
    ids = torch.tensor([chars.index(char) for char in text[:4000]] + [0])[:-1]
    assert task.codec.chars == chars and task.vocab_size == 65 and task.splits == ("val",)
    assert (len(task.data["train"]), len(task.data["val"])) == (1_003_854, 111_540)
    assert np.array_equal(task.data["train"][:4000], ids.numpy())
    generator = torch.Generator().manual_seed(1337)
    inputs, targets = task.train_batch(generator)
    starts = torch.randint(1_003_854 - 128, (16,), generator=torch.Generator().manual_seed(1337))
    full = np.asarray(task.data["train"])
    for row, start in enumerate(starts.tolist()):
        assert inputs[row].tolist() == full[start:start + 128].tolist()
        assert targets[row].tolist() == full[start + 1:start + 129].tolist()
    assert task.training_data() == "1,003,854 training tokens"
    assert set(task.split_metrics("val", 1.5)) == {"loss", "bpc", "ppl", "bpb"}


def test_a_checkpoint_from_before_task_text_still_builds_its_task():
    old = {"name": "shakespeare", "data_path": None, "seq_len": 8, "batch_size": 2, "eval_batches": 1,
           "sample_chars": 0}
    assert build_task(old).vocab_size == 65


def test_the_wikitext103_preset_on_a_dataset_of_its_shape(tmp_path):
    """Rows that are lines ending in a line break (WikiText's), its three splits named as on the Hub."""
    import datasets

    lines = [" = Heading = \n", "", *[row + "\n" for row in ROWS]]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": lines[:40]}),
                          "validation": datasets.Dataset.from_dict({"text": lines[40:52]}),
                          "test": datasets.Dataset.from_dict({"text": lines[52:]})}).save_to_disk(str(tmp_path / "w"))
    task = make_task("wikitext103", dataset=str(tmp_path / "w"), vocab_size=300, **SMALL)
    assert task.splits == ("val", "test") and task.codec.kind == "bpe"
    assert split_text(task, "val") == "".join(lines[40:52])  # separator "": no doubled line breaks
    metrics = task.split_metrics("test", 2.0)
    assert set(metrics) == {"loss", "ppl", "bpb"} and metrics["bpb"] < 2.0 / math.log(2)  # tokens < bytes


@pytest.mark.parametrize("preset", ["enwik8", "wikitext103"])
def test_presets_compose_with_their_settings(preset):
    from conftest import task_config

    cfg = task_config(preset)
    assert cfg["tokenizer"] == {"enwik8": "byte", "wikitext103": "bpe"}[preset]
    if preset == "enwik8":
        assert (cfg["val_fraction"], cfg["test_fraction"], cfg["data_files"]) == (0.05, 0.05, None)
    else:
        assert cfg["dataset"] == "Salesforce/wikitext" and cfg["split_names"]["val"] == "validation"


# ---- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("setup", "settings", "needle"), [
    ("jsonl", {"text_column": "body"}, "task.text_column=body: .* has no such column; its columns are text, n"),
    ("jsonl", {"text_column": "n"}, "task.text_column=n: the column .* is int64, not text; its text columns are text"),
    ("txt", {"data_files": "{tmp}/nothing-*.txt"}, "nothing-\\*.txt matches no file"),
    ("txt", {"tokenizer": "{tmp}/broken.json"}, "broken.json does not parse as a tokenizers tokenizer.json"),
    ("txt", {"tokenizer": "no-such-org/no-such-tokenizer"}, "nor a tokenizer in the local HF cache"),
    ("txt", {"dataset": "no-such-org/no-such-dataset", "data_files": None},
     "no-such-dataset cannot be loaded .*not in the local HF cache; task.download=true fetches it"),
    ("txt", {"test_fraction": 0.0001}, "the test split is empty"),
    ("txt", {"seq_len": 200}, "task.seq_len=200 is longer than the data: the validation split of .* has 192 tokens"),
    ("txt", {"tokenizer": "bpe", "vocab_size": 100}, "task.vocab_size=100 is invalid"),
    ("txt", {"val_fraction": 0}, "task.val_fraction=0 is invalid"),
    ("txt", {"data_files": None}, "task text needs a corpus"),
    ("txt", {"data_files": None, "preset": "enwik8"}, "task enwik8 needs the enwik8 file: .* task.data_files=PATH"),
])
def test_bad_corpus_settings_are_one_line_and_leave_no_cache_entry(setup, settings, needle, tmp_path, cache):
    if setup == "jsonl":
        (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": row, "n": i}) + "\n"
                                                     for i, row in enumerate(ROWS)))
        settings = {"data_files": str(tmp_path / "rows.jsonl"), **settings}
    else:
        (tmp_path / "t.txt").write_text(TEXT[:1920])
        (tmp_path / "broken.json").write_text('{"model": ')
        settings = {"data_files": str(tmp_path / "t.txt"), **settings}
    settings = {key: value.format(tmp=tmp_path) if isinstance(value, str) else value for key, value in settings.items()}
    with pytest.raises(UserError, match=needle) as raised:
        text_task(**settings)
    assert "\n" not in str(raised.value)
    # nothing half-written: every entry (a corpus prepared before a later check failed) is complete
    assert all(not entry.name.startswith(".") and (entry / "meta.json").is_file() for entry in entries(cache))


# ---- the commands ------------------------------------------------------------------------------------------------

def test_prepare_then_train_then_generate_with_a_trained_bpe(tmp_path, cache):
    (tmp_path / "t.txt").write_text(TEXT)
    corpus = ["task=text", f"task.data_files={tmp_path / 't.txt'}", "task.tokenizer=bpe", "task.vocab_size=280"]
    prepared = run_minrnn(tmp_path, "prepare", *corpus)
    assert prepared.exit_code == 0, prepared.stderr
    assert "train_tokens" in prepared.stdout and len(entries(cache)) == 1
    trained = run_minrnn(tmp_path, "train", *corpus, *TINY_MODEL, *TINY_TRAINER, "task.seq_len=8",
                         "task.batch_size=2", "task.eval_batches=1", "task.sample_chars=5")
    assert trained.exit_code == 0, trained.stderr
    results = json.loads(next((tmp_path / "outputs" / "runs").glob("*/results.json")).read_text())
    assert {"val_loss", "val_ppl", "val_bpb"} <= set(results) and "val_bpc" not in results
    # generation needs the checkpoint alone (its tokenizer is in it): the corpus and its cache entry are gone
    (tmp_path / "t.txt").rename(tmp_path / "moved.txt")
    shutil.rmtree(cache)
    generated = run_minrnn(tmp_path, "generate", "checkpoint=latest", "prompt=line", "max_new_tokens=5",
                           "trainer.device=cpu")
    assert generated.exit_code == 0, generated.stderr
    sample = next((tmp_path / "outputs" / "samples").glob("*/sample.txt")).read_text()
    assert sample.startswith("line") and len(sample) > 4 and not cache.exists()
    # evaluation scores the task's data, so it says which file is missing
    refused = run_minrnn(tmp_path, "eval", "checkpoint=latest", "trainer.device=cpu")
    assert refused.exit_code == 2 and "t.txt" in refused.stderr
    refused = run_minrnn(tmp_path, "prepare", "task=listops")
    assert refused.exit_code == 2 and "has no corpus to prepare" in refused.stderr
