"""Preparing a text task's corpus (`minrnn prepare`, and a run's first use), apart from tasks/text.py so that
neither imports torch: `minrnn prepare` starts in a fraction of the time."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from minrnn_cli.errors import UserError, require_flag
from minrnn_cli.paths import shakespeare_path

log = logging.getLogger("minrnn_cli.tasks.text")

TEXT_TASK = "minrnn_cli.tasks.text:TextTask"
PACKAGED = {"shakespeare": shakespeare_path}  # presets whose corpus ships inside the package (data_files=null)


def prepare_corpus(*, name: str, dataset, dataset_config, data_files, text_column, tokenizer, vocab_size,
                   split_names, val_fraction, test_fraction, separator, num_proc, download, bpe_train_bytes=None,
                   **_):
    """The task's prepared corpus (tasks.corpus.prepare.Prepared), made now with a progress display if the
    cache lacks it."""
    from minrnn_cli.tasks.corpus.prepare import Settings, prepare
    from minrnn_cli.tasks.corpus.sources import load_source

    packaged = PACKAGED[name]() if name in PACKAGED else None
    source = load_source(dataset=dataset, dataset_config=dataset_config, data_files=data_files,
                         download=require_flag("task.download", download), packaged=packaged, task=name)
    settings = Settings(text_column=text_column, tokenizer=str(tokenizer), vocab_size=vocab_size,
                        split_names=dict(split_names) if split_names is not None else None,
                        val_fraction=val_fraction, test_fraction=test_fraction, separator=separator,
                        num_proc=num_proc, bpe_train_bytes=bpe_train_bytes)
    with progress_display(source.key) as progress:
        return prepare(source, settings, progress)


@contextlib.contextmanager
def progress_display(what: str) -> Iterator:
    """A callback told each stage of a preparation: a rich progress bar on a terminal, log lines elsewhere.
    Nothing shows when the cache already holds the corpus."""
    state = {}

    def stage(text: str) -> None:
        if "started" not in state:
            state["started"] = True
            log.info(f"preparing the corpus of {what} (once: later runs read it from the cache)")
            if sys.stderr.isatty():
                from rich.console import Console
                from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

                bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                               console=Console(stderr=True), transient=True)
                bar.start()
                state["bar"], state["task"] = bar, bar.add_task(text, total=None)
        if "bar" in state:
            state["bar"].update(state["task"], description=text)
        else:
            log.info(text)

    try:
        yield stage
    finally:
        if "bar" in state:
            state["bar"].stop()


def prepare_job(task_cfg) -> dict:
    """`minrnn prepare`: the task's corpus in the cache; a summary of what is there."""
    options = dict(task_cfg)
    name = options.get("name")
    from minrnn_cli.tasks import TASKS

    if name not in TASKS or TASKS[name].factory != TEXT_TASK:
        texts = ", ".join(task for task, entry in TASKS.items() if entry.factory == TEXT_TASK)
        raise UserError(f"task={name} has no corpus to prepare; choose a text task: {texts}")
    corpus = prepare_corpus(**options)
    return {"folder": str(corpus.folder), "tokenizer": corpus.codec.kind, "vocab_size": corpus.codec.vocab_size,
            "dtype": corpus.meta["dtype"], **{f"{split}_{key}": value for split, counts in corpus.meta["splits"].items()
                                              for key, value in counts.items()}}
