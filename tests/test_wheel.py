"""The built wheel works on its own: installed (not editable) into a fresh venv and run from another
folder, `minrnn` finds its configs and the bundled Tiny Shakespeare inside the installed package.

No network: the wheel is built without build isolation (hatchling comes with the dev extra), and the fresh
venv borrows this venv's dependencies through a .pth file instead of downloading them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(args: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{args}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("hatchling", reason="the dev extra installs hatchling, which builds the wheel")
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
         "--wheel-dir", dist, REPO], cwd=dist)
    (built,) = dist.glob("minrnn_cli-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel (bin/ is returned); dependencies resolve from this venv's site-packages."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv)
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv)
                .stdout.strip())
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel],
        cwd=venv)
    return venv / "bin"


def clean_env(bin_dir: Path) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "200"
    return env


def test_wheel_ships_every_config_and_the_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {name.removeprefix("minrnn_cli/conf/") for name in names if name.startswith("minrnn_cli/conf/")}
    in_repo = {path.relative_to(REPO / "conf").as_posix() for path in (REPO / "conf").rglob("*.yaml")}
    assert in_repo and in_repo <= shipped
    assert "minrnn_cli/data/tinyshakespeare.txt" in names
    assert "minrnn_cli/scans/fused/cpu_kernels.c" in names  # compiled at first use on the user's machine
    assert "minrnn_cli/cli.py" in names and not any(name.startswith("tests/") for name in names)


def test_installed_wheel_composes_its_configs_from_another_folder(installed, tmp_path):
    env = clean_env(installed)
    located = run([installed / "python", "-c", "import minrnn_cli.paths as p; print(p.config_dir())"],
                  cwd=tmp_path, env=env).stdout.strip()
    assert Path(located).is_relative_to(installed.parent) and not Path(located).is_relative_to(REPO)

    job = run([installed / "minrnn", "train", "--cfg", "job", "model=minlstm"], cwd=tmp_path, env=env).stdout
    assert "name: minlstm" in job and "name: shakespeare" in job and "max_steps:" in job
    searchpath = run([installed / "minrnn", "train", "--info", "searchpath"], cwd=tmp_path, env=env).stdout
    assert f"file://{located}" in searchpath
    assert not (tmp_path / "outputs").exists()


def test_installed_wheel_trains_on_the_bundled_text(installed, tmp_path):
    run([installed / "minrnn", "train", "model.d_model=16", "model.n_layers=1", "task.seq_len=16",
         "task.batch_size=4", "task.eval_batches=1", "task.sample_chars=10", "trainer.max_steps=2",
         "trainer.eval_every=2", "trainer.device=cpu", "logger=none"], cwd=tmp_path, env=clean_env(installed))
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 2 and results["task"] == "shakespeare" and results["val_loss"] > 0
