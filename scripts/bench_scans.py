"""Scan backends and a minGRU layer against nn.GRU, forward + backward, side by side in one run.

    python scripts/bench_scans.py [--threads N] [--repeats R]

Each figure is the median of R timed repeats after one warm-up, the calls compared interleaved round by round
(minrnn_cli.benchmarking.timing). The floor for a scan is the memory
traffic it cannot avoid: forward reads a, b and writes h (3 tensors), backward reads a, h and the
incoming gradient and writes grad_a and grad_b (5 tensors), so 8 tensors of B*T*D floats in all; the
achieved rate is those bytes over the measured time, set against the machine's measured copy bandwidth
(a 64 MiB tensor copied into a preallocated one: read + write).
"""

from __future__ import annotations

import argparse
import platform

import torch

from minrnn_cli.benchmarking.timing import time_interleaved
from minrnn_cli.models import build_mixer
from minrnn_cli.scans import scan

SHAPES = [(64, 64, 256), (8, 512, 256), (2, 4096, 256)]
SCAN_BACKENDS = ["linear", "log"]
LAYER_SHAPE = (8, 512, 256)


def median_ms(calls: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds of each call, timed side by side."""
    timings = time_interleaved(calls, dict.fromkeys(calls, repeats), torch.device("cpu"), warmup=1)
    return {name: 1000 * timing.median_s for name, timing in timings.items()}


def copy_bandwidth_gbs(repeats: int) -> float:
    source = torch.randn(64 * 1024 * 1024 // 4)  # 64 MiB, far beyond the caches
    dest = torch.empty_like(source)
    ms = median_ms({"copy": lambda: dest.copy_(source)}, repeats)["copy"]
    return 2 * source.numel() * 4 / (ms / 1000) / 1e9


def scan_step(backend: str, shape):
    a = torch.rand(shape).requires_grad_()
    b = torch.randn(shape).requires_grad_()

    def run():
        h, _ = scan(a, b, backend=backend)
        h.backward(torch.ones_like(h))

    return run


def layer_step(layer, shape):
    x = torch.randn(shape).requires_grad_()

    def run():
        y, _ = layer(x)
        y.square().mean().backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    bandwidth = copy_bandwidth_gbs(args.repeats)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, float32, median of {args.repeats}")
    print(f"measured copy bandwidth: {bandwidth:.1f} GB/s\n")
    print("| (B, T, D) | linear ms | log ms | log / linear | linear GB/s (8 tensors) | % of copy bw |")
    print("|---|---|---|---|---|---|")
    for shape in SHAPES:
        times = median_ms({backend: scan_step(backend, shape) for backend in SCAN_BACKENDS}, args.repeats)
        bytes_moved = 8 * 4 * shape[0] * shape[1] * shape[2]
        achieved = bytes_moved / (times["linear"] / 1000) / 1e9
        print(f"| {shape} | {times['linear']:.1f} | {times['log']:.1f} | {times['log'] / times['linear']:.1f}x "
              f"| {achieved:.1f} | {100 * achieved / bandwidth:.0f}% |")

    d_model = LAYER_SHAPE[2]
    layers = {
        "minGRU (linear scan)": build_mixer("mingru", d_model, scan_backend="linear"),
        "minGRU (log scan)": build_mixer("mingru", d_model, scan_backend="log"),
        "nn.GRU": build_mixer("gru", d_model),
    }
    print(f"\nlayer forward + backward at (B, T, D) = {LAYER_SHAPE}\n")
    print("| layer | ms | nn.GRU / layer |")
    print("|---|---|---|")
    layer_ms = median_ms({name: layer_step(layer, LAYER_SHAPE) for name, layer in layers.items()}, args.repeats)
    for name, ms in layer_ms.items():
        print(f"| {name} | {ms:.1f} | {layer_ms['nn.GRU'] / ms:.2f}x |")


if __name__ == "__main__":
    main()
