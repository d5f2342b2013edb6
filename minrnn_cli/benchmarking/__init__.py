"""`minrnn bench`: training-step, prefill and decoding time and peak memory of every model against
length, with speedups over both the fused (nn.GRU / nn.LSTM) and the loop baselines.

Imports torch, rich and matplotlib only (no hydra, omegaconf, wandb or datasets), so it runs on a
torch-only machine as `python -m minrnn_cli.benchmarking key=value ...`.
"""

from minrnn_cli.benchmarking.config import BenchConfig
from minrnn_cli.benchmarking.report import BenchResult
from minrnn_cli.benchmarking.run import run_bench

__all__ = ["BenchConfig", "BenchResult", "run_bench"]
