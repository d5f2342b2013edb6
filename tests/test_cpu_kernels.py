"""The compiled CPU kernels of minGRU/minLSTM (scans/fused/cpu_kernels.c) against the float64 sequential
reference, the pure-PyTorch paths they stand in for, and what happens where they cannot be built."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from minrnn_cli.models.cells import MinGRU, MinLSTM
from minrnn_cli.scans.fused import cpu

pytestmark = pytest.mark.skipif(not cpu.available(), reason=f"CPU kernels {cpu.kernel_status()}")

CELLS = [(MinGRU, {}), (MinLSTM, {"normalize": True}), (MinLSTM, {"normalize": False})]


def run_cell(cell, x, state, backward=True):
    y, last = cell(x, state)
    if backward:
        (y.square().sum() + last.sin().sum()).backward()
    return y, last


def assert_gradients_match(cell, reference, x, x64, state, state64):
    """Every gradient (input, parameters, the carried state) of the float32 cell against the float64 one's."""
    pairs = [(x.grad, x64.grad), *zip((p.grad for p in cell.parameters()), (p.grad for p in reference.parameters()),
                                      strict=True)]
    if state is not None:
        pairs.append((state.grad, state64.grad))
    for ours, theirs in pairs:
        torch.testing.assert_close(ours.double(), theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())


@pytest.mark.parametrize(("cls", "options"), CELLS)
@pytest.mark.parametrize("log_space", [True, False])
@pytest.mark.parametrize("start", ["zero", "learned", "carried"])
@pytest.mark.parametrize("length", [1, 7, 513])
def test_compiled_cells_match_the_float64_loop(cls, options, log_space, start, length):
    torch.manual_seed(length)
    cell = cls(12, expansion=1.5, log_space=log_space, learned_h0=start == "learned", **options)
    reference = cls(12, expansion=1.5, log_space=log_space, learned_h0=start == "learned", scan_backend="sequential",
                    **options).double()
    reference.load_state_dict(cell.state_dict())
    x = torch.randn(3, length, 12, requires_grad=True)
    state = torch.randn(3, 18).abs().requires_grad_() if start == "carried" else None
    x64 = x.detach().double().requires_grad_()
    state64 = None if state is None else state.detach().double().requires_grad_()
    y, last = run_cell(cell, x, state)
    y64, last64 = run_cell(reference, x64, state64)
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(last.double(), last64, rtol=1e-5, atol=1e-5)
    assert_gradients_match(cell, reference, x, x64, state, state64)


def run_steps(cell, x, state):
    ys = []
    for t in range(x.shape[1]):
        y, state = cell.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize(("cls", "options"), CELLS)
@pytest.mark.parametrize("start", ["learned", "carried"])
def test_compiled_step_matches_the_float64_loop_with_gradients(cls, options, start):
    """Decoding token by token through the compiled kernel (the bias added inside it) gives the parallel
    float64 reference's outputs, and the same gradients for every parameter, the input and the state."""
    torch.manual_seed(3)
    cell = cls(12, expansion=1.5, learned_h0=start == "learned", **options)
    reference = cls(12, expansion=1.5, learned_h0=start == "learned", scan_backend="sequential", **options).double()
    reference.load_state_dict(cell.state_dict())
    with torch.no_grad():
        cell.to_hidden.bias.normal_()
        reference.to_hidden.bias.copy_(cell.to_hidden.bias)
    x = torch.randn(3, 9, 12, requires_grad=True)
    state = torch.randn(3, 18).abs().requires_grad_() if start == "carried" else None
    x64 = x.detach().double().requires_grad_()
    state64 = None if state is None else state.detach().double().requires_grad_()
    with torch.no_grad():
        decoded, _ = run_steps(cell, x, state)
    y, last = run_steps(cell, x, state)
    (y.square().sum() + last.sin().sum()).backward()
    y64, last64 = run_cell(reference, x64, state64)
    torch.testing.assert_close(decoded.double(), y64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y.double(), y64, rtol=1e-5, atol=1e-5)
    assert_gradients_match(cell, reference, x, x64, state, state64)


@pytest.mark.parametrize(("cls", "options"), CELLS)
def test_compiled_and_pytorch_paths_agree(cls, options, monkeypatch):
    torch.manual_seed(0)
    cell = cls(16, **options)
    x = torch.randn(4, 65, 16)
    compiled = cell(x)[0]
    monkeypatch.setattr(cpu, "handles", lambda hidden: False)
    torch.testing.assert_close(cell(x)[0], compiled, rtol=1e-5, atol=1e-6)


def test_saturated_gates_and_non_finite_inputs():
    """Pre-activations of +-100 stay finite and exact; a NaN in the projection reaches the output."""
    cell = MinGRU(4, expansion=1.0)
    with torch.no_grad():
        cell.to_hidden.weight.zero_()
        cell.to_hidden.bias.copy_(torch.tensor([100.0, -100.0, 100.0, -100.0, 3.0, -3.0, 0.5, -0.5]))
    y, _ = cell(torch.zeros(1, 5, 4))
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[0, -1, :1], torch.tensor([3.5]))  # z = 1: the candidate g(3) = 3.5
    with torch.no_grad():
        cell.to_hidden.bias[4] = float("nan")
    assert torch.isnan(cell(torch.zeros(1, 5, 4))[0][0, :, 0]).all()


def test_saturated_minlstm_gates_match_float64_with_their_gradients():
    """The normalised minLSTM's z = i / (f + i) from forget/input pre-activations up to +-100, values and
    gradients. Both gates below about -44 gave NaN gradients once ((f + i)^2 underflowed to 0); z is still
    well defined there, down to f and i near float32's smallest."""
    forget = [100.0, -100.0, -85.0, -50.0, -88.3, 20.0]
    inputs = [-100.0, 100.0, -82.0, -45.0, -88.3, 20.0]
    candidate = [0.5, -0.5, 2.0, -1.0, 1.5, -3.0]
    cell = MinLSTM(6, expansion=1.0)
    reference = MinLSTM(6, expansion=1.0, scan_backend="sequential").double()
    with torch.no_grad():
        cell.to_hidden.weight.zero_()
        cell.to_hidden.bias.copy_(torch.tensor(forget + inputs + candidate))
    reference.load_state_dict(cell.state_dict())
    x = torch.zeros(2, 9, 6)
    outputs = [model(x.to(dtype), torch.ones(2, 6, dtype=dtype))[0] for model, dtype in
               ((cell, torch.float32), (reference, torch.float64))]
    for y in outputs:
        (y * torch.linspace(-1, 1, 6, dtype=y.dtype)).sum().backward()
    torch.testing.assert_close(outputs[0].double(), outputs[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cell.to_hidden.bias.grad.double(), reference.to_hidden.bias.grad, rtol=1e-4, atol=1e-5)


def test_bfloat16_inputs_accumulate_in_float32():
    torch.manual_seed(0)
    cell = MinLSTM(8)
    x = torch.randn(2, 300, 8)
    y32 = cell(x)[0]
    y16 = cell.to(torch.bfloat16)(x.to(torch.bfloat16))[0]
    assert y16.dtype == torch.bfloat16
    assert (y16.float() - y32).abs().max() < 0.05


def _status_in_subprocess(env: dict) -> str:
    code = "from minrnn_cli.scans.fused import cpu; print(cpu.kernel_status())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_a_compiler_the_pytorch_paths_run(tmp_path):
    status = _status_in_subprocess({"CC": "no-such-cc", "PATH": str(tmp_path), "MINRNN_CACHE_DIR": str(tmp_path)})
    assert status.startswith("unavailable: no C compiler")
    code = ("import torch; from minrnn_cli.models.cells import MinLSTM; from minrnn_cli.scans.fused import cpu; "
            "y, _ = MinLSTM(8)(torch.randn(2, 9, 8)); assert not cpu.available() and y.shape == (2, 9, 8)")
    env = {**os.environ, "PATH": str(tmp_path), "MINRNN_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert _status_in_subprocess({"MINRNN_CPU_KERNELS": "0"}) == "unavailable: MINRNN_CPU_KERNELS=0"


def test_the_build_is_cached_and_an_unwritable_cache_falls_back(tmp_path):
    cache = tmp_path / "cache"
    first = _status_in_subprocess({"MINRNN_CACHE_DIR": str(cache)})
    library = first.removeprefix("compiled: ")
    assert library.startswith(str(cache)) and os.path.isfile(library)
    built_at = os.stat(library).st_mtime_ns
    assert _status_in_subprocess({"MINRNN_CACHE_DIR": str(cache)}) == first
    assert os.stat(library).st_mtime_ns == built_at  # loaded, not rebuilt
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    assert _status_in_subprocess({"MINRNN_CACHE_DIR": str(blocked)}).startswith("compiled: ")
    assert not list(tmp_path.rglob("*.partial"))
