"""Every scan backend against the plain float64 loop: outputs, final state and gradients."""

import pytest
import torch

from minrnn_cli.scans import BACKENDS, scan, sequential_scan
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
    with pytest.raises(ValueError, match="no fused minlstm path for scan backend 'linear'"):
        fused_cell_scan(torch.zeros(1, 2, 6), None, "minlstm", True, True, backend="linear")
