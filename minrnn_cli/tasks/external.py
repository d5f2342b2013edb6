"""Reading data the user supplies (nothing is downloaded at run time and nothing is made up), and LRA Image.

- lra_image: LRA's G-Image, grey-scale CIFAR-10 as 1024 pixel tokens, 10 classes. `task.data_path` is the
  `cifar-10-batches-py` folder of the CIFAR-10 python release (data_batch_1..5, test_batch).
- lra_retrieval (tasks.lra_retrieval) and d4rl (tasks.d4rl) check their paths with the helpers here.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import Tensor

from minrnn_cli.errors import UserError
from minrnn_cli.models.heads import ClassHead
from minrnn_cli.tasks.base import LabelledExamples, require_at_least, require_pool

CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch"
GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale, as LRA
PIXEL_LEVELS = 256


def required_folder(task: str, data_path: str | None, needs: str, files: tuple[str, ...]) -> Path:
    """The folder the user gave, holding every file the task reads; otherwise a one-line UserError."""
    if not data_path:
        raise UserError(f"task {task} needs {needs}: put them in a folder and pass task.data_path=FOLDER "
                        f"(expected files: {', '.join(files)}); minrnn downloads nothing")
    folder = Path(data_path).expanduser()
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise UserError(f"task.data_path={data_path!r} lacks {', '.join(missing)} (task {task} needs {needs})")
    return folder


def read_cifar_grey(path: Path) -> tuple[Tensor, Tensor]:
    """(images as (N, 1024) grey levels 0..255, labels (N,)) from one CIFAR-10 python batch file."""
    with path.open("rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    rgb = torch.as_tensor(batch[b"data"], dtype=torch.float32).view(-1, 3, 1024)
    grey = sum(weight * rgb[:, channel] for channel, weight in enumerate(GREY_WEIGHTS))
    return grey.floor().clamp(0, PIXEL_LEVELS - 1).long(), torch.as_tensor(batch[b"labels"])


class LRAImage(LabelledExamples):
    """Grey CIFAR-10 as a sequence of 1024 pixels; token = grey level + 1 (0 is reserved for padding, unused).
    The last `val_size` training images are the validation split, test_batch the test split."""

    name = "lra_image"

    def __init__(self, *, data_path: str | None, batch_size: int, val_size: int, eval_batches: int | None,
                 pool: str):
        folder = required_folder(self.name, data_path, "the CIFAR-10 python release (cifar-10-batches-py)",
                                 (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE))
        require_at_least("task.batch_size", batch_size, 1)
        require_at_least("task.val_size", val_size, 1)
        self.head = ClassHead(PIXEL_LEVELS + 1, 10, require_pool(pool), pad_token=0)
        parts = [read_cifar_grey(folder / name) for name in CIFAR_TRAIN_FILES]
        images, labels = torch.cat([p[0] for p in parts]) + 1, torch.cat([p[1] for p in parts])
        test_images, test_labels = read_cifar_grey(folder / CIFAR_TEST_FILE)
        self.train = (images[:-val_size], labels[:-val_size])
        self.held_out = {"val": (images[-val_size:], labels[-val_size:]), "test": (test_images + 1, test_labels)}
        self.batch_size, self.eval_batches = batch_size, eval_batches
        self.pixels = images.shape[1]

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.pixels

    def training_data(self) -> str:
        return f"{len(self.train[1]):,} training images"

    def train_batch(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        rows = torch.randint(len(self.train[1]), (self.batch_size,), generator=generator)
        return self.train[0][rows], self.train[1][rows]

    def eval_set(self, split: str) -> list[tuple[Tensor, Tensor]]:
        """The whole split in batches (the first `eval_batches` of them when that is set)."""
        images, labels = self.held_out[split]
        batches = list(zip(images.split(self.batch_size), labels.split(self.batch_size), strict=True))
        return batches[: self.eval_batches] if self.eval_batches else batches
