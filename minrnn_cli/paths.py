"""Where the package's shipped files live, in a source checkout and after `pip install .` alike, and where
every command's outputs go."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

# Every command writes under one outputs folder: the config key `outputs_dir`, whose default is the
# environment variable MINRNN_OUTPUTS, else `outputs` in the current folder. Inside it, one folder per run:
# <outputs>/<kind>/<timestamp> (the kind per command below), and <outputs>/multirun/<timestamp>/<job> for
# the jobs of a sweep of any command (conf/hydra/default.yaml).
OUTPUTS_ENV = "MINRNN_OUTPUTS"
DEFAULT_OUTPUTS = "outputs"
OUTPUT_KINDS = {"train": "runs", "eval": "evals", "generate": "samples", "bench": "bench"}
MULTIRUN = "multirun"


def outputs_dir(configured: str | Path | None = None) -> Path:
    """The outputs folder: `configured` (a config's `outputs_dir`), else $MINRNN_OUTPUTS, else ./outputs."""
    chosen = configured or os.environ.get(OUTPUTS_ENV) or DEFAULT_OUTPUTS
    return Path(chosen).expanduser()


def output_folder(configured: str | Path | None, command: str) -> str:
    """The folder a command's runs go to, e.g. <outputs>/runs for train, <outputs>/multirun for
    command="multirun" (Hydra's run and sweep folders, through the resolver `minrnn.output_folder`)."""
    return str(outputs_dir(configured) / OUTPUT_KINDS.get(command, command))


def config_dir() -> Path:
    """The Hydra config folder: `minrnn_cli/conf` in a wheel, the top-level `conf/` in a checkout."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"minrnn's config folder is missing (looked in {PACKAGE_DIR}/conf and ../conf)")


CACHE_ENV = "MINRNN_CACHE_DIR"


def cache_dir(kind: str) -> Path:
    """minrnn's cache folder for `kind` ("kernels", "corpora"): $MINRNN_CACHE_DIR/<kind>, else
    $XDG_CACHE_HOME/minrnn/<kind>, else ~/.cache/minrnn/<kind>."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / kind
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minrnn" / kind


def shakespeare_path() -> Path:
    """Tiny Shakespeare as shipped inside the package (no network needed)."""
    return PACKAGE_DIR / "data" / "tinyshakespeare.txt"


INTERNAL_GROUP_FOLDERS = ("hydra",)  # config groups that are not a user's choice
PARTS_FOLDER = "base"  # <group>/base/: pieces a group's options build on (experiment/base/cpu_chomsky), not options


def is_user_group(group: str) -> bool:
    """Whether a config group, named as Hydra does (`model`, `experiment/base`), is a user's choice: not hydra's
    own and no `base/` folder of parts. Help, completion and Hydra's `--help` list only these."""
    parts = group.split("/")
    return parts[0] not in INTERNAL_GROUP_FOLDERS and PARTS_FOLDER not in parts


def config_groups(root: Path | None = None) -> dict[str, list[str]]:
    """{group: [options]} for every config group folder of `root` (default: minrnn's own) a user chooses from,
    named as Hydra does: `experiment/suite_shakespeare` holds the options `experiment=suite_shakespeare/NAME`."""
    root = root or config_dir()
    groups = {}
    for folder in sorted(path for path in root.rglob("*") if path.is_dir()):
        group = folder.relative_to(root).as_posix()
        options = sorted(path.stem for path in folder.glob("*.yaml"))
        if options and is_user_group(group):
            groups[group] = options
    return groups
