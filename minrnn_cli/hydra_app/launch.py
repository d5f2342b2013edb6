"""From the CLI's tokens to a Hydra run: the argument list Hydra parses, the checks made before Hydra runs,
the task function it calls, and the configs registered from code (the bench's, from its dataclass)."""

from __future__ import annotations

import functools
import importlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from minrnn_cli.errors import UserError
from minrnn_cli.hydra_app import internals
from minrnn_cli.hydra_app.errors import check_run_flags, compact
from minrnn_cli.paths import DEFAULT_OUTPUTS, OUTPUTS_ENV, config_dir, config_groups, output_folder

HYDRA_INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")
STORED_CONFIGS = ("bench",)  # primary configs registered from code (register_configs), not YAML files


@dataclass(frozen=True)
class Launch:
    """What one command hands Hydra: its config name and its task function ("module:function")."""

    name: str
    config_name: str
    task_function: str
    runs_nothing: bool = False  # outputs go to a temporary folder, deleted afterwards


def primary_configs() -> list[str]:
    """The names a command's `--config-name` may take."""
    return sorted({*(path.stem for path in config_dir().glob("*.yaml")), *STORED_CONFIGS})


OUTPUTS_DIR_DEFAULT = "${oc.env:" + OUTPUTS_ENV + "," + DEFAULT_OUTPUTS + "}"  # as in conf/train.yaml


def output_folder_of(command: str, *, _root_) -> str:
    """`${minrnn.output_folder:COMMAND}`: the folder COMMAND's runs go to under the config's `outputs_dir`
    (its defaults where the config has none, as in `--cfg hydra`, which shows Hydra's part alone)."""
    return output_folder(_root_.get("outputs_dir"), command)


def register_configs() -> None:
    """The bench's settings as a primary config `bench`, built from BenchConfig's defaults: the dataclass is
    the one source (the torch-only `python -m minrnn_cli.benchmarking` has no Hydra to read YAML with); with
    minrnn's Hydra settings and `outputs_dir`, as every command has. And the resolver conf/hydra/default.yaml
    names its run and sweep folders with."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from minrnn_cli.benchmarking.config import BenchConfig

    OmegaConf.register_new_resolver("minrnn.output_folder", output_folder_of, replace=True)
    node = {"defaults": ["_self_", {"hydra": "default"}], **asdict(BenchConfig()),
            "outputs_dir": OUTPUTS_DIR_DEFAULT}
    ConfigStore.instance().store(name="bench", node=node)


def check_group_choices(overrides: list[str], extra_config_dir: str | None) -> None:
    """A one-line error for `model=nope` (Hydra's own message spans many lines)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for override in overrides:
        key = override.lstrip("~+").split("=", 1)[0]
        if "=" in override and not key:
            raise UserError(f"override {override!r} has no key: write key=value, e.g. trainer.max_steps=200")
        try:
            parsed += parser.parse_overrides([override])
        except OverrideParseException as error:
            raise UserError(describe_parse_error(override, error)) from None
    if any(override.key_or_group.startswith("hydra.searchpath") for override in parsed):
        return  # options may come from folders we do not see here
    groups = config_groups()
    if extra_config_dir and Path(extra_config_dir).is_dir():
        for group, options in config_groups(Path(extra_config_dir)).items():
            groups[group] = sorted({*groups.get(group, []), *options})
    for override in parsed:
        group = override.key_or_group
        if group not in groups or override.is_delete() or override.package:
            continue
        if override.is_sweep_override():
            try:
                values = list(override.sweep_string_iterator())
            except Exception:  # range() and interval() sweeps are not option lists
                continue
        else:
            values = [override.value()]
        for value in values:
            if isinstance(value, str) and value not in groups[group] and not nested_option(groups, group, value):
                raise UserError(f"unknown {group} {value!r}; choose one of {', '.join(groups[group])}")


def nested_option(groups: dict[str, list[str]], group: str, value: str) -> bool:
    """An option in a folder of the group (experiment=suite_shakespeare/mingru), not one of its `base/` parts."""
    folder, _, name = value.rpartition("/")
    return name in groups.get(f"{group}/{folder}", [])


def describe_parse_error(override: str, error: Exception) -> str:
    """One line for an override Hydra's grammar rejects, with the usual cause."""
    reason = str(error).splitlines()[0]
    if not override.isascii():
        key, _, value = override.partition("=")
        return (f"{override!r}: Hydra's overrides take non-ASCII characters only inside quotes; quote the value: "
                f"'{key}=\"{value}\"' ({reason})")
    key, _, value = override.partition("=")
    if value and value[0] not in "[{'\"" and '"' not in value and _parses(f'{key}="{value}"'):
        # a character Hydra's grammar keeps for itself (`~` of a home folder, `#`, `&`, ...)
        kept = ", ".join(repr(char) for char in sorted({char for char in value
                                                          if not char.isalnum() and not _parses(f"k=a{char}b")}))
        return (f"{override!r}: Hydra's overrides take {kept} only inside quotes; quote the value: "
                f"'{key}=\"{value}\"' ({reason})")
    return f"{override!r} is not a valid override ({reason}); check its brackets and quotes (lists: key=[a,b])"


def _parses(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        OverridesParser.create().parse_overrides([override])
    except OverrideParseException:
        return False
    return True


def hydra_argv(tokens: list[str], multirun: bool, launch: Launch, scratch: Path | None) -> list[str]:
    """The argument list for Hydra's parser: the user's tokens, our fixed overrides, `--multirun`."""
    argv = list(tokens)
    for i, token in enumerate(argv):
        # `--info` takes an optional topic: keep it from swallowing an override that follows it
        if token == "--info" and i + 1 < len(argv) and argv[i + 1] not in HYDRA_INFO_TOPICS:
            argv.append(argv.pop(i))
            break
    argv.insert(0, f"hydra.job.name={launch.name}")
    if scratch is not None:
        argv += [f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}", "hydra.output_subdir=null",
                 "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    if multirun:
        argv.append("--multirun")
    return argv


def load_task_function(spec: str) -> Callable:
    module_name, _, function_name = spec.partition(":")
    return getattr(importlib.import_module(module_name), function_name)


@dataclass(frozen=True)
class TaskFunction:
    """The job Hydra runs: imports the command's function only when it runs (a module-level class, so the
    joblib and submitit launchers can pickle it)."""

    spec: str  # "module:function"

    def __call__(self, cfg):
        from minrnn_cli.hydra_app.errors import run_job

        return run_job(load_task_function(self.spec), cfg)


def run_with_hydra(launch: Launch, tokens: list[str], multirun: bool) -> None:
    """Run one command through Hydra as `@hydra.main` would, with the user's tokens."""
    scratch = Path(tempfile.mkdtemp(prefix="minrnn-config-")) if launch.runs_nothing else None
    try:
        argv = hydra_argv(tokens, multirun, launch, scratch)
        if launch.name == "train":
            from minrnn_cli.training.distributed import torchrun_overrides

            argv += torchrun_overrides(tokens, multirun)  # under torchrun: all ranks share rank 0's run folder
        parser, args = internals.parse_args(argv)
        check_run_flags(args)
        check_group_choices(args.overrides, args.config_dir)
        register_configs()
        with internals.reported_errors(functools.partial(compact, config_name=args.config_name or launch.config_name)):
            internals.run_hydra(parser, args, TaskFunction(launch.task_function), str(config_dir()),
                                launch.config_name)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
