"""Where the package's shipped files live, in a source checkout and after `pip install .` alike."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The Hydra config folder: `minrnn_cli/conf` in a wheel, the top-level `conf/` in a checkout."""
    for candidate in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"minrnn's config folder is missing (looked in {PACKAGE_DIR}/conf and ../conf)")


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
    """{group: [options]} for every config group folder of `root` (default: minrnn's own) a user chooses from."""
    root = root or config_dir()
    groups = {}
    for folder in sorted(path for path in root.iterdir() if path.is_dir() and is_user_group(path.name)):
        options = sorted(path.stem for path in folder.glob("*.yaml"))
        if options:
            groups[folder.name] = options
    return groups
