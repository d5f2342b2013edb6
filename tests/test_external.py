"""Tasks needing outside data: one-line errors without it, and LRA Image read from a CIFAR-10 layout
(LRA Retrieval and D4RL have tests of their own)."""

import pickle

import pytest
import torch
from conftest import make_task

from minrnn_cli.errors import UserError
from minrnn_cli.tasks.external import CIFAR_TEST_FILE, CIFAR_TRAIN_FILES
from minrnn_cli.training.model_setup import build_task_model


@pytest.mark.parametrize("name", ["lra_image", "lra_retrieval", "d4rl"])
def test_without_data_the_error_says_what_is_needed_and_where(name):
    with pytest.raises(UserError, match="task.data_path") as caught:
        make_task(name, data_path=None)
    assert "\n" not in str(caught.value) and "downloads nothing" in str(caught.value)


def test_a_folder_missing_files_names_them(tmp_path):
    with pytest.raises(UserError, match="lacks new_aan_pairs.train.tsv"):
        make_task("lra_retrieval", data_path=str(tmp_path))


def write_cifar_batch(path, images: torch.Tensor, labels: list[int]) -> None:
    with path.open("wb") as handle:
        pickle.dump({b"data": images.numpy(), b"labels": labels}, handle)


def test_lra_image_reads_cifar_as_grey_pixel_tokens(tmp_path):
    generator = torch.Generator().manual_seed(0)
    for name in (*CIFAR_TRAIN_FILES, CIFAR_TEST_FILE):
        images = torch.randint(0, 256, (4, 3072), generator=generator, dtype=torch.uint8)
        write_cifar_batch(tmp_path / name, images, [1, 2, 3, 4])
    pure = torch.zeros(4, 3072, dtype=torch.uint8)
    pure[:, :1024], pure[:, 1024:2048], pure[:, 2048:] = 100, 200, 50  # one colour: R 100, G 200, B 50
    write_cifar_batch(tmp_path / CIFAR_TEST_FILE, pure, [0, 9, 5, 5])

    task = make_task("lra_image", data_path=str(tmp_path), batch_size=3, val_size=2)
    inputs, labels = task.eval_set("test")[0]
    grey = int(0.2989 * 100 + 0.5870 * 200 + 0.1140 * 50)
    assert inputs.shape == (3, 1024) and (inputs == grey + 1).all() and labels.tolist() == [0, 9, 5]
    assert sum(len(y) for _, y in task.eval_set("val")) == 2 and len(task.train[1]) == 18
    model = build_task_model({"name": "mingru", "d_model": 8, "n_layers": 1}, task)
    logits, _ = model(task.train_batch(torch.Generator().manual_seed(1))[0])
    assert logits.shape == (3, 10)
