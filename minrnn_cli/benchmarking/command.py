"""The Hydra task behind `minrnn bench`: the composed `bench` config -> `run_bench` in Hydra's run dir.

The only module of the bench that imports hydra/omegaconf; everything it calls is torch-only.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from minrnn_cli.benchmarking.config import BenchConfig
from minrnn_cli.benchmarking.run import run_bench


def bench_job(cfg: DictConfig) -> None:
    """Run the benchmark `cfg` describes; a bad setting exits with one line naming it."""
    try:
        config = BenchConfig.from_mapping(OmegaConf.to_container(cfg, resolve=True))
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        run_bench(config, out_dir, command="minrnn bench " + " ".join(HydraConfig.get().overrides.task))
    except ValueError as error:
        print(f"minrnn bench: {error}", file=sys.stderr)
        raise SystemExit(2) from None
