"""Every experiment config composes, passes the config checks and builds its task and model."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from minrnn_cli.models import count_params
from minrnn_cli.paths import config_dir
from minrnn_cli.tasks import EXTERNAL_TASKS, TASK_NAMES, build_task
from minrnn_cli.training.model_setup import build_task_model
from minrnn_cli.training.settings import check_train_config

EXPERIMENT_DIR = config_dir() / "experiment"
EXPERIMENTS = sorted(  # experiment=NAME, and experiment=FOLDER/NAME for the suite's (not the base/ parts)
    path.relative_to(EXPERIMENT_DIR).with_suffix("").as_posix()
    for path in EXPERIMENT_DIR.rglob("*.yaml") if "base" not in path.relative_to(EXPERIMENT_DIR).parts)


def composed(*overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_every_paper_experiment_has_a_cpu_version_and_the_other_way_round():
    papers = {name.removeprefix("paper_") for name in EXPERIMENTS if name.startswith("paper_")}
    cpus = {name.removeprefix("cpu_") for name in EXPERIMENTS if name.startswith("cpu_")}
    assert cpus <= papers
    # Shakespeare's CPU run is the default train config; LRA's image and 4000-byte documents need a GPU
    assert papers - cpus <= {"shakespeare", "lra_image", "lra_retrieval"}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_builds(experiment):
    cfg = composed(f"experiment={experiment}", "logger=none")
    check_train_config(cfg)
    assert cfg.task.name in TASK_NAMES
    if cfg.task.name in EXTERNAL_TASKS:
        return  # needs data on disk
    task = build_task({**cfg.task, "eval_batches": 1})
    model = build_task_model(cfg.model, task)
    assert count_params(model) > 0


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("size", ["paper", "cpu"])
def test_selective_copying_depth_ablation_changes_only_the_depth(size, layers):
    base = composed(f"experiment={size}_selective_copying", "logger=none")
    ablation = composed(f"experiment={size}_selective_copying_{layers}layer", "logger=none")
    assert base.model.n_layers == 3 and ablation.model.n_layers == layers
    ablation.model.n_layers = 3
    assert ablation == base
