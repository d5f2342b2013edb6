"""Text to token ids and back: characters, bytes or BPE (the `tokenizers` library), and each to and from the
vocabulary dict a checkpoint carries, so `minrnn generate` decodes any model without the corpus.

    {"chars": [...]}                                   characters (checkpoints before corpora: this alone)
    {"tokenizer": "char", "chars": [...], "unk": bool}  characters; `unk`: one more id for unseen characters
    {"tokenizer": "byte"}                              the 256 byte values
    {"tokenizer": "bpe", "tokenizer_json": "..."}      a tokenizers.Tokenizer, saved whole
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from minrnn_cli.errors import UserError

KINDS = ("char", "byte", "bpe")
UNK = "<unk>"


class CharCodec:
    kind = "char"

    def __init__(self, chars: list[str], unk: bool = False):
        self.chars, self.unk = list(chars), unk
        self.vocab_size = len(self.chars) + unk
        self.table = None  # code point -> id (-1: not in the vocabulary), made at the first encode

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        if self.table is None:
            self.table = np.full(0x110000, -1, dtype=np.int32)
            self.table[[ord(char) for char in self.chars]] = np.arange(len(self.chars), dtype=np.int32)
        ids = self.table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
        unknown = ids < 0
        if unknown.any():
            if not self.unk:
                missing = sorted({text[i] for i in np.flatnonzero(unknown)[:1000]})
                raise UserError(f"{what} has characters outside the model's vocabulary: {''.join(missing)!r}")
            ids[unknown] = len(self.chars)
        return ids

    def decode(self, ids) -> str:
        return "".join(self.chars[i] if i < len(self.chars) else UNK for i in ids)

    def vocabulary(self) -> dict:
        return {"tokenizer": "char", "chars": self.chars, "unk": self.unk}


class ByteCodec:
    kind = "byte"
    vocab_size = 256

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")

    def vocabulary(self) -> dict:
        return {"tokenizer": "byte"}


class BPECodec:
    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()

    def encode(self, text: str, what: str = "text") -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text).ids, dtype=np.int64)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def vocabulary(self) -> dict:
        return {"tokenizer": "bpe", "tokenizer_json": self.tokenizer.to_str()}


def codec_from_vocabulary(vocabulary: dict, where: str):
    """The codec a checkpoint's vocabulary describes; None for a model that has no text (`where` names the
    checkpoint in the one-line error for a damaged one)."""
    kind = vocabulary.get("tokenizer", "char" if "chars" in vocabulary else None)
    if kind is None:
        return None
    if kind == "char":
        chars = vocabulary.get("chars")
        if not (isinstance(chars, list) and chars and all(isinstance(char, str) for char in chars)):
            raise UserError(f"{where} is damaged: its vocabulary's characters are not a list of text")
        return CharCodec(chars, bool(vocabulary.get("unk", False)))
    if kind == "byte":
        return ByteCodec()
    if kind == "bpe" and isinstance(vocabulary.get("tokenizer_json"), str):
        return BPECodec(parse_tokenizer(vocabulary["tokenizer_json"], where))
    raise UserError(f"{where} is damaged: its vocabulary names tokenizer {kind!r} without what it needs")


def parse_tokenizer(text: str, where: str):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_str(text)
    except Exception as error:  # the Rust side raises plain Exceptions
        raise UserError(f"{where} does not parse as a tokenizers tokenizer.json ({str(error).strip()[:120]})") \
            from None


def load_tokenizer(spec: str):
    """A tokenizer.json path, or the name of a tokenizer already in the local HF cache (never downloaded)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        path = path / "tokenizer.json"
    if path.is_file():
        return parse_tokenizer(read_text(path, spec), f"task.tokenizer={spec}")
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(spec, "tokenizer.json")
    except Exception:  # not a valid repository name: neither a file nor a cached name
        cached = None
    if not isinstance(cached, str):
        raise UserError(f"task.tokenizer={spec} is neither {', '.join(KINDS)}, a tokenizer.json file nor a tokenizer "
                        "in the local HF cache (nothing is downloaded: save its tokenizer.json and give the path)")
    return parse_tokenizer(read_text(Path(cached), spec), f"task.tokenizer={spec}")


def read_text(path: Path, spec: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"task.tokenizer={spec}: cannot read {path} ({error})") from None


def train_bpe(texts, vocab_size: int, length: int | None = None):
    """A byte-level BPE tokenizer trained on the text batches `texts` (offline), `vocab_size` ids in all."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer, length=length)
    return tokenizer
