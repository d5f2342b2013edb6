"""The residual block's compiled CPU kernels against torch's ops, side by side in one process.

    python scripts/bench_blocks.py [--threads 2] [--rounds 15]

1. Each part at the default job's shapes (batch 16, 128 tokens, d_model 128, GEGLU hidden 256), forward +
   backward, median microseconds: RMSNorm, the causal conv, GEGLU (in bfloat16, as autocast gives it), by the
   kernel and by torch's ops timed side by side (minrnn_cli.benchmarking.timing), with the floor of each
   (bytes it must move / this machine's copy bandwidth).
2. The default job's training step (3-layer minGRU LM, bf16 autocast, fused AdamW) with the block kernels on
   and off, interleaved in rounds so that both see the same machine; median and best milliseconds.
Prints a Markdown table of each.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from minrnn_cli.benchmarking.timing import time_interleaved
from minrnn_cli.models import build_lm
from minrnn_cli.scans.fused import block_kernels, cpu

BATCH, LENGTH, WIDTH, HIDDEN, VOCAB = 16, 128, 128, 256, 65


def median_us(calls: dict, repeats: int = 200) -> dict[str, float]:
    """Median microseconds of each call, timed side by side."""
    timings = time_interleaved(calls, dict.fromkeys(calls, repeats), torch.device("cpu"), warmup=10)
    return {name: timing.median_s * 1e6 for name, timing in timings.items()}


def copy_bandwidth() -> float:
    """Bytes per second of a clone at these sizes (read + write)."""
    x = torch.randn(BATCH, LENGTH, 2 * HIDDEN)
    return 2 * x.numel() * 4 / (median_us({"clone": x.clone})["clone"] * 1e-6)


def parts() -> list[tuple[str, float, float, float]]:
    """(part, kernel us, torch us, floor us) for each part, forward + backward."""
    x = torch.randn(BATCH, LENGTH, WIDTH, requires_grad=True)
    h = torch.randn(BATCH, LENGTH, 2 * HIDDEN).to(torch.bfloat16).requires_grad_()
    weight = torch.ones(WIDTH, requires_grad=True)
    conv_w, conv_b = torch.randn(WIDTH, 1, 4, requires_grad=True), torch.zeros(WIDTH, requires_grad=True)
    state = torch.zeros(BATCH, 3, WIDTH)
    grad_x, grad_h = torch.randn(BATCH, LENGTH, WIDTH), torch.randn(BATCH, LENGTH, HIDDEN).to(torch.bfloat16)

    def torch_conv():
        padded = torch.cat([state, x], dim=1)
        y = torch.addcmul(conv_b, padded[:, :LENGTH], conv_w[:, 0, 0])
        for j in range(1, 4):
            y = torch.addcmul(y, padded[:, j:j + LENGTH], conv_w[:, 0, j])
        return y

    def torch_geglu():
        value, gate = h.chunk(2, dim=-1)
        return value * F.gelu(gate)

    cases = {
        "RMSNorm (float32)": (lambda: block_kernels.rms_norm(x, weight, 1e-6), lambda: F.rms_norm(x, (WIDTH,), weight),
                              grad_x, 5 * x.numel() * 4),  # x, y forward; x, dy, dx backward
        "causal conv, k=4 (float32)": (lambda: block_kernels.causal_conv(x, None, conv_w, conv_b), torch_conv, grad_x,
                                       5 * x.numel() * 4),
        "GEGLU (bfloat16)": (lambda: block_kernels.geglu(h), torch_geglu, grad_h,
                             (2 + 1 + 2 + 1 + 2) * h.numel()),  # h, out; h, dout, dh (two bytes each)
    }
    bandwidth = copy_bandwidth()
    rows = []
    for name, (kernel, reference, grad, floor_bytes) in cases.items():
        timed = median_us({which: lambda fn=fn, grad=grad: fn().backward(grad)
                           for which, fn in (("kernel", kernel), ("torch", reference))})
        rows.append((name, timed["kernel"], timed["torch"], floor_bytes / bandwidth * 1e6))
    return rows


def training_steps(rounds: int) -> dict[bool, list[float]]:
    """Milliseconds per training step of the default job with the block kernels on and off, interleaved."""
    torch.manual_seed(0)
    model = build_lm("mingru", VOCAB, d_model=WIDTH, n_layers=3, conv=True, mlp=True, mlp_ratio=2.0, expansion=1.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    tokens = torch.randint(0, VOCAB, (BATCH, LENGTH + 1))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits, _ = model(tokens[:, :-1])
        F.cross_entropy(logits.float().reshape(-1, VOCAB), tokens[:, 1:].reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    kernels_on = block_kernels.handles
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for on in (True, False):
            block_kernels.handles = kernels_on if on else (lambda *args, **kwargs: False)
            step()  # the first step after a switch warms the other path
            start = time.perf_counter()
            for _ in range(8):
                step()
            times[on].append((time.perf_counter() - start) / 8 * 1e3)
    block_kernels.handles = kernels_on
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if not cpu.available():
        raise SystemExit(f"the compiled kernels are {cpu.kernel_status()}")
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, torch {torch.__version__}\n")
    print("| part, forward + backward | kernel (us) | torch (us) | torch / kernel | floor (us) | kernel / floor |")
    print("|---|---|---|---|---|---|")
    for name, kernel, reference, floor in parts():
        print(f"| {name} | {kernel:.0f} | {reference:.0f} | {reference / kernel:.2f}x | {floor:.0f} | "
              f"{kernel / floor:.1f}x |")
    times = training_steps(args.rounds)
    print("\n| default job's training step | median (ms) | best (ms) |\n|---|---|---|")
    for on in (True, False):
        print(f"| block kernels {'on' if on else 'off'} | {statistics.median(times[on]):.1f} | {min(times[on]):.1f} |")
    print(f"\nstep time on / off: {statistics.median(times[True]) / statistics.median(times[False]):.3f} (medians)")


if __name__ == "__main__":
    main()
