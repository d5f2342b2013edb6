"""GPU: the Triton scan kernels against the device's copy bandwidth, and a minGRU layer against cuDNN nn.GRU.

    python scripts/bench_triton_scan.py [--shape B T D] [--tf32] [--sweep]

Needs CUDA and triton. Every figure is Triton's do_bench median (L2 flushed before each repeat). The
kernels' floor is the memory traffic they cannot avoid, in tensors of B*T*D elements:
    plain scan      forward a, b -> h (3)          backward a, h, dh -> da, db (5)
    fused minGRU    forward k, h~ -> h (3)         backward k, h~, h, dh -> dk, dh~ (6)
    fused minLSTM   forward kf, ki, h~ -> h (4)    backward kf, ki, h~, h, dh -> dkf, dki, dh~ (8)
and the achieved rate is those bytes over the measured time, set against a device copy (read + write).
`--tf32` lets float32 matmuls (the layers' projections) use TF32 tensor cores, as cuDNN's RNNs may by
default (torch.backends.cudnn.allow_tf32); run with and without it. `--sweep` times fused minGRU forward +
backward over tile sizes; set the best as LaunchConfig's defaults in minrnn_cli/scans/triton_scan/ops.py.
"""

from __future__ import annotations

import argparse
import itertools

import torch
from triton.testing import do_bench

from minrnn_cli.models import build_mixer
from minrnn_cli.scans.triton_scan import ops

TENSORS = {  # (forward, backward) tensors of B*T*D moved
    "plain scan": (3, 5),
    "fused minGRU": (3, 6),
    "fused minLSTM": (4, 8),
}


def copy_bandwidth_gbs() -> float:
    source = torch.empty(256 * 2**20 // 4, device="cuda")  # 256 MiB, far beyond L2
    dest = torch.empty_like(source)
    ms = do_bench(lambda: dest.copy_(source), return_mode="median")
    return 2 * source.numel() * 4 / (ms / 1000) / 1e9


def kernel_steps(name: str, shape, dtype):
    """(forward, backward) closures that launch just the kernels, on fixed inputs."""
    batch, length, width = shape
    h0 = torch.randn(batch, width, device="cuda", dtype=dtype)
    if name == "plain scan":
        a = torch.rand(shape, device="cuda", dtype=dtype)
        b = torch.randn(shape, device="cuda", dtype=dtype)
        h = ops.linear_scan(a, b, h0)
        return (lambda: ops.linear_scan(a, b, h0)), (lambda: ops.linear_scan_backward(a, h0, h, h))
    cell = ops.MINGRU if name == "fused minGRU" else ops.MINLSTM
    hidden = torch.randn(batch, length, (ops.N_GATES[cell] + 1) * width, device="cuda", dtype=dtype)
    h = ops.cell_scan(hidden, h0, cell, True, True)
    return (
        lambda: ops.cell_scan(hidden, h0, cell, True, True),
        lambda: ops.cell_scan_backward(hidden, h0, h, h, cell, True, True),
    )


def kernel_table(shape, bandwidth: float) -> None:
    print(f"\nkernels at (B, T, D) = {shape}; % of the measured copy bandwidth\n")
    print("| kernel | dtype | fwd us | fwd % | bwd us | bwd % |")
    print("|---|---|---|---|---|---|")
    elements = shape[0] * shape[1] * shape[2]
    for (name, (n_fwd, n_bwd)), dtype in itertools.product(TENSORS.items(), (torch.float32, torch.bfloat16)):
        forward, backward = kernel_steps(name, shape, dtype)
        cells = []
        for step, n_tensors in ((forward, n_fwd), (backward, n_bwd)):
            ms = do_bench(step, return_mode="median")
            achieved = n_tensors * elements * dtype.itemsize / (ms / 1000) / 1e9
            cells += [f"{1000 * ms:.1f}", f"{100 * achieved / bandwidth:.0f}%"]
        print(f"| {name} | {str(dtype).removeprefix('torch.')} | {' | '.join(cells)} |")


def layer_step(name: str, shape, **options):
    layer = build_mixer(name, shape[2], **options).cuda()
    x = torch.randn(shape, device="cuda", requires_grad=True)

    def run():
        y, _ = layer(x)
        y.sum().backward()

    return run


def layer_table(shape) -> None:
    layers = {
        "minGRU (triton)": ("mingru", {"scan_backend": "triton"}),
        "minGRU (linear)": ("mingru", {"scan_backend": "linear"}),
        "minLSTM (triton)": ("minlstm", {"scan_backend": "triton"}),
        "nn.GRU (cuDNN)": ("gru", {}),
        "GRU loop (paper)": ("gru_loop", {}),
    }
    ms = {label: do_bench(layer_step(name, shape, **opts), return_mode="median") for label, (name, opts) in
          layers.items()}  # fmt: skip
    print(f"\nlayer forward + backward, float32, (B, T, D) = {shape}\n")
    print("| layer | ms | nn.GRU / layer | GRU loop / layer |")
    print("|---|---|---|---|")
    for label, value in ms.items():
        gru, loop = ms["nn.GRU (cuDNN)"] / value, ms["GRU loop (paper)"] / value
        print(f"| {label} | {value:.3f} | {gru:.2f}x | {loop:.1f}x |")


def sweep(shape) -> None:
    print(f"\nfused minGRU forward + backward, float32, {shape}, by tile\n")
    print("| chunk_t | block_d | num_warps | us |")
    print("|---|---|---|---|")
    default = ops.CONFIG
    results = []
    for chunk_t, block_d, num_warps in itertools.product((16, 32, 64), (16, 32, 64, 128), (1, 2, 4, 8)):
        ops.CONFIG = ops.LaunchConfig(chunk_t, block_d, num_warps)
        forward, backward = kernel_steps("fused minGRU", shape, torch.float32)
        us = 1000 * do_bench(lambda f=forward, b=backward: (f(), b()), return_mode="median")
        results.append((us, chunk_t, block_d, num_warps))
        print(f"| {chunk_t} | {block_d} | {num_warps} | {us:.1f} |")
    ops.CONFIG = default
    best = min(results)
    print(f"\nbest: chunk_t={best[1]}, block_d={best[2]}, num_warps={best[3]} ({best[0]:.1f} us)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 512, 256), metavar=("B", "T", "D"))
    parser.add_argument("--tf32", action="store_true", help="allow TF32 in float32 matmuls")
    parser.add_argument("--sweep", action="store_true", help="time the tile sizes instead")
    args = parser.parse_args()
    shape = tuple(args.shape)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, tiles {ops.CONFIG}, "
          f"TF32 matmul {args.tf32}, TF32 cuDNN {torch.backends.cudnn.allow_tf32}")
    if args.sweep:
        sweep(shape)
        return
    bandwidth = copy_bandwidth_gbs()
    print(f"measured copy bandwidth (256 MiB, read + write): {bandwidth:.0f} GB/s")
    kernel_table(shape, bandwidth)
    layer_table(shape)


if __name__ == "__main__":
    main()
