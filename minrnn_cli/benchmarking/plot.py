"""The figure, after the paper's Figure 1: training-step time, speedup and memory against length (log
scales), with the paper's T4 figures drawn beside ours as hollow markers labelled "paper (T4)"."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib import ticker  # noqa: E402

from minrnn_cli.benchmarking import paper  # noqa: E402
from minrnn_cli.benchmarking.report import BenchResult  # noqa: E402

COLORS = {"mingru": "tab:blue", "minlstm": "tab:orange", "mamba": "tab:green", "gru": "tab:red",
          "lstm": "tab:purple", "gru_loop": "tab:brown", "lstm_loop": "tab:pink", "transformer": "tab:gray"}
MARKERS = {"mingru": "o", "minlstm": "s", "mamba": "^"}


def save_figure(result: BenchResult, path: Path) -> Path:
    rows = result.rows()
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    time_ax, speed_ax, memory_ax, ratio_ax = axes.flat

    for model in models:
        _line(time_ax, rows, model, "train_step_ms", label=model)
        _line(memory_ax, rows, model, "peak_memory_mib", label=model)
    for model, points in paper.STEP_MS.items():
        _paper_points(time_ax, model, points)
    _style(time_ax, "Training step (fwd + loss + bwd)", "ms per step")
    _style(memory_ax, "Peak memory of the training step", "MiB")

    for model in ("mingru", "minlstm"):
        _line(speed_ax, rows, model, "train_step_speedup_vs_loop", label=f"{model} vs loop")
        _line(speed_ax, rows, model, "train_step_speedup_vs_fused", label=f"{model} vs fused nn.*",
              linestyle="--")
        _paper_points(speed_ax, model, paper.SPEEDUP_VS_LOOP.get(model, {}), suffix=" vs loop")
    speed_ax.axhline(1.0, color="black", linewidth=0.8)
    _style(speed_ax, "Training speedup (baseline time / model time)", "speedup (x)")

    for model, column, label in (("mingru", "memory_vs_loop", "minGRU / GRU loop"),
                                 ("minlstm", "memory_vs_loop", "minLSTM / LSTM loop"),
                                 ("mingru", "memory_vs_fused", "minGRU / nn.GRU"),
                                 ("minlstm", "memory_vs_fused", "minLSTM / nn.LSTM"),
                                 ("mamba", "memory_vs_mingru", "Mamba / minGRU")):
        _line(ratio_ax, rows, model, column, label=label,
              linestyle="--" if column == "memory_vs_fused" else "-")
    for ratio, what in ((paper.MEMORY_RATIO["mingru"], "min* / GRU, LSTM"),
                        (paper.MEMORY_RATIO["mamba"], "Mamba / minGRU")):
        ratio_ax.axhline(ratio, color="gray", linestyle=":", linewidth=1.2)
        ratio_ax.annotate(f"{paper.LABEL}: {what} {ratio:.2f}x", (0.02, ratio),
                          xycoords=("axes fraction", "data"), fontsize=8, color="dimgray", va="bottom")
    _style(ratio_ax, "Peak-memory ratio", "ratio")

    machine, config = result.meta["machine"], result.meta["config"]
    threads = machine["torch_threads"]
    where = machine.get("gpu") or f"{machine['cpu']}, {threads} torch thread{'s' if threads != 1 else ''}"
    fig.suptitle(f"minrnn bench on {where}: batch {config['batch_size']}, width {config['d_model']}, "
                 f"depth {config['depth']}, {config['dtype']}, torch {machine['torch']}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _line(ax, rows, model: str, column: str, label: str, linestyle: str = "-") -> None:
    points = [(r["seq_len"], r[column]) for r in rows if r["model"] == model and r[column] is not None]
    if points:
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, linestyle=linestyle, marker=MARKERS.get(model, "."), color=COLORS.get(model),
                label=label)


def _paper_points(ax, model: str, points: dict[int, float], suffix: str = "") -> None:
    if points:
        ax.scatter(list(points), list(points.values()), s=70, facecolors="none",
                   edgecolors=COLORS.get(model), marker=MARKERS.get(model, "o"), linewidths=1.5,
                   label=f"{model}{suffix}, {paper.LABEL}")


def _style(ax, title: str, ylabel: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlabel("sequence length T")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
