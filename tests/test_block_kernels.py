"""The residual block's compiled CPU kernels (RMSNorm, causal conv, GEGLU: scans/fused/block_kernels.py) against
torch's own ops in float64, forward and backward, and the fallback where the kernels are not used."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minrnn_cli.models import build_lm
from minrnn_cli.models.blocks import GEGLU, CausalConv, RMSNorm
from minrnn_cli.scans.fused import block_kernels, cpu

pytestmark = pytest.mark.skipif(not cpu.available(), reason=f"CPU kernels {cpu.kernel_status()}")


def assert_close(ours: torch.Tensor, reference: torch.Tensor, tolerance: float = 1e-5) -> None:
    torch.testing.assert_close(ours.double(), reference, rtol=tolerance, atol=tolerance * reference.abs().max().item())


def float64_twin(module: torch.nn.Module, cls, *args) -> torch.nn.Module:
    twin = cls(*args).double()
    twin.load_state_dict(module.state_dict())
    return twin


@pytest.mark.parametrize("shape", [(3, 17, 24), (5, 24), (1, 1, 24)])
@pytest.mark.parametrize("eps", [None, 1e-5])
def test_rms_norm_matches_torch_in_float64(shape, eps):
    torch.manual_seed(0)
    norm = RMSNorm(24, eps=eps)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    reference = torch.nn.RMSNorm(24, eps=eps if eps is not None else torch.finfo(torch.float32).eps).double()
    reference.load_state_dict(norm.state_dict())
    x = (torch.randn(shape) * 3).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    weights = torch.randn(shape[-1])
    y, y64 = norm(x), reference(x64)
    assert y.dtype == torch.float32
    assert_close(y, y64)
    (y * weights).sum().backward()
    (y64 * weights.double()).sum().backward()
    assert_close(x.grad, x64.grad, 1e-4)
    assert_close(norm.weight.grad, reference.weight.grad, 1e-4)


def test_rms_norm_takes_non_contiguous_inputs_and_runs_without_gradients():
    torch.manual_seed(1)
    norm = RMSNorm(8)
    x = torch.randn(4, 8, 6).transpose(1, 2)  # (4, 6, 8), not contiguous
    with torch.no_grad():
        ours = norm(x)
    torch.testing.assert_close(ours, F.rms_norm(x, (8,), norm.weight), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("length", [1, 2, 3, 4, 40])
@pytest.mark.parametrize("carried", [False, True])
def test_causal_conv_matches_the_float64_taps(length, carried):
    torch.manual_seed(length)
    conv = CausalConv(16)
    reference = float64_twin(conv, CausalConv, 16)
    x = torch.randn(3, length, 16, requires_grad=True)
    state = torch.randn(3, 3, 16, requires_grad=True) if carried else None
    x64 = x.detach().double().requires_grad_()
    state64 = state.detach().double().requires_grad_() if carried else None
    y, last = conv(x, state)
    y64, last64 = reference(x64, state64)  # float64: torch's multiply-adds, not the kernel
    assert_close(y, y64)
    assert_close(last, last64)
    probe, probe_last = torch.randn(y.shape), torch.randn(last.shape)
    ((y * probe).sum() + (last * probe_last).sum()).backward()
    ((y64 * probe.double()).sum() + (last64 * probe_last.double()).sum()).backward()
    assert_close(x.grad, x64.grad, 1e-4)
    if carried:
        assert_close(state.grad, state64.grad, 1e-4)
    for ours, theirs in zip(conv.parameters(), reference.parameters(), strict=True):
        assert_close(ours.grad, theirs.grad, 1e-4)


def test_causal_conv_in_chunks_equals_one_call():
    torch.manual_seed(2)
    conv = CausalConv(8)
    x = torch.randn(2, 11, 8)
    whole, _ = conv(x)
    first, state = conv(x[:, :2])  # shorter than the carried state
    second, state = conv(x[:, 2:7], state)
    third, _ = conv(x[:, 7:], state)
    torch.testing.assert_close(torch.cat([first, second, third], dim=1), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_geglu_matches_torch(dtype):
    torch.manual_seed(3)
    hidden = torch.randn(4, 9, 32, dtype=torch.float64) * 4
    hidden[0, 0, 16:19] = torch.tensor([0.0, -12.0, 12.0], dtype=torch.float64)
    grad_out = torch.randn(4, 9, 16, dtype=torch.float64)

    def run(h: torch.Tensor, use_kernel: bool):
        h = h.detach().requires_grad_()
        if use_kernel:
            out = block_kernels.geglu(h)
        else:
            value, gate = h.chunk(2, dim=-1)
            out = value * F.gelu(gate)
        out.backward(grad_out.to(h.dtype))
        return out.double(), h.grad.double()

    out64, grad64 = run(hidden, use_kernel=False)
    out, grad = run(hidden.to(dtype), use_kernel=True)
    assert out.dtype == grad.dtype == torch.float64  # (converted by run)
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2  # bfloat16: its own rounding of inputs and outputs
    assert_close(out, out64, tolerance)
    assert_close(grad, grad64, tolerance)


def test_geglu_keeps_the_input_dtype_and_nan():
    hidden = torch.randn(2, 3, 8).to(torch.bfloat16)
    hidden[0, 0, 4] = float("nan")
    out = block_kernels.geglu(hidden)
    assert out.dtype == torch.bfloat16
    assert out[0, 0, 0].isnan() and not out[1].isnan().any()
    module = GEGLU(4, ratio=2.0)
    assert module(torch.randn(2, 3, 4)).dtype == torch.float32


def test_kernels_and_torch_ops_train_the_same_model(monkeypatch):
    """A whole language model (norms, convs, GEGLU, minGRU) with and without the block kernels: the same loss
    and gradients to float32 rounding, and parallel and step-by-step outputs agree on the kernel path."""
    torch.manual_seed(4)
    model = build_lm("mingru", 11, d_model=16, n_layers=2, conv=True, mlp=True, mlp_ratio=2.0)
    tokens = torch.randint(0, 11, (3, 9))

    def loss_and_grads():
        model.zero_grad()
        logits, _ = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 11), tokens[:, 1:].reshape(-1))
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads()
    with torch.no_grad():
        parallel, _ = model(tokens)
        state, steps = None, []
        for t in range(tokens.shape[1]):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, dim=1), parallel, rtol=1e-4, atol=1e-5)
    monkeypatch.setattr(block_kernels, "handles", lambda *args, **kwargs: False)
    torch_loss, torch_grads = loss_and_grads()
    torch.testing.assert_close(loss, torch_loss, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(grads, torch_grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5 * max(1.0, theirs.abs().max().item()))


def test_float64_and_kernels_off_use_torch_ops(monkeypatch):
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    assert not block_kernels.handles(x)
    assert block_kernels.handles(x.float())
    monkeypatch.setattr(cpu, "available", lambda: False)
    assert not block_kernels.handles(x.float())
    norm = RMSNorm(8)
    torch.testing.assert_close(norm(x.float()), F.rms_norm(x.float(), (8,), norm.weight))
