"""The Triton fast path: the scan, and minGRU / minLSTM with their activations fused into the scan
(the cell equations are in `scans/fused/__init__.py`).

Optional. Importing this package imports torch only; triton is imported the first time a kernel is asked
for (`ops` registers the torch.library custom ops then). The kernels run on CUDA tensors, and on CPU
tensors only under Triton's interpreter (TRITON_INTERPRET=1 set before triton is imported: the tests).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

CELLS = {"mingru": 1, "minlstm": 2}  # kernels.MINGRU, kernels.MINLSTM (named here to keep triton unimported)

_importable: bool | None = None


def triton_importable() -> bool:
    """Whether `import triton` works here (tried once, on first use)."""
    global _importable
    if _importable is None:
        try:
            import triton  # noqa: F401
        except Exception:  # a broken install (driver, compiler) counts as absent: `auto` falls back
            _importable = False
        else:
            _importable = True
    return _importable


def runs_on(device: torch.device) -> bool:
    """Whether the kernels can run on tensors of `device`."""
    interpreted = device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"
    return (device.type == "cuda" or interpreted) and triton_importable()


def _require(device: torch.device) -> None:
    if not triton_importable():
        raise ValueError("scan backend 'triton' needs the triton package (pip install triton); use 'auto' or 'linear'")
    if not runs_on(device):
        raise ValueError(
            f"scan backend 'triton' runs on CUDA tensors (on CPU only under TRITON_INTERPRET=1); got {device}; "
            "use 'auto' or 'linear'"
        )


def triton_linear_scan(a: Tensor, b: Tensor, h0: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """h_t = a_t * h_{t-1} + b_t by the Triton kernel; (h, h_last) in b's dtype, accumulated in float32."""
    _require(b.device)
    from minrnn_cli.scans.triton_scan.ops import linear_scan

    h = linear_scan(a, b, h0)
    return h, h[:, -1]


def triton_cell_scan(hidden: Tensor, h0: Tensor | None, cell: str, log_space: bool, normalize: bool) -> Tensor:
    """The states h (B, T, D) of a minGRU / minLSTM from its input projection (B, T, (n_gates + 1) * D).

    The gates and the candidate are computed inside the scan from `hidden` (laid out as in
    `scans/fused/layout.py`); `h0` is a state (B, D) (any strides) or None for zeros. Called through
    `scans.fused.fused_cell_scan`.
    """
    _require(hidden.device)
    from minrnn_cli.scans.triton_scan.ops import cell_scan

    return cell_scan(hidden, h0, CELLS[cell], log_space, normalize)
