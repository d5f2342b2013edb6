"""What Hydra says about the job running now: its folder, and whether it is one job of a sweep."""

from __future__ import annotations

from pathlib import Path


def job_dir() -> Path | None:
    """The running job's output folder (None outside a Hydra job)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None


def in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_group() -> str | None:
    """In a multirun, the sweep folder's name: the default W&B group, so the jobs of one sweep share it
    whatever launcher ran them."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().sweep.dir).name if in_multirun() else None


def sweep_rerun() -> str:
    """How to start the running sweep again in its folder, which continues it: the same command, naming the
    folder when the command left it to Hydra's timestamp."""
    from hydra.core.hydra_config import HydraConfig

    from minrnn_cli.training.runs import override

    hydra = HydraConfig.get()
    if any(override.split("=", 1)[0].lstrip("+") == "hydra.sweep.dir" for override in hydra.overrides.hydra):
        return "the same command"
    return f"the same command plus {override('hydra.sweep.dir', Path(hydra.sweep.dir).absolute())}"


def task_overrides() -> list[str]:
    """The overrides the user gave for this job (as recorded in .hydra/overrides.yaml)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task)
