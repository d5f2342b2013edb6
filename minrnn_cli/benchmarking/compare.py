"""Ratios between cells of one length: speedups over both kinds of GRU/LSTM baseline, memory ratios.

Each minimal RNN is compared with the library's fused cell (nn.GRU / nn.LSTM: cuDNN on CUDA, oneDNN on
CPU) and with the plain-PyTorch loop the paper timed; Mamba's memory is compared with minGRU's, as in
the paper. A ratio is None where either side is missing (not in the grid, skipped or failed).
"""

from __future__ import annotations

from minrnn_cli.benchmarking.grid import KINDS, Cell

BASELINES = {  # model -> {baseline kind: baseline model}
    "mingru": {"fused": "gru", "loop": "gru_loop"},
    "minlstm": {"fused": "lstm", "loop": "lstm_loop"},
}
MEMORY_REFERENCE = {"mamba": "mingru"}


def comparisons(cells: list[Cell]) -> dict[tuple[str, int], dict[str, float | None]]:
    """(model, seq_len) -> {"train_speedup_vs_fused": ..., "memory_vs_loop": ..., ...}."""
    by_key = {(cell.model, cell.seq_len): cell for cell in cells}
    result: dict[tuple[str, int], dict[str, float | None]] = {}
    for cell in cells:
        ratios: dict[str, float | None] = {}
        for kind_of_baseline, baseline in BASELINES.get(cell.model, {}).items():
            other = by_key.get((baseline, cell.seq_len))
            for kind in KINDS:
                ratios[f"{kind}_speedup_vs_{kind_of_baseline}"] = _ratio(
                    other and other.seconds(kind), cell.seconds(kind)
                )
            ratios[f"memory_vs_{kind_of_baseline}"] = _ratio(cell.peak_bytes, other and other.peak_bytes)
        reference = MEMORY_REFERENCE.get(cell.model)
        if reference:
            other = by_key.get((reference, cell.seq_len))
            ratios[f"memory_vs_{reference}"] = _ratio(cell.peak_bytes, other and other.peak_bytes)
        if ratios:
            result[(cell.model, cell.seq_len)] = ratios
    return result


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator
