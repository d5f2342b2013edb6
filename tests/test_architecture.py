"""The package's shape, checked: which layer imports which, Hydra kept to minrnn_cli.hydra_app (and its
private API to one module), and the recipes of docs/ARCHITECTURE.md for adding a model and a task."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAINER, only_run_dir, run_minrnn, run_ok
from torch import nn

from minrnn_cli.models import TokenHead
from minrnn_cli.models.registry import MODELS, ModelEntry, number
from minrnn_cli.tasks import TASKS, TaskEntry
from minrnn_cli.tasks.base import Task

PACKAGE = Path(__file__).resolve().parents[1] / "minrnn_cli"
HYDRA_FREE = ("scans", "models", "tasks", "training", "tracking", "reporting", "benchmarking")


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules_of(package: str) -> list[Path]:
    return sorted((PACKAGE / package).rglob("*.py"))


@pytest.mark.parametrize(("package", "forbidden"), [
    ("scans", ("minrnn_cli.models", "minrnn_cli.tasks", "minrnn_cli.training", "minrnn_cli.tracking")),
    ("models", ("minrnn_cli.tasks", "minrnn_cli.training", "minrnn_cli.tracking")),
    ("tasks", ("minrnn_cli.training", "minrnn_cli.tracking", "minrnn_cli.benchmarking")),
    ("tracking", ("minrnn_cli.training", "minrnn_cli.tasks")),
    ("benchmarking", ("minrnn_cli.training", "minrnn_cli.tasks", "minrnn_cli.tracking")),
])
def test_a_layer_imports_nothing_from_the_layers_above_it(package, forbidden):
    for path in modules_of(package):
        above = sorted(name for name in imported_modules(path) if name.startswith(forbidden))
        assert not above, f"{path.relative_to(PACKAGE)} imports {above}"


@pytest.mark.parametrize("package", HYDRA_FREE)
def test_only_hydra_app_imports_hydra(package):
    for path in modules_of(package):
        hydra = sorted(name for name in imported_modules(path) if name.split(".")[0] == "hydra")
        assert not hydra, f"{path.relative_to(PACKAGE)} imports {hydra}"


def test_hydra_private_api_is_used_by_one_module_only():
    users = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
             if any(name.startswith("hydra._internal") for name in imported_modules(path))]
    assert users == ["hydra_app/internals.py"]


def test_every_hydra_free_module_imports_with_hydra_unimportable():
    """As on a machine without hydra-core: every module of the Hydra-free layers imports."""
    modules = [".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
               for package in HYDRA_FREE for path in modules_of(package)
               if "triton_scan" not in path.parts and path.name != "__main__.py"]
    script = ("import importlib, sys\nsys.modules['hydra'] = None\n"
              f"for name in {modules!r}:\n    importlib.import_module(name)\n"
              "assert not any(m == 'hydra' or m.startswith('hydra.') for m in sys.modules if sys.modules[m])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_hydra_internals_we_call_exist_with_the_signatures_we_use():
    from minrnn_cli.hydra_app import internals

    internals.check_version()
    assert internals.signatures_match()


def test_reported_errors_wraps_hydras_reporting_and_restores_it(monkeypatch):
    import hydra._internal.utils as hydra_utils

    from minrnn_cli.hydra_app import internals

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    original = hydra_utils.run_and_report
    with internals.reported_errors(lambda function: ("shaped", function())):
        assert hydra_utils.run_and_report(lambda: 1) == ("shaped", 1)
    assert hydra_utils.run_and_report is original


def test_an_unsupported_hydra_version_is_refused(monkeypatch):
    import hydra

    from minrnn_cli.hydra_app import internals

    monkeypatch.setattr(hydra, "__version__", "1.4.0.dev9")
    with pytest.raises(RuntimeError, match=">=1.3,<1.4"):
        internals.check_version()


def test_tasks_declare_their_metric_direction_and_head():
    from conftest import make_task

    from minrnn_cli.models.heads import ClassHead

    shakespeare, listops = make_task("shakespeare", seq_len=8, batch_size=2), make_task("listops")
    assert (shakespeare.primary_metric, shakespeare.higher_is_better, shakespeare.head) == ("loss", False,
                                                                                              TokenHead(65))
    assert (listops.primary_metric, listops.higher_is_better) == ("accuracy", True)
    assert listops.head == ClassHead(16, 10, "last", pad_token=0)


# ---- the recipes: a throwaway model and task, added as docs/ARCHITECTURE.md says --------------------------

class RunningMean(nn.Module):
    """A toy mixer: the causal running mean of a projection, its state the running (sum, count)."""

    def __init__(self, d_model: int, scale: float = 1.0):
        super().__init__()
        self.proj, self.scale = nn.Linear(d_model, d_model), scale

    def forward(self, x, state=None):
        total, count = (torch.zeros_like(x[:, 0]), 0) if state is None else state
        sums = total[:, None] + self.proj(x).cumsum(1)
        counts = count + torch.arange(1, x.shape[1] + 1, device=x.device)[None, :, None]
        return self.scale * sums / counts, (sums[:, -1], count + x.shape[1])

    def step(self, x_t, state=None):
        y, state = self(x_t[:, None], state)
        return y[:, 0], state


class PreviousToken(Task):
    """A toy task: predict the token before the current one."""

    name = "previous_token"
    splits = ("val",)

    def __init__(self, *, vocab_size: int, seq_len: int, batch_size: int):
        self.vocab_size, self.seq_len, self.batch_size = vocab_size, seq_len, batch_size
        self.head = TokenHead(vocab_size)

    @property
    def tokens_per_batch(self) -> int:
        return self.batch_size * self.seq_len

    def train_batch(self, generator):
        tokens = torch.randint(self.vocab_size, (self.batch_size, self.seq_len + 1), generator=generator)
        return tokens[:, 1:], tokens[:, :-1]

    def eval_set(self, split):
        return self.fixed_batches(split, lambda: [self.train_batch(torch.Generator().manual_seed(0))])


def test_a_model_and_a_task_added_by_the_recipe_train_from_the_cli(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, "running_mean", ModelEntry(RunningMean, {"scale": number(above=0)}))
    monkeypatch.setitem(TASKS, "previous_token", TaskEntry(f"{__name__}:PreviousToken"))
    configs = tmp_path / "my_configs"
    (configs / "model").mkdir(parents=True)
    (configs / "task").mkdir()
    (configs / "model" / "running_mean.yaml").write_text(
        "defaults:\n  - base/blocks@_here_\n  - _self_\n\nname: running_mean\nscale: 1.0\n")
    (configs / "task" / "previous_token.yaml").write_text(
        "name: previous_token\nvocab_size: 5\nseq_len: 12\nbatch_size: 4\n")
    run_ok(tmp_path, "train", "-cd", str(configs), "model=running_mean", "task=previous_token",
           "model.d_model=8", "model.n_layers=1", *TINY_TRAINER)
    results = json.loads((only_run_dir(tmp_path) / "results.json").read_text())
    assert (results["model"], results["task"], results["steps"]) == ("running_mean", "previous_token", 6)
    refused = run_minrnn(tmp_path, "train", "-cd", str(configs), "model=running_mean", "task=previous_token",
                         "model.scale=-1", *TINY_TRAINER)
    # the registry's table checks the new option like any other
    assert refused.exit_code == 2 and "model.scale=-1 is invalid: it must be a number > 0" in refused.stderr
