"""minGRU / minLSTM: parallel, step and chunked modes against a float64 loop written from the paper."""

import copy

import pytest
import torch

from minrnn_cli.models import MinGRU, MinLSTM

LENGTHS = [1, 2, 7, 64, 513, 4096]
D_MODEL = 4


def paper_g(x):
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def reference(cell, x, h0):
    """The recurrence straight from the paper's equations, one token at a time, on the cell's weights."""
    hidden = x @ cell.to_hidden.weight.T + cell.to_hidden.bias
    d = cell.d_inner
    candidate = hidden[..., -d:]
    candidate = paper_g(candidate) if cell.log_space else candidate
    if isinstance(cell, MinGRU):
        z = torch.sigmoid(hidden[..., :d])
        forget, inp = 1 - z, z
    else:
        forget, inp = torch.sigmoid(hidden[..., :d]), torch.sigmoid(hidden[..., d : 2 * d])
        if cell.normalize:
            forget, inp = forget / (forget + inp), inp / (forget + inp)
    if h0 is None and cell.h0 is not None:
        h0 = paper_g(cell.h0) if cell.log_space else cell.h0
    h = torch.zeros(x.shape[0], d, dtype=x.dtype) if h0 is None else h0.expand(x.shape[0], d)
    states = []
    for t in range(x.shape[1]):
        h = forget[:, t] * h + inp[:, t] * candidate[:, t]
        states.append(h)
    return cell.to_out(torch.stack(states, 1)), h


def run_parallel(cell, x, h0):
    return cell(x, h0)


def run_step(cell, x, h0):
    state, ys = h0, []
    for t in range(x.shape[1]):
        y, state = cell.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


def run_chunked(cell, x, h0, chunk=5):
    state, ys = h0, []
    for start in range(0, x.shape[1], chunk):
        y, state = cell(x[:, start : start + chunk], state)
        ys.append(y)
    return torch.cat(ys, 1), state


def make_cell(kind, learned_h0, log_space=True, dtype=torch.float64, **options):
    torch.manual_seed(0)
    cls = MinGRU if kind == "mingru" else MinLSTM
    if kind == "minlstm":
        options.setdefault("forget_bias", 1.0)
    return cls(D_MODEL, expansion=1.5, learned_h0=learned_h0, log_space=log_space, **options).to(dtype)


def outputs_and_grads(cell, runner, x, h0):
    x = x.clone().requires_grad_()
    leaves = [x, *cell.parameters()] + ([] if h0 is None else [h0])
    y, last = runner(cell, x, h0)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    loss = (y * weights).sum() + last.sum()
    return y, last, torch.autograd.grad(loss, leaves)


def assert_agree(cell, runner, length, initial, tol):
    gen = torch.Generator().manual_seed(length)
    x = torch.randn(2, length, D_MODEL, generator=gen, dtype=torch.float64)
    h0 = None
    if initial == "given":
        h0 = torch.rand(2, cell.d_inner, generator=gen, dtype=torch.float64).requires_grad_()
    ref_y, ref_last, ref_grads = outputs_and_grads(cell, reference, x, h0)
    y, last, grads = outputs_and_grads(cell, runner, x, h0)
    torch.testing.assert_close(y, ref_y, rtol=tol, atol=tol)
    torch.testing.assert_close(last, ref_last, rtol=tol, atol=tol)
    for grad, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
@pytest.mark.parametrize("initial", ["zero", "given", "learned"])
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("runner", [run_parallel, run_step, run_chunked], ids=["parallel", "step", "chunked"])
def test_modes_match_reference(kind, initial, length, runner):
    cell = make_cell(kind, learned_h0=initial == "learned")
    assert_agree(cell, runner, length, initial, tol=1e-9)


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
@pytest.mark.parametrize("backend", ["log", "sequential", "linear"])
@pytest.mark.parametrize("log_space", [True, False])
def test_every_scan_backend_gives_the_same_cell(kind, backend, log_space):
    cell = make_cell(kind, learned_h0=True, log_space=log_space, scan_backend=backend)
    assert_agree(cell, run_chunked, 64, "learned", tol=1e-7)


def test_minlstm_without_normalisation_matches_reference():
    cell = make_cell("minlstm", learned_h0=False, normalize=False)
    assert_agree(cell, run_chunked, 33, "given", tol=1e-9)


def test_chunked_minlstm_with_learned_h0_is_not_passed_through_g_twice():
    """lucidrains' minLSTM re-applies g to the carried state between chunks (max error 0.32 in float64)."""
    cell = make_cell("minlstm", learned_h0=True)
    x = torch.randn(3, 40, D_MODEL, dtype=torch.float64)
    full, _ = cell(x)
    chunked, _ = run_chunked(cell, x, None, chunk=8)
    assert (full - chunked).abs().max() < 1e-12


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_float32_parallel_close_to_float64_reference(kind):
    cell64 = make_cell(kind, learned_h0=True)
    cell32 = make_cell(kind, learned_h0=True, dtype=torch.float32)
    x = torch.randn(2, 2048, D_MODEL, dtype=torch.float64)
    ref, _ = reference(cell64, x, None)
    y, _ = cell32(x.float())
    assert (y.double() - ref).abs().max() < 1e-4


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_long_sequence_is_finite_in_float32(kind):
    torch.manual_seed(0)
    cell = (MinGRU if kind == "mingru" else MinLSTM)(32, learned_h0=True)
    x = (3 * torch.randn(2, 16384, 32)).requires_grad_()
    y, last = cell(x)
    (y.square().mean() + last.mean()).backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in cell.parameters())


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_scan_backend_is_checked_at_construction_and_resolved_per_call(kind):
    with pytest.raises(ValueError, match="unknown scan backend 'fast'"):
        make_cell(kind, learned_h0=False, scan_backend="fast")
    cell = make_cell(kind, learned_h0=False, scan_backend="auto")
    assert cell.backend_choice == "auto" and cell.scan_backend == "linear"  # the choice is kept; CPU reads linear


# ---------------------------------------------------------------------------------------------------------------
# Numerical edges: saturated gates, states of exactly 0, low precision, empty sequences. Against the float64 loop.
# ---------------------------------------------------------------------------------------------------------------


SATURATED_100 = [(torch.float32, 100.0), (torch.float64, 100.0), (torch.float64, 1e4)]


def saturate_gates(cell, gate_pre):
    """Gate pre-activations of about +-gate_pre on alternate channels (minLSTM: input gate = -forget gate)."""
    d = cell.d_inner
    values = torch.tensor([gate_pre, -gate_pre] * d, dtype=cell.to_hidden.bias.dtype)[:d]
    with torch.no_grad():
        cell.to_hidden.weight[: cell.n_gates * d] *= 0.1
        for gate in range(cell.n_gates):
            cell.to_hidden.bias[gate * d : (gate + 1) * d] = values if gate == 0 else -values
    return cell


def close_to(got, ref, tol):
    for x, r in zip(got, ref, strict=True):
        assert torch.isfinite(x).all()
        assert (x.double() - r).abs().max() <= tol * r.abs().max().clamp_min(1)


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
@pytest.mark.parametrize("backend", ["log", "sequential", "linear"])
@pytest.mark.parametrize("log_space", [True, False])
@pytest.mark.parametrize(("dtype", "gate_pre"), [(torch.float32, 17.0), (torch.float32, 30.0), *SATURATED_100])
def test_saturated_gates_match_reference(kind, backend, log_space, dtype, gate_pre):
    """Gates that round to exactly 0 / 1 (float32 from 17, float64 from 37): `log` with log_space=false took
    log(1 - z) = log(0) = -inf into its cumsum and gave NaN."""
    cell = saturate_gates(make_cell(kind, False, log_space=log_space, dtype=dtype, scan_backend=backend), gate_pre)
    ref_cell = copy.deepcopy(cell).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 40, D_MODEL, generator=gen, dtype=torch.float64)
    h0 = torch.rand(2, cell.d_inner, generator=gen, dtype=torch.float64)
    ref = outputs_and_grads(ref_cell, reference, x, h0.clone().requires_grad_())
    got = outputs_and_grads(cell, run_chunked, x.to(dtype), h0.to(dtype).requires_grad_())
    close_to(got[:2] + got[2], ref[:2] + ref[2], 1e-9 if dtype == torch.float64 else 1e-3)


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
@pytest.mark.parametrize("backend", ["log", "sequential", "linear"])
@pytest.mark.parametrize("length", [1, 9])
def test_state_of_exactly_zero_matches_reference(kind, backend, length):
    """A given state may be 0 (zeros as a reset, or a state that underflowed): the log-space path took log(0),
    whose gradient is 0 * inf = NaN; below the smallest normal number (and for negative values) the state
    now enters in linear space."""
    cell = make_cell(kind, learned_h0=False, scan_backend=backend)
    gen = torch.Generator().manual_seed(length)
    x = torch.randn(2, length, D_MODEL, generator=gen, dtype=torch.float64)
    h0 = torch.rand(2, cell.d_inner, generator=gen, dtype=torch.float64)
    h0[0], h0[1, :2], h0[1, 2] = 0, 1e-320, -0.5  # zeros, a subnormal, a negative value
    ref = outputs_and_grads(cell, reference, x, h0.clone().requires_grad_())
    got = outputs_and_grads(cell, run_parallel, x, h0.clone().requires_grad_())
    close_to(got[:2] + got[2], ref[:2] + ref[2], 1e-9)


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_log_path_accumulates_in_float32(kind, dtype):
    """The log-space path computed its gates and scan in bf16/fp16 (relative error above 1 at T = 1000)."""
    cell = make_cell(kind, learned_h0=True, scan_backend="log", dtype=dtype)
    ref_cell = copy.deepcopy(cell).double()
    x = torch.randn(2, 1000, D_MODEL, generator=torch.Generator().manual_seed(0)).to(dtype)
    ref, ref_last = reference(ref_cell, x.double(), None)
    y, last = cell(x)
    assert y.dtype == dtype and last.dtype == dtype
    assert (y.double() - ref).abs().max() < 2e-2 * ref.abs().max()  # the linear path's error: 5e-3


@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
@pytest.mark.parametrize("backend", ["log", "sequential", "linear", "auto", "triton"])
@pytest.mark.parametrize("log_space", [True, False])
def test_empty_sequence_is_a_clear_error_on_every_backend(kind, backend, log_space):
    """T = 0 was a RecursionError on the CPU fused minGRU and an IndexError on `log`."""
    cell = make_cell(kind, learned_h0=True, log_space=log_space, scan_backend=backend)
    with pytest.raises(ValueError, match="sequence of length T >= 1"):
        cell(torch.zeros(2, 0, D_MODEL, dtype=torch.float64))
