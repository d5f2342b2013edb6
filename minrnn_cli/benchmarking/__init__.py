"""`minrnn bench`: training-step, prefill and decoding time and peak memory of every model against
length, with speedups over both the fused (nn.GRU / nn.LSTM) and the loop baselines.

Imports torch, rich and matplotlib only (no hydra, omegaconf, wandb or datasets), so it runs on a
torch-only machine as `python -m minrnn_cli.benchmarking key=value ...`.
"""

from importlib import import_module

# Imported on first use (PEP 562), so that reading BenchConfig (every command registers the bench's config)
# does not import the whole bench: that cost every `minrnn train` about 2 s of start-up.
_EXPORTS = {"BenchConfig": "config", "BenchResult": "report", "run_bench": "run"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
