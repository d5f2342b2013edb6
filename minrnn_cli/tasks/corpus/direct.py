"""Local text files prepared without HF datasets: the files' bytes streamed in large chunks (numpy), giving
token for token what the datasets path (prepare.Preparation over the text builder's rows) gives, at the speed
of reading the file rather than of the text builder's Python line reader.

The rows of a text file are its lines with their line breaks (the text builder's, split on "\\n" only) and the
separator is "", so a split is a stretch of the files' concatenated text: byte ids are its UTF-8 bytes, char
ids its code points looked up in the training split's sorted characters, and a BPE encodes each line (each
piece of the line a fraction cuts) on its own, as datasets.map does row by row. Chunks end at a character
boundary (the incremental decoder holds a character cut by the chunk) and, for BPE, at a line end.

Used for task.data_files text files with splits carved by fraction and no carriage return in the files (the
text builder reads \\r\\n and \\r as \\n: those files, and task.split_names, take the datasets path).

The cache key of a text-files source is made of the files' stats (path, size, mtime_ns, ctime_ns, inode), so a
training run that finds its corpus prepared reads neither the files nor imports datasets. An entry prepared
within RACY_NS of a file's last change could miss a rewrite that keeps the size within the same clock tick
(git's "racy" case): such an entry records the files' digest, checked at each later use.

A trained BPE learns from at most task.bpe_train_bytes of the training split (null: all of it): BLOCK-sized
stretches of whole lines at evenly spaced offsets of the training split's bytes.
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minrnn_cli.errors import UserError
from minrnn_cli.tasks.corpus.sources import Source, file_stats
from minrnn_cli.tasks.corpus.tokenizers import BPECodec, ByteCodec, CharCodec, train_bpe

log = logging.getLogger(__name__)

CHUNK = 1 << 24  # bytes read at a time (16 MB)
BPE_CHUNK = 1 << 21  # bytes of whole lines a BPE encodes at a time (its Encoding objects are large)
BLOCK = 1 << 20  # bytes per stretch of a BPE's bounded training sample
RACY_NS = 2_000_000_000  # a file changed this close to its preparation: its entry records a digest
WANTED = "give a readable UTF-8 text file"


def usable(source: Source, settings) -> bool:
    """Whether corpus.direct prepares this source (else the datasets path)."""
    return source.files is not None and settings.split_names is None and settings.tokenizer in ("byte", "char", "bpe")


# ---- reading -----------------------------------------------------------------------------------------------

def decoded_chunks(path: Path, size: int = CHUNK, text: bool = True) -> Iterator[tuple[bytes, str | None]]:
    """(raw bytes, their text) chunk by chunk, each cut at a character boundary; a one-line UserError for NUL
    bytes or text that is not UTF-8 (the messages of sources.check_file). `text=False`: only checked, the
    text given as None (an ASCII chunk is then not decoded at all)."""
    key = f"task.data_files={path}"
    decoder, read, given_from = codecs.getincrementaldecoder("utf-8")(), 0, 0
    try:
        with path.open("rb") as handle:
            while True:
                raw = handle.read(size)
                final = not raw
                if b"\x00" in raw:
                    raise UserError(f"{key} looks binary (it holds NUL bytes); {WANTED}")
                before = decoder.getstate()[0]
                given_from = read - len(before)
                if not text and raw and not before and raw.isascii():
                    read += len(raw)
                    yield raw, None
                    continue
                decoded = decoder.decode(raw, final=final)
                read += len(raw)
                after = decoder.getstate()[0]
                if before or after:
                    raw = before + raw[:len(raw) - len(after)]
                if raw:
                    yield raw, decoded if text else None
                if final:
                    return
    except UnicodeDecodeError as error:
        raise UserError(f"{key} is not UTF-8 text (byte {given_from + error.start}); {WANTED}") from None
    except OSError as error:
        raise UserError(f"{key}: cannot read it ({error.strerror or error}); {WANTED}") from None


def raw_chunks(path: Path, size: int = CHUNK) -> Iterator[tuple[bytes, None]]:
    """The file's bytes chunk by chunk (checked already by scan), no text."""
    with path.open("rb") as handle:
        while raw := handle.read(size):
            yield raw, None


def line_chunks(path: Path, size: int) -> Iterator[tuple[bytes, str]]:
    """decoded_chunks cut at line ends (the file's last line may have none)."""
    carry_raw, carry_text = b"", ""
    for raw, text in decoded_chunks(path, size):
        raw, text = carry_raw + raw, carry_text + text
        cut = text.rfind("\n") + 1
        if cut == 0:
            carry_raw, carry_text = raw, text
            continue
        cut_raw = raw.rfind(b"\n") + 1
        yield raw[:cut_raw], text[:cut]
        carry_raw, carry_text = raw[cut_raw:], text[cut:]
    if carry_text:
        yield carry_raw, carry_text


def digest(files: list[Path]) -> str:
    hasher = hashlib.sha1()
    for path in files:
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                hasher.update(chunk)
    return hasher.hexdigest()


def still_fresh(meta: dict, files: list[Path]) -> bool:
    """False for a racy entry whose files' digest is no longer the one it recorded."""
    recorded = meta.get("files_digest")
    return recorded is None or recorded == digest(files)


def rows(text: str) -> list[str]:
    """A stretch of text as the text builder's rows: lines split on "\\n", line breaks kept."""
    lines = text.split("\n")
    last = lines.pop()
    lines = [line + "\n" for line in lines]
    return lines + [last] if last else lines


# ---- the preparation ---------------------------------------------------------------------------------------

@dataclass
class Scanned:
    units: list[int]  # per file: bytes (byte tokenizer) or characters
    returns: bool  # a carriage return somewhere: the datasets path reads it differently
    checked: bool = True  # False: the text is checked (UTF-8, NUL, carriage returns) while the ids are written


class CarriageReturns(Exception):
    """The files hold a carriage return (found while writing): the datasets path prepares them."""


def scan(files: list[Path], in_bytes: bool) -> Scanned:
    """Every file checked (UTF-8, no NUL) and measured; for bytes its size is its measure, and the one pass that
    writes the ids checks it."""
    if in_bytes:
        return Scanned([path.stat().st_size for path in files], False, checked=False)
    units, returns = [], False
    for path in files:
        count = 0
        for raw, text in decoded_chunks(path):
            count += len(raw) if in_bytes else len(text)
            returns = returns or b"\r" in raw
        units.append(count)
    return Scanned(units, returns)


@dataclass
class Split:
    name: str
    low: int  # units of the files' concatenated text
    high: int
    tokens: int = 0
    bytes: int = 0
    unknown: int = 0


class DirectPreparation:
    def __init__(self, source: Source, settings, work: Path, progress: Callable[[str], None]):
        self.source, self.settings, self.work, self.progress = source, settings, work, progress
        self.files = source.files
        self.in_bytes = settings.tokenizer == "byte"
        self.checked = True

    def run(self, scanned: Scanned) -> None:
        from minrnn_cli.tasks.corpus.prepare import FORMAT_VERSION, META, carve_counts, saved_vocabulary, split_encoder

        self.checked = scanned.checked
        stats = file_stats(self.files)
        total = sum(scanned.units)
        train, val, test = carve_counts(total, self.settings.val_fraction, self.settings.test_fraction)
        splits = [Split("train", 0, train), Split("val", train, train + val)]
        if self.settings.test_fraction:
            splits.append(Split("test", train + val, total))
        for split in splits:
            if split.high <= split.low:
                raise UserError(f"{self.source.key}: the {split.name} split is empty; give more text or other "
                                "split settings")
        codec = self.make_codec(splits[0])
        encoder, dtype = split_encoder(codec)
        self.progress("tokenising the splits")
        self.write_splits(splits, encoder, dtype)
        for split in splits:
            if split.tokens == 0:
                raise UserError(f"{self.source.key}: the {split.name} split has no tokens; give more text")
        vocabulary = saved_vocabulary(codec, sum(split.unknown for split in splits[1:]), self.work)
        if file_stats(self.files) != stats:
            raise UserError(f"{self.source.key} changed while it was being prepared; run again once it is written")
        meta = {"version": FORMAT_VERSION, "dtype": dtype, "vocabulary": vocabulary,
                "splits": {split.name: {"tokens": split.tokens, "bytes": split.bytes} for split in splits},
                "source": self.source.key, "fingerprint": self.source.fingerprint,
                "settings": {**self.settings.__dict__, "separator": ""}}
        (self.work / META).write_text(json.dumps(meta, indent=1, default=str))

    # ---- the stream of the files' text, cut into splits ----

    def stretches(self, splits: list[Split], lines: bool = False, stop: int | None = None):
        """(split, raw bytes or None, text or None) of each chunk's part in each split, in order (`lines`:
        chunks end at line ends, file ends included; `stop`: units after which reading ends). `raw` is given
        when the part is its chunk's whole raw bytes (its byte count is then free) or for the byte tokenizer."""
        offset = 0
        for path in self.files:
            if lines:
                chunks = line_chunks(path, BPE_CHUNK)
            elif self.in_bytes and self.checked:
                chunks = raw_chunks(path)
            else:
                chunks = decoded_chunks(path, text=not self.in_bytes)
            for raw, text in chunks:
                if not self.checked and b"\r" in raw:
                    raise CarriageReturns
                units = len(raw) if self.in_bytes else len(text)
                low, high = offset, offset + units
                offset = high
                for split in splits:
                    a, b = max(split.low, low) - low, min(split.high, high) - low
                    if b <= a:
                        continue
                    if self.in_bytes:
                        yield split, raw[a:b] if (a, b) != (0, units) else raw, None
                    elif (a, b) == (0, units):
                        yield split, raw, text
                    else:
                        yield split, None, text[a:b]
                if stop is not None and offset >= stop:
                    return

    def write_splits(self, splits: list[Split], codec, dtype: str) -> None:
        handles = {}
        try:
            for split, raw, text in self.stretches(splits, lines=isinstance(codec, BPECodec)):
                if split.name not in handles:
                    for handle in handles.values():
                        handle.close()
                    handles = {split.name: (self.work / f"{split.name}.bin").open("wb")}
                self.write_part(split, raw, text, codec, dtype, handles[split.name])
        finally:
            for handle in handles.values():
                handle.close()
        for split in splits:
            if not (self.work / f"{split.name}.bin").exists():
                (self.work / f"{split.name}.bin").touch()

    def write_part(self, split: Split, raw: bytes | None, text: str | None, codec, dtype: str, handle) -> None:
        if isinstance(codec, ByteCodec):
            ids = np.frombuffer(raw, dtype=np.uint8)
        elif isinstance(codec, CharCodec):
            ids = codec.encode(text)
            split.unknown += int(np.count_nonzero(ids == len(codec.chars)))
        else:
            encoded = codec.encode_batch(rows(text))
            ids = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int64)
        ids.astype(dtype).tofile(handle)
        split.tokens += len(ids)
        split.bytes += len(raw) if raw is not None else len(text.encode("utf-8"))

    # ---- vocabularies ----

    def make_codec(self, train: Split):
        spec = self.settings.tokenizer
        if spec == "byte":
            return ByteCodec()
        if spec == "char":
            self.progress("collecting the training split's characters")
            seen = np.zeros(0x110000, dtype=bool)
            for _, _, text in self.stretches([train], stop=train.high):
                seen[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)] = True
            return CharCodec([chr(code) for code in np.flatnonzero(seen)])
        # encode_batch's own threads, num_proc of them (no worker processes here)
        os.environ["TOKENIZERS_PARALLELISM"] = "true" if self.settings.num_proc > 1 else "false"
        os.environ.setdefault("RAYON_RS_NUM_CPUS", str(self.settings.num_proc))
        limit = getattr(self.settings, "bpe_train_bytes", None)
        self.progress(f"training a BPE tokenizer ({self.settings.vocab_size:,} ids) on the training split" +
                      (f" (at most {limit / 1e6:,.0f} MB of it)" if limit else ""))
        return BPECodec(train_bpe(self.training_text(train, limit), self.settings.vocab_size))

    def training_text(self, train: Split, limit: int | None) -> Iterator[list[str]]:
        """Batches of the training split's rows: all of them, or at most `limit` bytes of whole lines in
        BLOCK-sized stretches at evenly spaced offsets when the split is larger."""
        sizes = [path.stat().st_size for path in self.files]
        if not limit or sum(sizes) <= limit or (train_bytes := self.train_bytes(train)) <= limit:
            for _, _, text in self.stretches([train], lines=True, stop=train.high):
                yield rows(text)
            return
        count = max(limit // BLOCK, 1)
        step = (train_bytes - BLOCK) / max(count - 1, 1)
        starts = np.cumsum([0, *sizes])
        for block in range(count):
            at = int(block * step)
            index = int(np.searchsorted(starts, at, side="right") - 1)
            offset = at - int(starts[index])
            end = min(int(starts[index + 1]), train_bytes) - int(starts[index])
            with self.files[index].open("rb") as handle:
                handle.seek(offset)
                raw = handle.read(min(BLOCK, end - offset))
            if offset > 0:  # whole lines only: from the first line that starts in the block
                raw = raw[raw.find(b"\n") + 1:] if b"\n" in raw else b""
            if offset + BLOCK < end:
                raw = raw[:raw.rfind(b"\n") + 1]
            if raw:
                yield rows(raw.decode("utf-8"))

    def train_bytes(self, train: Split) -> int:
        """The training split's UTF-8 bytes."""
        if self.in_bytes:
            return train.high
        return sum(len(raw) if raw is not None else len(text.encode("utf-8"))
                   for _, raw, text in self.stretches([train], stop=train.high))
