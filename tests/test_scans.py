"""Every scan backend against the plain float64 loop: outputs, final state and gradients."""

import pytest
import torch

from minrnn_cli.scans import BACKENDS, log_scan, scan, sequential_scan
from minrnn_cli.scans.fused import (
    fused_cell_scan,
    has_fused_path,
    inner_width,
    projection_width,
    split_gates,
    split_projection,
)

LENGTHS = [1, 2, 7, 64, 513, 4096]


def _inputs(length, batch=2, width=3, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(batch, length, width, generator=gen, dtype=dtype)
    b = torch.randn(batch, length, width, generator=gen, dtype=dtype)
    h0 = torch.randn(batch, width, generator=gen, dtype=dtype)
    return a, b, h0


def _outputs_and_grads(backend, a, b, h0):
    leaves = [t.clone().requires_grad_() for t in (a, b) + (() if h0 is None else (h0,))]
    h, h_last = scan(leaves[0], leaves[1], leaves[2] if h0 is not None else None, backend=backend)
    weights = torch.linspace(-1, 1, h.numel(), dtype=h.dtype).view_as(h)
    loss = (h * weights).sum() + 3 * h_last.sum()
    return h, h_last, torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in ("sequential", "triton")])  # triton: own file
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("with_h0", [False, True])
def test_backend_matches_sequential_in_float64(backend, length, with_h0):
    a, b, h0 = _inputs(length)
    h0 = h0 if with_h0 else None
    ref_h, ref_last, ref_grads = _outputs_and_grads("sequential", a, b, h0)
    h, last, grads = _outputs_and_grads(backend, a, b, h0)
    tol = 1e-6 if backend == "log" else 1e-10  # log space loses digits through exp/log over long T
    torch.testing.assert_close(h, ref_h, rtol=tol, atol=tol)
    torch.testing.assert_close(last, ref_last, rtol=tol, atol=tol)
    for grad, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=tol, atol=tol)


def test_linear_scan_float32_error_stays_small_at_long_length():
    a, b, h0 = _inputs(4096, batch=2, width=16)
    ref, _ = sequential_scan(a, b, h0)
    h, _ = scan(a.float(), b.float(), h0.float(), backend="linear")
    assert (h.double() - ref).abs().max() < 1e-5


def test_non_contiguous_inputs():
    a, b, h0 = _inputs(33, width=4)
    a_t = a.transpose(0, 2).contiguous().transpose(0, 2)  # same values, other strides
    b_t = torch.stack([b, -b], dim=3)[..., 0]  # same values, every other element of a wider buffer
    assert not a_t.is_contiguous() and not b_t.is_contiguous()
    ref, _ = sequential_scan(a, b, h0)
    for backend in ("linear", "log", "auto"):
        h, _ = scan(a_t, b_t, h0, backend=backend)
        torch.testing.assert_close(h, ref)


def test_bfloat16_inputs_accumulate_in_float32():
    a, b, h0 = _inputs(1000, width=8)
    a16, b16 = a.bfloat16(), b.bfloat16()
    h, last = scan(a16, b16, backend="linear")
    assert h.dtype == torch.bfloat16 and last.dtype == torch.bfloat16
    ref, _ = sequential_scan(a16.double(), b16.double())
    # error of one final rounding to bf16, not of 1000 accumulations in bf16
    assert ((h.double() - ref).abs() / ref.abs().clamp_min(1e-2)).max() < 2e-2


@pytest.mark.parametrize("bad", ["fast", "Linear", ""])
def test_unknown_backend_is_a_clear_error(bad):
    a, b, _ = _inputs(4)
    with pytest.raises(ValueError, match="choose one of sequential, log, linear, auto"):
        scan(a, b, backend=bad)


def test_mismatched_shapes_are_a_clear_error():
    a, b, _ = _inputs(4)
    with pytest.raises(ValueError, match="one shape"):
        scan(a, b[:, :3])


def test_projection_layout_is_gates_then_candidate():
    hidden = torch.arange(2 * 3 * 12.0).view(2, 3, 12)
    gate_pre, candidate = split_projection(hidden, n_gates=2)
    forget, input_gate = split_gates(gate_pre, n_gates=2)
    assert projection_width(2, 4) == 12 and inner_width(12, 2) == 4
    assert torch.equal(forget, hidden[..., :4]) and torch.equal(input_gate, hidden[..., 4:8])
    assert torch.equal(candidate, hidden[..., 8:])
    assert candidate.data_ptr() == hidden[..., 8:].data_ptr()  # views, not copies
    with pytest.raises(ValueError, match="does not hold 1 gate"):
        split_projection(torch.zeros(2, 3, 5), n_gates=1)


def test_fused_cell_scan_needs_a_backend_with_a_fused_path():
    assert has_fused_path("mingru", "linear") and has_fused_path("minlstm", "triton")
    assert not has_fused_path("minlstm", "linear") and not has_fused_path("mingru", "log")
    float64 = torch.zeros(1, 2, 6, dtype=torch.float64)  # the compiled CPU kernels take float32 alone
    assert not has_fused_path("minlstm", "linear", float64)
    with pytest.raises(ValueError, match="no fused minlstm path for scan backend 'linear'"):
        fused_cell_scan(float64, None, "minlstm", True, True, backend="linear")


# ---------------------------------------------------------------------------------------------------------------
# Numerical edges: exact 0 / 1 gates, extreme values, zeros in b and h0, low precision, T = 0 and T = 1.
# Each against the plain loop in float64 on the same (rounded) inputs, outputs and gradients.
# ---------------------------------------------------------------------------------------------------------------


def _edge_inputs(length, dtype, gate_pre):
    """minGRU-like a = 1 - sigmoid(k) with k = +-gate_pre on alternate channels (a rounds to exactly 0 from
    k >= 17 in float32, 37 in float64), an a of exactly 1, exact zeros in b and h0, and one negative a."""
    gen = torch.Generator().manual_seed(length)
    k = torch.randn(2, length, 6, generator=gen, dtype=torch.float64)
    k[..., ::2], k[..., 1::2] = gate_pre, -gate_pre
    k[:, ::3] = -k[:, ::3]
    a = 1 - torch.sigmoid(k.to(dtype))
    a[:, length // 2, 1] = -0.5
    a[:, length // 4, 2] = 1
    b = torch.randn(2, length, 6, generator=gen, dtype=torch.float64).to(dtype)
    b[:, length // 3] = 0
    h0 = torch.randn(2, 6, generator=gen, dtype=torch.float64).to(dtype)
    h0[:, 0] = 0
    return a, b, h0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gate_pre", [17.0, 30.0, 100.0, 1e4])
@pytest.mark.parametrize("backend", ["log", "linear"])
@pytest.mark.parametrize("with_h0", [False, True])
def test_exact_zero_and_one_gates_match_sequential(dtype, gate_pre, backend, with_h0):
    """`log` took log(0) = -inf into its cumsum, then -inf + inf = NaN (and 0 / 0 in the gradients)."""
    a, b, h0 = _edge_inputs(40, dtype, gate_pre)
    h0 = h0 if with_h0 else None
    assert (a == 0).any() or (dtype == torch.float64 and gate_pre < 37)  # 1 - sigmoid(k) rounds to 0
    ref = _outputs_and_grads("sequential", a.double(), b.double(), None if h0 is None else h0.double())
    got = _outputs_and_grads(backend, a, b, h0)
    tol = 1e-9 if dtype == torch.float64 else 1e-3  # float32 `log`: error ~ eps * |sum of log a| (zeros: -208 each)
    for x, r in zip(got[:2] + got[2], ref[:2] + ref[2], strict=True):
        assert torch.isfinite(x).all()
        assert (x.double() - r).abs().max() <= tol * r.abs().max().clamp_min(1)


@pytest.mark.parametrize("length", [1, 2, 7])
def test_log_backend_gradients_at_exact_zeros(length):
    """dL/da_t = G_t h_{t-1}, dL/db_t = G_t and dL/dh0 = a_1 G_1 where a, b or h0 is exactly 0: through log
    these were 0 / 0 (NaN, or 0 after the clamp); the log backend's backward is now the reverse recurrence."""
    a, b, h0 = _inputs(length)
    a[:, ::2] = 0
    b[:, 1::2] = 0
    h0[0] = 0
    ref = _outputs_and_grads("sequential", a, b, h0)
    got = _outputs_and_grads("log", a, b, h0)
    for x, r in zip(got[:2] + got[2], ref[:2] + ref[2], strict=True):
        torch.testing.assert_close(x, r, rtol=1e-10, atol=1e-12)


def test_log_backend_with_negative_gates_matches_sequential():
    """The log of |a|, with the sign of the running product carried apart (was log(a < 0) = NaN)."""
    a, b, h0 = _inputs(64)
    a = 2 * a - 1
    ref = _outputs_and_grads("sequential", a, b, h0)
    got = _outputs_and_grads("log", a, b, h0)
    for x, r in zip(got[:2] + got[2], ref[:2] + ref[2], strict=True):
        torch.testing.assert_close(x, r, rtol=1e-8, atol=1e-10)


def test_log_scan_takes_minus_infinity_in_every_input():
    """log a = -inf (a gate of 0) mid-sequence, leading log b = -inf and log h0 = -inf: finite and exact."""
    gen = torch.Generator().manual_seed(0)
    log_a = torch.log(torch.rand(2, 9, 3, generator=gen, dtype=torch.float64))
    log_b = torch.randn(2, 9, 3, generator=gen, dtype=torch.float64)
    log_h0 = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    log_a[:, 3], log_b[:, :2], log_h0[0] = -torch.inf, -torch.inf, -torch.inf
    weights = torch.linspace(-1, 1, log_b.numel(), dtype=torch.float64).view_as(log_b)

    def run(fn, *inputs):
        leaves = [t.clone().requires_grad_() for t in inputs]
        h, h_last = fn(*leaves)
        return (h, h_last) + torch.autograd.grad((h * weights).sum() + h_last.sum(), leaves)

    got = run(log_scan, log_a, log_b, log_h0)
    ref = run(lambda la, lb, lh: sequential_scan(la.exp(), lb.exp(), lh.exp()), log_a, log_b, log_h0)
    for x, r in zip(got, ref, strict=True):
        torch.testing.assert_close(x, r, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_log_scan_low_precision_accumulates_in_float32(dtype):
    """log_scan computed in bf16/fp16 (relative error above 1 at T = 1000; exp overflows float16)."""
    gen = torch.Generator().manual_seed(0)
    log_a = torch.log(0.5 + 0.5 * torch.rand(2, 1000, 8, generator=gen)).to(dtype)
    log_b = torch.randn(2, 1000, 8, generator=gen).to(dtype)
    log_h0 = torch.randn(2, 8, generator=gen).to(dtype)
    h, last = log_scan(log_a, log_b, log_h0)
    assert h.dtype == dtype and last.dtype == dtype
    ref, _ = sequential_scan(log_a.double().exp(), log_b.double().exp(), log_h0.double().exp())
    assert ((h.double() - ref).abs() / ref.abs()).max() < 2e-2  # one final rounding, not 1000 steps of it


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_log_backend_low_precision_accumulates_in_float32(dtype):
    a, b, h0 = _inputs(1000, width=8)
    a, b, h0 = a.to(dtype), b.to(dtype), h0.to(dtype)
    h, last = scan(a, b, h0, backend="log")
    assert h.dtype == dtype and last.dtype == dtype
    ref, _ = sequential_scan(a.double(), b.double(), h0.double())
    assert ((h.double() - ref).abs() / ref.abs().clamp_min(1e-2)).max() < 2e-2


def test_empty_sequence_is_the_same_clear_error_on_every_entry():
    empty = torch.zeros(2, 0, 3)
    entries = [lambda backend=backend: scan(empty, empty, backend=backend) for backend in BACKENDS]
    entries += [
        lambda: log_scan(empty, empty),
        lambda: sequential_scan(empty, empty),
        lambda: fused_cell_scan(torch.zeros(2, 0, 6), None, "mingru", True, True, backend="linear"),
        lambda: fused_cell_scan(torch.zeros(2, 0, 9), None, "minlstm", True, True, backend="triton"),
    ]
    for entry in entries:
        with pytest.raises(ValueError, match="sequence of length T >= 1"):
            entry()
