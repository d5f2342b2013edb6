"""The Triton kernels against the float64 sequential reference and the PyTorch cells.

Without a GPU they run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set before the kernels
are built), at tiny sizes with tiny tiles so that chunk and channel-block edges are crossed; with a GPU
they run compiled on it. Skipped when triton is not installed, except the import-hygiene test.
"""

import copy
import importlib.util
import os
import subprocess
import sys
import warnings

import pytest
import torch

from minrnn_cli.models import MinGRU, MinLSTM
from minrnn_cli.scans import resolve_backend, scan

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
HAVE_TRITON = importlib.util.find_spec("triton") is not None
requires_triton = pytest.mark.skipif(not HAVE_TRITON, reason="triton is not installed")
LENGTHS = [1, 7, 33]


@pytest.fixture(scope="module")
def kernels():
    """Kernels that run here: interpreted on CPU, with tiles of 4 channels x 8 steps."""
    saved = os.environ.get("TRITON_INTERPRET")
    if DEVICE == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    from triton.runtime.interpreter import InterpretedFunction

    from minrnn_cli.scans.triton_scan import ops

    if DEVICE == "cpu" and not isinstance(ops.scan_forward_kernel, InterpretedFunction):
        pytest.skip("the kernels were built before TRITON_INTERPRET was set in this process")
    config = ops.CONFIG
    ops.CONFIG = ops.LaunchConfig(chunk_t=8, block_d=4, num_warps=1)
    yield ops
    ops.CONFIG = config
    if saved is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = saved


def _inputs(length, dtype, batch=2, width=5, seed=0):
    gen = torch.Generator().manual_seed(seed + length)
    a = torch.rand(batch, length, width, generator=gen, dtype=torch.float64)
    b = torch.randn(batch, length, width, generator=gen, dtype=torch.float64)
    h0 = torch.randn(batch, width, generator=gen, dtype=torch.float64)
    return [t.to(DEVICE, dtype) for t in (a, b, h0)]


def _scan_and_grads(backend, a, b, h0):
    leaves = [t.detach().clone().requires_grad_() for t in (a, b) + (() if h0 is None else (h0,))]
    h, h_last = scan(leaves[0], leaves[1], leaves[2] if h0 is not None else None, backend=backend)
    weights = torch.linspace(-1, 1, h.numel(), dtype=torch.float64, device=h.device).view_as(h)
    loss = (h.double() * weights).sum() + 3 * h_last.double().sum()
    return h, h_last, torch.autograd.grad(loss, leaves)


def _assert_all_close(got, want, tol):
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.double(), w.double(), rtol=tol, atol=tol)


@requires_triton
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("with_h0", [False, True])
def test_scan_matches_sequential_in_float64(kernels, length, with_h0):
    a, b, h0 = _inputs(length, torch.float64)
    h0 = h0 if with_h0 else None
    h, last, grads = _scan_and_grads("triton", a, b, h0)
    ref_h, ref_last, ref_grads = _scan_and_grads("sequential", a, b, h0)
    _assert_all_close((h, last, *grads), (ref_h, ref_last, *ref_grads), tol=1e-12)


@requires_triton
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.bfloat16, 3e-2), (torch.float16, 3e-3)])
def test_low_precision_inputs_accumulate_in_float32(kernels, dtype, tol):
    """Against float64 on the same rounded inputs: the error of one final rounding, not of T of them."""
    a, b, h0 = _inputs(33, dtype)
    h, last, grads = _scan_and_grads("triton", a, b, h0)
    assert h.dtype == last.dtype == dtype and all(g.dtype == dtype for g in grads)
    ref_h, ref_last, ref_grads = _scan_and_grads("sequential", a.double(), b.double(), h0.double())
    _assert_all_close((h, last, *grads), (ref_h, ref_last, *ref_grads), tol=tol)


@requires_triton
def test_any_strides(kernels):
    a, b, h0 = _inputs(7, torch.float64)
    a_strided = a.transpose(0, 2).contiguous().transpose(0, 2)
    b_strided = torch.stack([b, -b], dim=3)[..., 0]
    h0_broadcast = h0[:1].expand_as(h0)
    assert not a_strided.is_contiguous() and not b_strided.is_contiguous()
    h, last, grads = _scan_and_grads("triton", a_strided, b_strided, h0_broadcast)
    ref_h, ref_last, ref_grads = _scan_and_grads("sequential", a, b, h0_broadcast)
    _assert_all_close((h, last, *grads), (ref_h, ref_last, *ref_grads), tol=1e-12)


def _inside_inf(tensor, margin=8):
    """The same values as a view into a buffer padded with inf along T on both sides."""
    batch, length, width = tensor.shape
    buffer = torch.full((batch, length + 2 * margin, width), float("inf"), dtype=tensor.dtype, device=DEVICE)
    view = buffer[:, margin : margin + length]
    view.copy_(tensor)
    return view


@requires_triton
@pytest.mark.parametrize("cell", ["plain", "mingru", "minlstm"])
def test_reads_stay_inside_the_sequence(kernels, cell):
    """Inputs sit between inf guard bands: a read past either end turns into inf * 0 (a numpy warning, an
    error here, in the interpreter) or a non-finite output."""
    length, width = 11, 5
    a, b, h0 = _inputs(length, torch.float32, width=width)
    grad_h = _inside_inf(torch.randn_like(b))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        if cell == "plain":
            a, b = _inside_inf(a), _inside_inf(b)
            h = _inside_inf(kernels.linear_scan(a, b, h0))
            outputs = (h, *kernels.linear_scan_backward(a, h0, h, grad_h))
        else:
            code = kernels.MINGRU if cell == "mingru" else kernels.MINLSTM
            hidden = _inside_inf(torch.randn(2, length, (kernels.N_GATES[code] + 1) * width, device=DEVICE))
            h = _inside_inf(kernels.cell_scan(hidden, h0, code, True, True))
            outputs = (h, *kernels.cell_scan_backward(hidden, h0, h, grad_h, code, True, True))
    assert all(torch.isfinite(t).all() for t in outputs)


def _cell(kind, log_space, learned_h0, dtype=torch.float64, **options):
    torch.manual_seed(0)
    cls = MinGRU if kind == "mingru" else MinLSTM
    cell = cls(4, expansion=1.25, log_space=log_space, learned_h0=learned_h0, scan_backend="linear", **options)
    return cell.to(DEVICE, dtype)


def _cell_and_grads(cell, x, h0):
    x = x.detach().clone().requires_grad_()
    leaves = [x, *cell.parameters()] + ([] if h0 is None else [h0])
    y, last = cell(x, h0)
    weights = torch.linspace(-1, 1, y.numel(), dtype=torch.float64, device=y.device).view_as(y)
    loss = (y.double() * weights).sum() + last.double().sum()
    return (y, last, *torch.autograd.grad(loss, leaves))


def _fused_twin(cell):
    twin = copy.deepcopy(cell)
    twin.backend_choice = "triton"
    return twin


CELL_KINDS = [("mingru", {}), ("minlstm", {"forget_bias": 1.0}), ("minlstm", {"normalize": False})]


@requires_triton
@pytest.mark.parametrize(("kind", "options"), CELL_KINDS, ids=["mingru", "minlstm", "minlstm-unnormalized"])
@pytest.mark.parametrize("log_space", [True, False])
@pytest.mark.parametrize("initial", ["zero", "learned", "given"])
def test_fused_cell_matches_pytorch_cell(kernels, kind, options, log_space, initial):
    cell = _cell(kind, log_space, learned_h0=initial == "learned", **options)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 33, 4, generator=gen, dtype=torch.float64).to(DEVICE)
    h0 = None
    if initial == "given":
        h0 = torch.rand(2, cell.d_inner, generator=gen, dtype=torch.float64).to(DEVICE).requires_grad_()
    want = _cell_and_grads(cell, x, h0)
    got = _cell_and_grads(_fused_twin(cell), x, h0)
    _assert_all_close(got, want, tol=1e-10)


@requires_triton
@pytest.mark.parametrize("kind", ["mingru", "minlstm"])
def test_fused_cell_in_bfloat16_is_close(kernels, kind):
    cell = _cell(kind, log_space=True, learned_h0=True, dtype=torch.bfloat16)
    x = torch.randn(2, 33, 4, generator=torch.Generator().manual_seed(2)).to(DEVICE, torch.bfloat16)
    got = _cell_and_grads(_fused_twin(cell), x, None)
    want = _cell_and_grads(copy.deepcopy(cell).double(), x.double(), None)  # same rounded weights
    assert all(t.dtype == torch.bfloat16 for t in got)
    _assert_all_close(got, want, tol=5e-2)


@requires_triton
def test_compiles_without_graph_breaks(kernels, monkeypatch):
    """fullgraph=True fails on any graph break; aot_eager traces the backward through the fake kernels too."""
    import minrnn_cli.scans.triton_scan as triton_scan

    monkeypatch.setattr(triton_scan, "_importable", None)  # the first check of triton happens inside the trace
    cell = _fused_twin(_cell("minlstm", log_space=True, learned_h0=True))
    x = torch.randn(2, 9, 4, dtype=torch.float64, device=DEVICE)
    compiled = torch.compile(cell, fullgraph=True, backend="aot_eager")
    want = _cell_and_grads(cell, x, None)
    got = _cell_and_grads(compiled, x, None)
    _assert_all_close(got, want, tol=1e-12)


def test_auto_takes_triton_only_on_cuda():
    assert resolve_backend("auto", torch.device("cpu")) == "linear"
    assert resolve_backend("auto") == "linear"
    expected = "triton" if HAVE_TRITON else "linear"
    assert resolve_backend("auto", torch.device("cuda")) == expected


def test_triton_backend_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    a, b, _ = (t.cpu() for t in _inputs(4, torch.float32))
    with pytest.raises(ValueError, match="scan backend 'triton' .*use 'auto' or 'linear'"):
        scan(a, b, backend="triton")


def test_importing_the_package_does_not_import_triton():
    code = (
        "import sys, minrnn_cli.scans, minrnn_cli.models, minrnn_cli.benchmarking; "
        "assert 'triton' not in sys.modules, 'triton was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(DEVICE != "cuda" or not HAVE_TRITON, reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_sizes_with_the_default_tiles(dtype, monkeypatch):
    """Realistic sizes and the shipped tile sizes (the other tests shrink them)."""
    from minrnn_cli.scans.triton_scan import ops

    monkeypatch.setattr(ops, "CONFIG", ops.LaunchConfig())
    a, b, h0 = _inputs(1000, dtype, batch=4, width=300)
    h, last, grads = _scan_and_grads("triton", a, b, h0)
    ref_h, ref_last, ref_grads = _scan_and_grads("linear", a.double(), b.double(), h0.double())
    tol = 1e-4 if dtype == torch.float32 else 5e-2
    _assert_all_close((h, last, *grads), (ref_h, ref_last, *ref_grads), tol=tol)
