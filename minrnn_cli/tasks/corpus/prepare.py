"""A corpus prepared once: its splits tokenised into flat uint16 (uint32 past 65,536 ids) files, nanoGPT's
prepare.py shape, with meta.json beside them, cached under $MINRNN_CACHE_DIR/corpora/<key> (else
~/.cache/minrnn/corpora). The key hashes the dataset's fingerprint (for local text files: their path, size,
mtime, ctime and inode, see corpus.direct), the tokenizer (and its file), the split settings, the text column
and the separator, so a changed source or tokenizer gets a new entry, never a stale one. Local text files with
splits by fraction are read directly (corpus.direct, the same tokens as the datasets path below). An entry is
written into a temporary folder renamed into place at the end: an interrupted preparation leaves nothing that
is read later, and the next run redoes it.

Splits are the dataset's own (task.split_names) or carved by fraction out of one split at the TEXT level: the
stream of rows (each with the separator appended) is cut at character offsets, at byte offsets for the byte
tokenizer (so enwik8's 90M/5M/5M bytes are exact), splitting the one row that holds a cut, and each split is
tokenised on its own. Bytes per split are the UTF-8 bytes of its text, whatever the tokenizer. For the char
tokenizer the vocabulary is the sorted set of the training split's characters, and one `<unk>` id follows
when the other splits hold characters the training split lacks.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np

from minrnn_cli.errors import UserError
from minrnn_cli.paths import cache_dir
from minrnn_cli.tasks.corpus.sources import Source, text_column
from minrnn_cli.tasks.corpus.tokenizers import KINDS, BPECodec, ByteCodec, CharCodec, load_tokenizer, train_bpe

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
BATCH_ROWS = 10_000  # rows per datasets.map batch
META = "meta.json"
TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class Settings:
    """What decides a prepared corpus besides its source (all of it goes into the cache key)."""

    text_column: str
    tokenizer: str  # char | byte | bpe | a tokenizer.json path | a cached tokenizer's name
    vocab_size: int | None  # a trained BPE's
    split_names: dict | None  # {"train": name, "val": name, "test": name or None}: the dataset's own splits
    val_fraction: float | None
    test_fraction: float | None
    separator: str | None  # appended to every row; None: "" for text files, "\n" otherwise
    num_proc: int
    bpe_train_bytes: int | None = None  # a trained BPE learns from at most this many bytes of the training split


@dataclass
class Prepared:
    folder: Path
    meta: dict
    codec: object

    def tokens(self, split: str) -> np.memmap:
        return np.memmap(self.folder / f"{split}.bin", dtype=self.meta["dtype"], mode="r",
                         shape=(self.meta["splits"][split]["tokens"],))

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(split for split in SPLITS if split in self.meta["splits"])


# ---- parts of a split: whole rows, or a piece of one row cut by a fraction ------------------------------

@dataclass(frozen=True)
class Rows:
    dataset: object
    start: int
    stop: int


@dataclass(frozen=True)
class Piece:
    text: str | bytes  # the cut row's part, with the separator where it reaches the row's end


def is_count(value, minimum: int) -> bool:
    """An integer >= minimum (true/false are not counts, though Python takes them as 1 and 0)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def check_settings(settings: Settings) -> None:
    if settings.tokenizer == "bpe" and not is_count(settings.vocab_size, 257):
        raise UserError(f"task.vocab_size={settings.vocab_size!r} is invalid: a trained BPE needs an integer >= 257 "
                        "(the 256 bytes and at least one merge)")
    if settings.bpe_train_bytes is not None and not is_count(settings.bpe_train_bytes, 1):
        raise UserError(f"task.bpe_train_bytes={settings.bpe_train_bytes!r} is invalid: it must be a positive "
                        "integer (bytes) or null (the whole training split)")
    if settings.separator is not None and not isinstance(settings.separator, str):
        raise UserError(f"task.separator={settings.separator!r} is invalid: it must be text (quoted: "
                        "'task.separator=\"\\n\"') or null (none for text files, a line break otherwise)")
    if not is_count(settings.num_proc, 1):
        raise UserError(f"task.num_proc={settings.num_proc!r} is invalid: it must be an integer >= 1")
    if settings.split_names is not None:
        if settings.val_fraction or settings.test_fraction:
            raise UserError("task.split_names and task.val_fraction/test_fraction are both set: use the dataset's "
                            "own splits (split_names) or carve them by fraction (split_names=null), not both")
        if not settings.split_names.get("train") or not settings.split_names.get("val"):
            raise UserError(f"task.split_names={dict(settings.split_names)} is invalid: it needs train and val "
                            "(test may be null)")
        return
    for key, value in (("val_fraction", settings.val_fraction), ("test_fraction", settings.test_fraction)):
        if value is not None and not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise UserError(f"task.{key}={value!r} is invalid: it must be a number in [0, 1)")
    if not settings.val_fraction or (settings.val_fraction or 0) + (settings.test_fraction or 0) >= 1:
        raise UserError(f"task.val_fraction={settings.val_fraction} is invalid: carving splits needs a val fraction "
                        "> 0 with val_fraction + test_fraction < 1 (or task.split_names for the dataset's own)")


def prepare(source: Source, settings: Settings, progress: Callable[[str], None] | None = None) -> Prepared:
    """The prepared corpus for `source` and `settings`, from the cache or made now (`progress(stage)`: told
    each stage as it starts). Local text files with splits by fraction are read directly (corpus.direct): a
    corpus found in the cache then needs neither HF datasets nor a read of the files."""
    from minrnn_cli.tasks.corpus import direct

    check_settings(settings)
    separator = settings.separator if settings.separator is not None else ("" if source.text_files else "\n")
    parts_source = None
    if source.files is not None and settings.split_names is None:  # the text builder's one split, one column
        if settings.text_column != "text":
            raise UserError(f"task.text_column={settings.text_column}: {source.key} has no such column; its "
                            "columns are text")
    else:
        parts_source = choose_splits(source, settings)
        for split, dataset in parts_source.items():
            text_column(dataset, settings.text_column, source, split)
    key = cache_key(source, settings, separator)
    folder = cache_dir("corpora") / key
    if (folder / META).is_file():
        try:
            prepared = load_prepared(folder)
            if source.files is None or direct.still_fresh(prepared.meta, source.files):
                return prepared
            log.warning(f"{source.key} changed without changing its size or times; preparing it again")
            shutil.rmtree(folder, ignore_errors=True)
        except (OSError, ValueError, KeyError, UserError) as error:
            log.warning(f"the prepared corpus {folder} is unreadable ({error}); preparing it again")
            shutil.rmtree(folder, ignore_errors=True)
    work = folder.parent / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    progress = progress or (lambda stage: None)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(folder)
        work.mkdir()
        digest = racy_digest(source.files) if source.files is not None else None
        scanned = None
        if parts_source is None and separator == "" and direct.usable(source, settings):
            progress("reading the text files")
            scanned = direct.scan(source.files, settings.tokenizer == "byte")
        if scanned is not None and not scanned.returns:
            try:
                direct.DirectPreparation(source, settings, work, progress).run(scanned)
            except direct.CarriageReturns:  # found while writing: the datasets path, from an empty folder
                for leftover in work.iterdir():
                    leftover.unlink()
                scanned = None
        if scanned is None or scanned.returns:
            if parts_source is None:
                parts_source = choose_splits(source, settings)
            Preparation(source, settings, separator, work, progress).run(parts_source)
        if digest is not None:
            meta = json.loads((work / META).read_text())
            (work / META).write_text(json.dumps({**meta, "files_digest": digest}, indent=1, default=str))
        try:
            work.rename(folder)
        except OSError:  # another process finished the same entry first: theirs is as good
            if not (folder / META).is_file():
                raise
    except OSError as error:
        raise UserError(f"the corpus cache {folder.parent} cannot be written ({error.strerror or error}); free "
                        "space there or set MINRNN_CACHE_DIR to a writable folder") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return load_prepared(folder)


def racy_digest(files: list[Path]) -> str | None:
    """Text files are keyed by their stats: if one changed within RACY_NS of now, a rewrite in the same clock
    tick with the same size would keep the key, so the entry records the files' digest (taken before they are
    read: a later rewrite then never matches it) and each use checks it."""
    from minrnn_cli.tasks.corpus import direct
    from minrnn_cli.tasks.corpus.sources import file_stats

    now = time.time_ns()
    if any(max(stat[2], stat[3]) > now - direct.RACY_NS for stat in file_stats(files)):
        return direct.digest(files)
    return None


def choose_splits(source: Source, settings: Settings) -> dict:
    """{our split: the dataset's split} read: the named ones, or the one split fractions are carved from."""
    available = ", ".join(source.splits) or "none"
    if settings.split_names is not None:
        chosen = {}
        for ours in SPLITS:
            theirs = settings.split_names.get(ours)
            if theirs is None:
                continue
            if theirs not in source.splits:
                raise UserError(f"task.split_names.{ours}={theirs}: {source.key} has no such split; its splits are "
                                f"{available}")
            chosen[ours] = source.splits[theirs]
        return chosen
    if "train" in source.splits:
        return {"whole": source.splits["train"]}
    if len(source.splits) == 1:
        return {"whole": next(iter(source.splits.values()))}
    raise UserError(f"{source.key} has the splits {available} and none is `train`: name them with task.split_names "
                    "(train, val, test) or give a dataset of one split to carve by fraction")


def cache_key(source: Source, settings: Settings, separator: str) -> str:
    spec = settings.tokenizer
    if spec not in KINDS:
        spec = f"{spec}:{hashlib.sha256(load_tokenizer(spec).to_str().encode()).hexdigest()}"
    parts = {"version": FORMAT_VERSION, "source": source.fingerprint, "tokenizer": spec,
             "vocab_size": settings.vocab_size if settings.tokenizer == "bpe" else None,
             "bpe_train_bytes": settings.bpe_train_bytes if settings.tokenizer == "bpe" else None,
             "split_names": dict(settings.split_names) if settings.split_names is not None else None,
             "val_fraction": settings.val_fraction, "test_fraction": settings.test_fraction,
             "column": settings.text_column, "separator": separator}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def remove_abandoned(folder: Path) -> None:
    """Temporary folders of this entry left by a process that no longer runs (an interrupted preparation)."""
    for work in folder.parent.glob(f".{folder.name}.tmp-*"):
        pid = work.name.split("-")[-2]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(work, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_prepared(folder: Path) -> Prepared:
    meta = json.loads((folder / META).read_text())
    if meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"format {meta.get('version')}, not {FORMAT_VERSION}")
    vocabulary = dict(meta["vocabulary"])
    if vocabulary["tokenizer"] == "bpe":
        from tokenizers import Tokenizer

        codec = BPECodec(Tokenizer.from_file(str(folder / TOKENIZER_FILE)))
    elif vocabulary["tokenizer"] == "byte":
        codec = ByteCodec()
    else:
        codec = CharCodec(vocabulary["chars"], vocabulary["unk"])
    for split, counts in meta["splits"].items():
        expected = counts["tokens"] * np.dtype(meta["dtype"]).itemsize
        if (folder / f"{split}.bin").stat().st_size != expected:
            raise ValueError(f"{split}.bin is not {expected} bytes")
    return Prepared(folder, meta, codec)


def carve_counts(total: int, val_fraction: float, test_fraction: float | None) -> tuple[int, int, int]:
    """Units (characters or bytes) of train, val and test: train = floor(total x (1 - val - test)) and test =
    floor(total x test) in exact decimal arithmetic (0.9 of 10^8 is 90,000,000), val the rest."""
    val, test = Decimal(repr(float(val_fraction))), Decimal(repr(float(test_fraction or 0)))
    train_units = int(total * (1 - val - test))
    test_units = int(total * test)
    return train_units, total - train_units - test_units, test_units


def record_batches(dataset):
    """The batches of a datasets.map result, read from its Arrow files in order without memory-mapping them
    (so reading a large result leaves none of its pages resident)."""
    import pyarrow as pa

    files = [entry["filename"] for entry in dataset.cache_files]
    if not files:  # held in memory
        yield from dataset.data.to_batches()
        return
    for name in files:
        with pa.OSFile(name) as source, pa.ipc.open_stream(source) as reader:
            yield from reader


def text_array(batch, column: str):
    """A batch's text column as one Arrow array, missing values as "" (`batch`: the pa.Table datasets.map
    gives in Arrow format, or a dict of lists)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = batch[column]
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    elif not isinstance(values, pa.Array):
        values = pa.array(values, pa.string())
    if values.type != pa.string():  # large_string (csv, some parquet): a batch is far below 2 GB
        values = values.cast(pa.string())
    return pc.fill_null(values, "")


def joined_bytes(values, separator: str) -> bytes:
    """The UTF-8 bytes of the rows, each followed by the separator, joined in Arrow (no Python loop)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(values) == 0:
        return b""
    rows = pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)
    return pc.binary_join(rows, separator)[0].as_buffer().to_pybytes() + separator.encode("utf-8")


def split_encoder(codec) -> tuple:
    """The codec that writes the splits and its ids' dtype: characters the training split lacks get the id
    after its own (<unk>), which the saved vocabulary keeps only if one occurs (saved_vocabulary)."""
    encoder = CharCodec(codec.chars, unk=True) if isinstance(codec, CharCodec) else codec
    return encoder, "uint16" if encoder.vocab_size <= 2**16 else "uint32"


def saved_vocabulary(codec, unknown: int, work: Path) -> dict:
    """meta.json's vocabulary once the splits are written with `unknown` <unk> characters in val/test (warned
    about); a BPE tokenizer is saved beside it."""
    if unknown:
        codec = CharCodec(codec.chars, unk=True)
        log.warning(f"{unknown:,} characters of the val/test splits are not in the training split: they are "
                    f"the extra id {len(codec.chars)} (<unk>)")
    if isinstance(codec, BPECodec):
        codec.tokenizer.save(str(work / TOKENIZER_FILE))
        return {"tokenizer": "bpe", "file": TOKENIZER_FILE}
    return codec.vocabulary()


class Tokenise:
    """The datasets.map function: a batch of rows to one blob of token ids (the batch's ids in the file's
    dtype), its UTF-8 bytes and the ids of characters outside a char vocabulary. A class, so it pickles into
    num_proc workers."""

    def __init__(self, codec, column: str, separator: str, dtype: str):
        self.codec, self.column, self.separator, self.dtype = codec, column, separator, dtype

    def __call__(self, batch):
        import pyarrow as pa

        values = text_array(batch, self.column)
        data = joined_bytes(values, self.separator)
        if isinstance(self.codec, BPECodec):
            texts = [text + self.separator for text in values.to_pylist()]
            ids = np.fromiter(itertools.chain.from_iterable(self.codec.encode_batch(texts)), dtype=np.int64)
        elif isinstance(self.codec, ByteCodec):
            ids = np.frombuffer(data, dtype=np.uint8)
        else:
            ids = self.codec.encode(data.decode("utf-8"))
        unknown = int((ids == len(self.codec.chars)).sum()) if isinstance(self.codec, CharCodec) else 0
        return pa.table({"ids": pa.array([ids.astype(self.dtype).tobytes()], pa.binary()), "bytes": [len(data)],
                         "unknown": [unknown]})


class Lengths:
    """The datasets.map function measuring each row (separator included) in characters or bytes."""

    def __init__(self, column: str, separator: str, in_bytes: bool):
        self.column, self.separator, self.in_bytes = column, separator, in_bytes

    def __call__(self, batch):
        import pyarrow as pa
        import pyarrow.compute as pc

        values = text_array(batch, self.column)
        if self.in_bytes:
            return pa.table({"n": pc.add(pc.binary_length(values), len(self.separator.encode("utf-8")))})
        return pa.table({"n": pc.add(pc.utf8_length(values), len(self.separator))})


class CharSet:
    """The datasets.map function giving a batch's distinct characters, one row per batch."""

    def __init__(self, column: str, separator: str):
        self.column, self.separator = column, separator

    def __call__(self, batch) -> dict:
        import pyarrow as pa

        text = joined_bytes(text_array(batch, self.column), self.separator).decode("utf-8")
        return pa.table({"chars": ["".join(set(text))]})


class Preparation:
    def __init__(self, source: Source, settings: Settings, separator: str, work: Path,
                 progress: Callable[[str], None]):
        self.source, self.settings, self.separator, self.work = source, settings, separator, work
        self.progress = progress
        self.column = settings.text_column
        self.in_bytes = settings.tokenizer == "byte"
        self.maps = 0

    def map(self, dataset, function, stage: str):
        """`function` over `dataset` in batches (num_proc workers), its output in the temporary folder."""
        self.maps += 1
        name = f"map-{self.maps}"
        fingerprint = hashlib.sha256(f"{self.work.name}-{name}".encode()).hexdigest()[:32]
        workers = self.settings.num_proc if self.settings.num_proc > 1 and len(dataset) > BATCH_ROWS else None
        return dataset.with_format("arrow").map(  # batches as Arrow tables: joined and measured in Arrow
            function, batched=True, batch_size=BATCH_ROWS, remove_columns=dataset.column_names, num_proc=workers,
            cache_file_name=str(self.work / f"{name}.arrow"), new_fingerprint=fingerprint, desc=stage)

    def run(self, chosen: dict) -> None:
        if "whole" in chosen:
            splits = self.carve(chosen["whole"])
        else:
            splits = {split: [Rows(dataset, 0, len(dataset))] for split, dataset in chosen.items()}
        for split, parts in splits.items():
            if not any(isinstance(part, Piece) and part.text or isinstance(part, Rows) and part.stop > part.start
                       for part in parts):
                raise UserError(f"{self.source.key}: the {split} split is empty; give more text or other "
                                "split settings")
        codec = self.make_codec(splits["train"])
        encoder, dtype = split_encoder(codec)
        tokenise = Tokenise(encoder, self.column, self.separator, dtype)
        counts, unknown = {}, 0
        for split, parts in splits.items():
            self.progress(f"tokenising the {split} split")
            counts[split], split_unknown = self.write_split(split, parts, tokenise)
            unknown += split_unknown * (split != "train")
            if counts[split]["tokens"] == 0:
                raise UserError(f"{self.source.key}: the {split} split has no tokens; give more text")
        vocabulary = saved_vocabulary(codec, unknown, self.work)
        meta = {"version": FORMAT_VERSION, "dtype": dtype, "vocabulary": vocabulary, "splits": counts,
                "source": self.source.key, "fingerprint": self.source.fingerprint,
                "settings": {**self.settings.__dict__, "separator": self.separator}}
        for leftover in self.work.glob("*.arrow"):
            leftover.unlink()
        (self.work / META).write_text(json.dumps(meta, indent=1, default=str))

    def carve(self, dataset) -> dict[str, list]:
        """The rows cut into train/val/test by fraction at character (byte) offsets."""
        self.progress("measuring the rows")
        lengths = self.map(dataset, Lengths(self.column, self.separator, self.in_bytes), "measuring rows")
        n = np.concatenate([chunk.to_numpy(zero_copy_only=False) for chunk in lengths.data.column("n").chunks]) \
            if len(lengths) else np.zeros(0, np.int64)
        ends = np.cumsum(n, dtype=np.int64)
        total = int(ends[-1]) if len(ends) else 0
        train, val, test = carve_counts(total, self.settings.val_fraction, self.settings.test_fraction)
        bounds = {"train": (0, train), "val": (train, train + val), "test": (train + val, total)}
        if not self.settings.test_fraction:
            del bounds["test"]
        return {split: self.parts(dataset, ends, n, low, high) for split, (low, high) in bounds.items()}

    def parts(self, dataset, ends: np.ndarray, n: np.ndarray, low: int, high: int) -> list:
        if high <= low:
            return []
        first = int(np.searchsorted(ends, low, side="right"))  # the row holding unit `low`
        last = int(np.searchsorted(ends, high - 1, side="right"))  # the row holding unit `high - 1`
        first_start, last_start = int(ends[first] - n[first]), int(ends[last] - n[last])
        if first == last:
            return [self.piece(dataset, first, low - first_start, high - first_start)]
        parts = []
        if low > first_start:
            parts.append(self.piece(dataset, first, low - first_start, int(n[first])))
            first += 1
        tail = self.piece(dataset, last, 0, high - last_start) if high < int(ends[last]) else None
        parts.append(Rows(dataset, first, last if tail else last + 1))
        return parts + ([tail] if tail else [])

    def piece(self, dataset, row: int, start: int, stop: int) -> Piece:
        text = (dataset[row][self.column] or "") + self.separator
        return Piece(text.encode("utf-8")[start:stop] if self.in_bytes else text[start:stop])

    def texts(self, parts: list, limit: int | None = None):
        """The split's text in batches of rows (each with the separator), for building a vocabulary; with
        `limit`, about that many bytes: every k-th batch, k from the first batch's bytes per row."""
        every, index = 1, 0
        for part in parts:
            if isinstance(part, Piece):
                yield [part.text]
                continue
            for start in range(part.start, part.stop, BATCH_ROWS):
                index += 1
                if (index - 1) % every:
                    continue
                rows = part.dataset[start:min(start + BATCH_ROWS, part.stop)][self.column]
                batch = [(row or "") + self.separator for row in rows]
                if limit and index == 1:
                    total_rows = sum(p.stop - p.start for p in parts if isinstance(p, Rows))
                    estimate = sum(len(row.encode("utf-8")) for row in batch) / max(len(batch), 1) * total_rows
                    every = max(int(-(-estimate // limit)), 1)
                yield batch

    def make_codec(self, train_parts: list):
        spec = self.settings.tokenizer
        if spec == "byte":
            return ByteCodec()
        if spec == "char":
            self.progress("collecting the training split's characters")
            chars = set()
            for part in train_parts:
                if isinstance(part, Piece):
                    chars.update(part.text)
                elif part.stop > part.start:
                    found = self.map(part.dataset.select(range(part.start, part.stop)),
                                     CharSet(self.column, self.separator), "collecting characters")
                    for batch in record_batches(found):
                        chars.update("".join(batch.column("chars").to_pylist()))
            return CharCodec(sorted(chars))
        if self.settings.num_proc > 1:  # tokenizers' own threads before datasets forks its workers: a deadlock risk
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
        if spec == "bpe":
            self.progress(f"training a BPE tokenizer ({self.settings.vocab_size:,} ids) on the training split")
            return BPECodec(train_bpe(self.texts(train_parts, self.settings.bpe_train_bytes), self.settings.vocab_size))
        return BPECodec(load_tokenizer(spec))

    def write_split(self, split: str, parts: list, tokenise: Tokenise) -> tuple[dict, int]:
        """The split's ids into <split>.bin, in order; ({tokens, bytes}, unknown characters)."""
        tokens = size = unknown = 0
        with (self.work / f"{split}.bin").open("wb") as handle:
            for part in parts:
                if isinstance(part, Piece):
                    if self.in_bytes:
                        ids, piece_bytes, piece_unknown = np.frombuffer(part.text, np.uint8), len(part.text), 0
                    else:  # the piece holds its separator already
                        batch = Tokenise(tokenise.codec, self.column, "", tokenise.dtype)({self.column: [part.text]})
                        ids = np.frombuffer(batch["ids"][0].as_py(), dtype=tokenise.dtype)
                        piece_bytes, piece_unknown = batch["bytes"][0].as_py(), batch["unknown"][0].as_py()
                    handle.write(ids.astype(tokenise.dtype).tobytes())
                    tokens, size, unknown = tokens + len(ids), size + piece_bytes, unknown + piece_unknown
                    continue
                if part.stop <= part.start:
                    continue
                mapped = self.map(part.dataset.select(range(part.start, part.stop)), tokenise, f"tokenising {split}")
                for batch in record_batches(mapped):
                    for blob in batch.column("ids").to_pylist():
                        handle.write(blob)
                        tokens += len(blob) // np.dtype(tokenise.dtype).itemsize
                    size += sum(batch.column("bytes").to_pylist())
                    unknown += sum(batch.column("unknown").to_pylist())
        return {"tokens": tokens, "bytes": size}, unknown
