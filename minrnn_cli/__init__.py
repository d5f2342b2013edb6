"""minrnn: an experiment runner for minGRU / minLSTM and their baselines.

The package root stays light: importing it pulls in neither torch nor hydra, so `minrnn --help` is
instant. The model library lives in `minrnn_cli.models` and `minrnn_cli.scans` (torch only).
"""

__version__ = "0.1.0"
