"""Where a corpus's rows come from, all through HF datasets: local files (txt, jsonl/json, csv, parquet,
arrow; one, a list or globs), a folder written by `Dataset.save_to_disk`, or a Hub dataset by name (read from
the local HF cache unless `task.download=true`). The Arrow tables stay memory-mapped: no text is read whole.

Text files (.txt, or any suffix the other builders do not take, such as enwik8's none) are read line by line
with their line breaks kept, so the rows concatenated give each file back exactly. Their Source is made from
the files' stats alone: corpus.direct reads them itself, and HF datasets loads them only when asked
(`Source.splits`), so a run that finds their corpus prepared neither reads them nor imports datasets.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import logging
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from minrnn_cli.errors import UserError

log = logging.getLogger(__name__)

BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet",
            ".arrow": "arrow"}
TEXT_CHUNK = 1 << 20  # bytes of a text file checked at a time
TEXT_TYPES = ("string", "large_string")
DOWNLOAD_HINT = "task.download=true fetches it"
MISSING_CORPUS = {"enwik8": "task enwik8 needs the enwik8 file: unzip http://mattmahoney.net/dc/enwik8.zip and pass "
                            "task.data_files=PATH/enwik8 (minrnn downloads nothing)"}


@dataclass
class Source:
    loaded: dict | None  # the dataset's own splits: {name: datasets.Dataset}; None: not loaded yet (files)
    key: str  # the option that named it, for messages: "task.data_files=a.txt"
    fingerprint: str  # changes whenever the rows may have changed
    text_files: bool  # rows are lines of text files (the automatic separator is then "")
    files: list[Path] | None = None  # the text files themselves (read directly by corpus.direct, no datasets)

    @property
    def splits(self) -> dict:
        """The splits through HF datasets (a text-files source loads them at the first use only: a prepared
        corpus found in the cache never needs them)."""
        if self.loaded is None:
            self.loaded = load_text_files(self.files, self.key)
        return self.loaded


def load_source(*, dataset: str | None, dataset_config: str | None, data_files, download: bool,
                packaged: Path | None = None, task: str = "text") -> Source:
    """The rows named by task.dataset or task.data_files (`packaged`: the file used when both are null;
    `task`: the task's name, for the error when neither is given)."""
    if dataset and data_files:
        raise UserError(f"task.dataset={dataset} and task.data_files={data_files} are both set; give one of them")
    set_offline(not download)
    if dataset:
        folder = Path(dataset).expanduser()
        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            return from_disk(folder)
        return from_hub(dataset, dataset_config, download)
    if data_files is None and packaged is None:
        if task in MISSING_CORPUS:
            raise UserError(MISSING_CORPUS[task])
        raise UserError(f"task {task} needs a corpus: task.data_files=PATH (txt, jsonl, csv, parquet, arrow; globs "
                        "and lists too) or task.dataset=NAME (a Hub dataset or a save_to_disk folder)")
    if data_files is None:
        return from_files([packaged], f"the packaged {packaged.name}")
    return from_files(resolve_files(data_files), f"task.data_files={data_files}")


def set_offline(offline: bool) -> None:
    """HF datasets and the Hub client offline (or not) for this process, imported already or not."""
    value = "1" if offline else "0"
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = value
    if "datasets" in sys.modules:  # its config read the variable at import
        sys.modules["datasets"].config.HF_HUB_OFFLINE = offline
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = offline


def resolve_files(data_files) -> list[Path]:
    """task.data_files as a list of files: a path, a glob or a list of them, each matching something."""
    try:
        given = [data_files] if isinstance(data_files, str) else list(data_files)
    except TypeError:  # a number, true/false: not a path
        given = [data_files]
    if not given or not all(isinstance(item, str) and item for item in given):
        raise UserError(f"task.data_files={data_files!r} is invalid: give a path, a glob or a list of them")
    files = []
    for item in given:
        pattern = os.path.expanduser(item)
        if glob.has_magic(pattern):
            matched = sorted(glob.glob(pattern, recursive=True))
            if not matched:
                raise UserError(f"task.data_files={item} matches no file; check the path and the pattern")
            files += [Path(path) for path in matched]
        else:
            files.append(Path(pattern))
    return files


def builder_of(path: Path) -> str:
    return BUILDERS.get(path.suffix.lower(), "text")


def import_datasets():
    import datasets

    datasets.disable_progress_bars()
    return datasets


def file_stats(files: list[Path]) -> list[tuple]:
    """What identifies the files' contents without reading them: path, size, mtime_ns, ctime_ns and inode
    (a rewrite changes the times; one within the filesystem's clock tick is caught by corpus.direct's check of
    "racy" entries)."""
    stats = []
    for path in files:
        info = path.stat()
        stats.append((str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino))
    return stats


def from_files(files: list[Path], key: str) -> Source:
    builders = {builder_of(path) for path in files}
    if len(builders) > 1:
        raise UserError(f"{key} mixes file kinds ({', '.join(sorted(builders))}); give files of one kind")
    builder = builders.pop()
    if builder == "text":  # read directly when prepared (corpus.direct); the key from the files' stats alone
        for path in files:
            check_file(path, text=True, content=False)  # exists, a regular file, not empty: its text is checked
            # when it is read
        stats = file_stats(files)
        fingerprint = hashlib.sha256(repr(("text-files", stats)).encode()).hexdigest()
        return Source(None, key, fingerprint, True, files=list(files))
    for path in files:
        check_file(path, text=False)
    datasets = import_datasets()
    try:
        loaded = datasets.load_dataset(builder, data_files=[str(path) for path in files])
    except (ValueError, OSError, datasets.exceptions.DatasetGenerationError) as error:
        raise UserError(f"{key}: not readable as {builder} ({one_line(error)})") from None
    stats = [(str(path.resolve()), path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    return Source(dict(loaded), key, fingerprint_of(loaded, stats), False)


def load_text_files(files: list[Path], key: str) -> dict:
    """Text files through HF datasets' text builder: one row per line, line breaks kept."""
    for path in files:
        if check_file(path, text=True):
            log.warning(f"{path} has carriage returns: HF datasets' text builder reads \\r\\n and \\r as \\n, so "
                        "the corpus is this file with \\n line breaks")
    datasets = import_datasets()
    try:
        loaded = datasets.load_dataset("text", data_files=[str(path) for path in files], sample_by="line",
                                       keep_linebreaks=True)
    except (ValueError, OSError, datasets.exceptions.DatasetGenerationError) as error:
        raise UserError(f"{key}: not readable as text ({one_line(error)})") from None
    return dict(loaded)


def from_disk(folder: Path) -> Source:
    datasets = import_datasets()

    try:
        loaded = datasets.load_from_disk(str(folder))
    except (ValueError, OSError) as error:
        raise UserError(f"task.dataset={folder}: not a readable save_to_disk folder ({one_line(error)})") from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    return Source(splits, f"task.dataset={folder}", fingerprint_of(splits, []), False)


def from_hub(name: str, config: str | None, download: bool) -> Source:
    datasets = import_datasets()

    try:
        loaded = datasets.load_dataset(name, config)
    except Exception as error:  # the Hub client's errors have no common base: each becomes one line
        advice = "check the name and the network" if download else f"it is not in the local HF cache; " \
            f"{DOWNLOAD_HINT}"
        raise UserError(f"task.dataset={name}" + (f" (config {config})" if config else "") +
                        f" cannot be loaded ({type(error).__name__}: {one_line(error)}); {advice}") from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    return Source(splits, f"task.dataset={name}", fingerprint_of(splits, []), False)


def fingerprint_of(splits, extra: list) -> str:
    """HF datasets' fingerprints of the splits, with the files' sizes and times where files were read."""
    parts = [f"{name}:{split._fingerprint}" for name, split in sorted(splits.items())]
    return hashlib.sha256(repr((parts, extra)).encode()).hexdigest()


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def text_column(split, column: str, source: Source, split_name: str) -> None:
    """A one-line UserError unless `column` is a text column of `split` (naming the columns it has)."""
    features = split.features
    if column not in features:
        where = f"{source.key} ({split_name} split)" if split_name in source.splits else source.key
        raise UserError(f"task.text_column={column}: {where} has no such column; its "
                        f"columns are {', '.join(features) or 'none'}")
    dtype = getattr(features[column], "dtype", None)
    if dtype not in TEXT_TYPES:
        texts = [name for name, feature in features.items() if getattr(feature, "dtype", None) in TEXT_TYPES]
        raise UserError(f"task.text_column={column}: the column of {source.key} is {dtype or features[column]}, "
                        f"not text; its text columns are {', '.join(texts) or 'none'}")


def check_file(path: Path, text: bool, content: bool = True) -> bool:
    """A one-line UserError unless `path` is a readable, non-empty regular file, and for a text file UTF-8
    without NUL bytes; whether the text holds carriage returns. Read in chunks, so a binary file is refused at
    its first chunk and memory stays flat; a pipe or device is never opened. `content=False`: the file's stats
    only (corpus.direct checks the text as it reads it)."""
    key = f"task.data_files={path}"
    wanted = "give a readable UTF-8 text file" if text else "give a readable file"
    try:
        mode, size = path.stat().st_mode, path.stat().st_size
    except OSError as error:
        raise UserError(f"{key}: cannot read it ({error.strerror or error}); {wanted}") from None
    if stat.S_ISDIR(mode):
        raise UserError(f"{key}: cannot read it (Is a directory); {wanted}")
    if not stat.S_ISREG(mode):
        raise UserError(f"{key} is not a regular file (a pipe, socket or device); {wanted}")
    if size == 0:
        raise UserError(f"{key} is empty; {wanted}")
    if not text or not content:
        return False
    decoder, read, given_from, returns = codecs.getincrementaldecoder("utf-8")(), 0, 0, False
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(TEXT_CHUNK):
                if b"\x00" in chunk:
                    raise UserError(f"{key} looks binary (it holds NUL bytes); {wanted}")
                given_from = read - len(decoder.getstate()[0])  # the decoder keeps a split character's bytes
                decoder.decode(chunk)
                read += len(chunk)
                returns = returns or b"\r" in chunk
            given_from = read - len(decoder.getstate()[0])
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as error:
        raise UserError(f"{key} is not UTF-8 text (byte {given_from + error.start}); {wanted}") from None
    except OSError as error:
        raise UserError(f"{key}: cannot read it ({error.strerror or error}); {wanted}") from None
    return returns
