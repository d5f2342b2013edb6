"""Mamba without mambapy's parallel scan: the chunked selective scan against a plain loop, the mixer against
mambapy's MambaBlock (outputs and gradients), parallel = chunked = step with the state carried, and no
(B, T, D_inner, N) tensor in forward or backward."""

import pytest
import torch
from mambapy.mamba import MambaBlock
from torch._C._profiler import _EventType
from torch.profiler import ProfilerActivity, profile

from minrnn_cli.models.mamba import MambaMixer
from minrnn_cli.scans import selective_scan
from minrnn_cli.scans.fused import cpu
from minrnn_cli.scans.selective import selective_scan_sequential

F64 = torch.float64


def scan_inputs(batch, length, d, n, dtype=F64, seed=0, full=True):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=F64) * scale + shift).to(dtype).requires_grad_()

    inputs = {"u": rand(batch, length, d), "delta": rand(batch, length, d, scale=0.5, shift=-1.0),
              "A": (-torch.rand(d, n, generator=g, dtype=F64) * 4 - 0.1).to(dtype).requires_grad_(),
              "B": rand(batch, length, n), "C": rand(batch, length, n)}
    if full:
        inputs.update(D=rand(d), z=rand(batch, length, d), delta_bias=rand(d, scale=0.5), h0=rand(batch, d, n))
    return inputs


def outputs_and_grads(fn, inputs, seed=1):
    y, h = fn(**inputs)
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g, dtype=F64).to(y.dtype)
    gh = torch.randn(h.shape, generator=g, dtype=F64).to(h.dtype)
    grads = torch.autograd.grad((y * gy).sum() + (h * gh).sum(), list(inputs.values()))
    return y, h, dict(zip(inputs, grads, strict=True))


@pytest.mark.parametrize(("length", "chunk_len", "batch_block"), [(1, 16, 2), (7, 3, 2), (64, 5, 3), (513, 16, 2)])
def test_the_selective_scan_matches_a_float64_loop(length, chunk_len, batch_block):
    inputs = scan_inputs(3, length, 5, 4)
    y, h, grads = outputs_and_grads(lambda **kw: selective_scan(**kw, delta_softplus=True, chunk_len=chunk_len,
                                                                batch_block=batch_block), inputs)
    y_ref, h_ref, grads_ref = outputs_and_grads(lambda **kw: selective_scan_sequential(**kw, delta_softplus=True),
                                                inputs)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)
    assert set(grads) == {"u", "delta", "A", "B", "C", "D", "z", "delta_bias", "h0"}
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], rtol=1e-10, atol=1e-10, msg=name)


def test_the_selective_scan_without_its_options_and_in_float32():
    bare = scan_inputs(2, 21, 6, 3, full=False)
    y, h, grads = outputs_and_grads(lambda **kw: selective_scan(**kw, chunk_len=4), bare)
    y_ref, h_ref, grads_ref = outputs_and_grads(selective_scan_sequential, bare)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-10)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], rtol=1e-10, atol=1e-10, msg=name)
    single = scan_inputs(2, 40, 6, 3, dtype=torch.float32)
    y, h, grads = outputs_and_grads(lambda **kw: selective_scan(**kw, delta_softplus=True, chunk_len=16), single)
    exact = {name: value.detach().double().requires_grad_() for name, value in single.items()}
    y_ref, h_ref, grads_ref = outputs_and_grads(lambda **kw: selective_scan_sequential(**kw, delta_softplus=True),
                                                exact)
    assert y.dtype == h.dtype == torch.float32
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h.double(), h_ref, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        assert grad.dtype == torch.float32
        torch.testing.assert_close(grad.double(), grads_ref[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.skipif(not cpu.available(), reason="no C compiler: the compiled kernels cannot be built")
@pytest.mark.parametrize(("full", "softplus", "chunk_len", "length", "n"),
                         [(True, True, 5, 50, 5), (False, False, 24, 50, 5), (True, False, 16, 33, 5),
                          (False, True, 3, 2, 70)])
def test_the_compiled_scan_matches_the_float64_loop(full, softplus, chunk_len, length, n):
    """The kernels' tiles of 16 steps against chunks that start inside a tile (5, 24), end with it (16) or are
    longer than the call, 37 channels (two blocks of 16 lanes and a part), with and without D, z and h0, and
    a state of 70 (the kernels keep any N in memory they allocate)."""
    inputs = scan_inputs(2, length, 37, n, dtype=torch.float32, full=full)
    if not softplus:  # a step size as softplus would give it: positive, so the states decay
        inputs["delta"] = torch.nn.functional.softplus(inputs["delta"].detach()).requires_grad_()
        inputs.pop("delta_bias", None)
    assert cpu.handles_selective(inputs["u"], inputs["A"])
    y, h, grads = outputs_and_grads(lambda **kw: selective_scan(**kw, delta_softplus=softplus, chunk_len=chunk_len),
                                    inputs)
    exact = {name: value.detach().double().requires_grad_() for name, value in inputs.items()}
    y_ref, h_ref, grads_ref = outputs_and_grads(
        lambda **kw: selective_scan_sequential(**kw, delta_softplus=softplus), exact)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h.double(), h_ref, rtol=1e-5, atol=1e-5)
    for name, grad in grads.items():
        torch.testing.assert_close(grad.double(), grads_ref[name], rtol=1e-5, atol=1e-5, msg=name)


def random_mixer(dtype, seed=0, **options):
    torch.manual_seed(seed)
    mixer = MambaMixer(16, **options).to(dtype)
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return mixer


def mambapy_forward(mixer, x):
    """mambapy's own MambaBlock.forward (its parallel scan) on the mixer's parameters."""
    mixer.block.config.use_cuda = False
    return MambaBlock.forward(mixer.block, x)


def relative_error(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp(min=1.0)).item()


def compare_with_mambapy(mixer, x, tol):
    y, _ = mixer(x)
    y_ref = mambapy_forward(mixer, x)
    assert relative_error(y, y_ref) < tol
    gy = torch.randn_like(y)
    wrt = [x, *mixer.parameters()]
    names = ["x", *(name for name, _ in mixer.named_parameters())]
    for name, g, g_ref in zip(names, torch.autograd.grad((y * gy).sum(), wrt),
                              torch.autograd.grad((y_ref * gy).sum(), wrt), strict=True):
        assert relative_error(g, g_ref) < tol, name


@pytest.mark.parametrize(("chunk_len", "batch_block"), [(16, 8), (5, 2), (3, 3)])
def test_the_mixer_matches_mambapy_in_float32(chunk_len, batch_block):
    mixer = random_mixer(torch.float32, chunk_len=chunk_len, batch_block=batch_block)
    x = torch.randn(3, 37, 16, requires_grad=True)
    compare_with_mambapy(mixer, x, 1e-5)


def test_the_mixer_matches_mambapy_in_float64():
    """mambapy casts A_log and D to float32 (`.float()`); here they stay float64, so both run in float64."""
    mixer = random_mixer(F64, chunk_len=4, batch_block=2)
    for p in (mixer.block.A_log, mixer.block.D):
        p.float = lambda p=p: p
    x = torch.randn(3, 19, 16, dtype=F64, requires_grad=True)
    compare_with_mambapy(mixer, x, 1e-10)


# float64 runs the PyTorch chunks, float32 the compiled CPU kernels (where a C compiler works)
PATHS = [pytest.param(F64, 1e-12, id="float64"), pytest.param(torch.float32, 2e-5, id="float32")]


@pytest.mark.parametrize(("dtype", "tol"), PATHS)
def test_parallel_chunked_and_step_modes_agree(dtype, tol):
    mixer = random_mixer(dtype, chunk_len=4, batch_block=2)
    x = torch.randn(3, 23, 16, dtype=dtype, requires_grad=True)
    y, (h, conv) = mixer(x)
    assert h.shape == (3, 32, 16) and conv.shape == (3, 32, 3)
    for split in (2, 9):  # 2 < d_conv - 1: the second call's conv window reaches into the first call's state
        first, state = mixer(x[:, :split])
        second, (h2, conv2) = mixer(x[:, split:], state)
        torch.testing.assert_close(torch.cat([first, second], 1), y, rtol=tol, atol=tol)
        torch.testing.assert_close(h2, h, rtol=tol, atol=tol)
        torch.testing.assert_close(conv2, conv, rtol=tol, atol=tol)
    state, stepped = None, []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)
        stepped.append(y_t)
    torch.testing.assert_close(torch.stack(stepped, 1), y, rtol=tol, atol=tol)
    torch.testing.assert_close(state[0], h, rtol=tol, atol=tol)
    torch.testing.assert_close(state[1], conv, rtol=tol, atol=tol)


@pytest.mark.parametrize(("dtype", "tol"), PATHS)
def test_gradients_flow_through_a_carried_state(dtype, tol):
    mixer = random_mixer(dtype, chunk_len=3, batch_block=2)
    x = torch.randn(3, 17, 16, dtype=dtype, requires_grad=True)
    weights = torch.randn(3, 17, 16, dtype=dtype)
    params = [x, *mixer.parameters()]
    full = torch.autograd.grad((mixer(x)[0] * weights).sum(), params)
    first, state = mixer(x[:, :2])
    second, _ = mixer(x[:, 2:], state)
    chunked = torch.autograd.grad((torch.cat([first, second], 1) * weights).sum(), params)
    for g_chunked, g_full in zip(chunked, full, strict=True):
        torch.testing.assert_close(g_chunked, g_full, rtol=tol * 10, atol=tol * 10)


def chained_outputs_and_grads(mixer, x, split):
    """Two calls with the state carried from the first to the second: outputs, final state, and the gradients
    of a loss on all of them with respect to x and every parameter."""
    first, state = mixer(x[:, :split])
    second, (h, conv) = mixer(x[:, split:], state)
    outputs = (torch.cat([first, second], 1), h, conv)
    g = torch.Generator().manual_seed(3)
    loss = sum((out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum() for out in outputs)
    return outputs, torch.autograd.grad(loss, [x, *mixer.parameters()])


@pytest.mark.skipif(not cpu.available(), reason="no C compiler: the compiled kernels cannot be built")
@pytest.mark.parametrize(("d_model", "length", "split"), [(12, 21, 2), (8, 40, 17), (20, 5, 1)])
def test_the_compiled_kernels_match_the_pytorch_path(monkeypatch, d_model, length, split):
    """Widths that are not a multiple of the kernel's 16 lanes, calls shorter than the conv window, carried
    states both ways: the compiled conv and scan give the PyTorch chunks' outputs and gradients."""
    torch.manual_seed(0)
    mixer = MambaMixer(d_model, chunk_len=4, batch_block=2)
    with torch.no_grad():
        for param in mixer.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    x = torch.randn(3, length, d_model, requires_grad=True)
    compiled, compiled_grads = chained_outputs_and_grads(mixer, x, split)
    monkeypatch.setattr(cpu, "handles_selective", lambda *args: False)
    reference, reference_grads = chained_outputs_and_grads(mixer, x, split)
    for got, want in zip((*compiled, *compiled_grads), (*reference, *reference_grads), strict=True):
        assert relative_error(got, want) < 2e-5


def test_the_cuda_kernel_branch_passes_mamba_ssm_its_layout(monkeypatch):
    """With a stand-in for mamba-ssm's selective_scan_fn ((B, D, L) tensors, last state returned), the kernel
    branch computes what the package's own path computes."""
    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
        assert u.shape == delta.shape == z.shape and B.shape == C.shape == (u.shape[0], A.shape[1], u.shape[2])
        t = lambda v: v.transpose(1, 2)  # noqa: E731
        y, last = selective_scan(t(u), t(delta), A, t(B), t(C), D, t(z), delta_bias, delta_softplus)
        return (t(y), last) if return_last_state else t(y)

    mixer = random_mixer(F64)
    x = torch.randn(2, 11, 16, dtype=F64, requires_grad=True)
    y, (h, conv) = mixer(x)
    grads = torch.autograd.grad(y.sum(), [x, *mixer.parameters()])
    monkeypatch.setattr(mixer, "_cuda_scan", selective_scan_fn)
    monkeypatch.setattr(mixer, "_kernel_applies", lambda xz: True)
    y_k, (h_k, conv_k) = mixer(x)
    tol = 1e-6  # the branch hands the kernel D and the dt bias in float32, as mamba-ssm wants them
    torch.testing.assert_close(y_k, y, rtol=tol, atol=tol)
    torch.testing.assert_close(h_k, h, rtol=tol, atol=tol)
    torch.testing.assert_close(conv_k, conv, rtol=1e-12, atol=1e-12)
    for g_k, g in zip(torch.autograd.grad(y_k.sum(), [x, *mixer.parameters()]), grads, strict=True):
        torch.testing.assert_close(g_k, g, rtol=tol, atol=tol)


def largest_allocation(fn) -> int:
    """The largest CPU allocation (bytes) torch's allocator makes while fn runs, from the profiler's events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    largest, pending = 0, list(prof.profiler.kineto_results.experimental_event_tree())
    while pending:
        event = pending.pop()
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            largest = max(largest, event.extra_fields.alloc_size)
        pending.extend(event.children)
    return largest


def test_no_state_sized_tensor_is_allocated_in_forward_or_backward():
    batch, length, d_model = 4, 256, 32
    torch.manual_seed(0)
    mixer = MambaMixer(d_model)
    d_inner, n = mixer.config.d_inner, mixer.config.d_state
    state_sized = batch * length * d_inner * n * 4  # bytes of one (B, T, D_inner, N) float32 tensor
    x = torch.randn(batch, length, d_model)

    def train_step(forward):
        mixer.zero_grad(set_to_none=True)
        forward(x).square().mean().backward()

    train_step(lambda v: mixer(v)[0])  # warm-up
    assert largest_allocation(lambda: train_step(lambda v: mambapy_forward(mixer, v))) >= state_sized  # it sees them
    largest = largest_allocation(lambda: train_step(lambda v: mixer(v)[0]))
    assert largest <= batch * length * 2 * d_inner * 4  # nothing beyond in_proj's output (B, T, 2 D_inner)
    assert largest < state_sized / 4
