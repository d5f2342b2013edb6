"""minGRU, minLSTM and Mamba's selective scan on the CPU in one pass over memory each way: `cpu_kernels.c`,
compiled at first use.

Why compiled: in PyTorch's eager ops every gate, the candidate and each level of a parallel scan is its own
pass over a (B, T, D) tensor, and a fresh tensor each, so a minGRU layer spent 2-3x its projection's matmul
time on arithmetic that needs only a few bytes per element. The kernel reads the projection once and writes
h once forward, and reads projection, h and dL/dh once and writes the projection's gradient once backward.

The source is compiled with the system C compiler (`$CC`, else cc, gcc or clang; OpenMP when it has it)
into a cache folder (`$MINRNN_CACHE_DIR`, else `$XDG_CACHE_HOME/minrnn`, else ~/.cache/minrnn), keyed by the
source, the compiler and the CPU, and loaded with ctypes; a later process loads it in milliseconds. Where no
compiler works, or with `MINRNN_CPU_KERNELS=0`, the cells keep their pure-PyTorch paths (the same results to
float32 rounding); `kernel_status()` says which, and `minrnn bench` records it.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

from minrnn_cli.paths import cache_dir
from minrnn_cli.scans.fused.layout import N_GATES, inner_width

log = logging.getLogger("minrnn")
SOURCE = Path(__file__).with_name("cpu_kernels.c")
# Tried in order: the fastest build this compiler and CPU accept. -fno-trapping-math and -fno-math-errno let
# the compiler vectorise floorf (exp's range reduction); NaN and infinity keep their IEEE meaning.
# -ffp-contract=fast lets a * b + c be one fused multiply-add: -std=c99 turns that off, and without it the
# polynomials ran as separate multiplies and adds (the kernels 1.1-1.4x slower on an AVX2 CPU).
# -mprefer-vector-width=512 (x86 only; others fall through to the next set): GCC tunes recent Intel CPUs for
# 256-bit vectors even with AVX-512, and 16 lanes took the cell and selective-scan kernels to 0.8-0.9x their
# time on an AVX-512 Xeon (interleaved A/B in one process); CPUs without AVX-512 build as before.
_OPTIMISE = ("-O3", "-ffp-contract=fast", "-fno-trapping-math", "-fno-math-errno")
FLAG_SETS = (
    (*_OPTIMISE, "-march=native", "-mprefer-vector-width=512", "-fopenmp"),
    (*_OPTIMISE, "-march=native", "-fopenmp"),
    (*_OPTIMISE, "-fopenmp"),
    (*_OPTIMISE, "-march=native"),
    _OPTIMISE,
)
CELL_CODES = {"mingru": 1, "minlstm": 2}  # the kernel's `cell` argument: its number of gates

_library: ctypes.CDLL | None = None
_status: str | None = None


def kernel_status() -> str:
    """'compiled: <library>' or 'unavailable: <why>' (tries to build on first call)."""
    _load()
    return _status or ""


def available() -> bool:
    return _load() is not None


def _cache_dir() -> Path:
    return cache_dir("kernels")


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """What the compiled code depends on besides its source and compiler (-march=native)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {platform.system()} {flags}"


def _build(compiler: str, target: Path) -> tuple[str, ...]:
    """Compile the source to `target` with the first flag set the compiler accepts; returns the flags."""
    errors = []
    with tempfile.TemporaryDirectory(prefix="minrnn-kernels-") as scratch:
        built = Path(scratch) / "kernels.so"
        for flags in FLAG_SETS:
            command = [compiler, *flags, "-fPIC", "-shared", "-std=c99", str(SOURCE), "-o", str(built), "-lm"]
            done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            if done.returncode == 0:
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
                try:
                    shutil.copyfile(built, partial)
                    os.replace(partial, target)  # whole or not at all, for processes building side by side
                except OSError:
                    partial.unlink(missing_ok=True)  # a full cache disk keeps no torn library
                    raise
                return flags
            errors.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    raise RuntimeError("; ".join(errors))


def _build_and_load(compiler: str, target: Path) -> tuple[ctypes.CDLL | None, str]:
    """Build into the cache; a cache folder that cannot be written (read-only, full, a file in the way) costs
    one warning and a build in a temporary folder, removed once loaded; where that fails too, the cells keep
    their PyTorch paths (None). Also returns where the library was built."""
    global _status
    try:
        _build(compiler, target)
        return ctypes.CDLL(str(target)), str(target)
    except OSError as error:
        cache_error = error
    with tempfile.TemporaryDirectory(prefix="minrnn-kernels-") as scratch:
        try:
            _build(compiler, Path(scratch) / target.name)
            library = ctypes.CDLL(str(Path(scratch) / target.name))  # stays loaded once its file is gone
        except OSError as error:
            _status = f"unavailable: neither the cache {target.parent} nor a temporary folder can be written ({error})"
            log.warning(f"CPU cell kernels: the cache folder {target.parent} cannot be written "
                        f"({cache_error.strerror}), nor a temporary folder ({error.strerror}); using the PyTorch "
                        "path (slower). Set MINRNN_CACHE_DIR to a writable folder")
            return None, ""
    log.warning(f"CPU cell kernels: the cache folder {target.parent} cannot be written ({cache_error.strerror}); "
                "built in a temporary folder for this process. Set MINRNN_CACHE_DIR to a writable folder to keep "
                "the build")
    return library, f"a temporary folder ({target.parent} cannot be written)"


def _load() -> ctypes.CDLL | None:
    global _library, _status
    if _status is not None:
        return _library
    if os.environ.get("MINRNN_CPU_KERNELS") == "0":
        _status = "unavailable: MINRNN_CPU_KERNELS=0"
        return None
    compiler = _compiler()
    if compiler is None:
        _status = "unavailable: no C compiler (set CC, or install cc/gcc/clang)"
        return None
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    key = hashlib.sha256(b"\0".join(part.encode() if isinstance(part, str) else part for part in (
        SOURCE.read_bytes(), compiler, version, _cpu_signature(), repr(FLAG_SETS)))).hexdigest()[:16]
    target = _cache_dir() / f"cells-{key}.so"
    try:
        library, built = (ctypes.CDLL(str(target)), str(target)) if target.is_file() else \
            _build_and_load(compiler, target)
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        _status = f"unavailable: the C compiler failed ({error})"
        log.debug(f"CPU cell kernels {_status}")
        return None
    if library is None:
        return None
    pointer, size = ctypes.c_void_p, ctypes.c_longlong
    library.cell_forward.argtypes = [ctypes.c_int] * 3 + [pointer] * 4 + [size] * 3 + [ctypes.c_int]
    library.cell_backward.argtypes = [ctypes.c_int] * 3 + [pointer] * 9 + [size] * 3 + [ctypes.c_int]
    library.selective_forward.argtypes = [pointer] * 5 + [size] + [pointer] * 2 + [size] + [pointer] * 4 + \
        [size] * 5 + [ctypes.c_int] * 2
    library.selective_backward.argtypes = [pointer] * 5 + [size] + [pointer] * 2 + [size] + [pointer] * 8 + \
        [size] + [pointer] * 2 + [size] * 5 + [ctypes.c_int] * 2
    library.causal_conv_forward.argtypes = [pointer, size] + [pointer] * 4 + [size] * 4 + [ctypes.c_int] * 2
    library.causal_conv_backward.argtypes = [pointer, size] + [pointer] * 6 + [size] + [pointer] * 2 + \
        [size] * 4 + [ctypes.c_int] * 2
    library.rms_norm_forward.argtypes = [pointer] * 4 + [size] * 2 + [ctypes.c_float, ctypes.c_int]
    library.rms_norm_backward.argtypes = [pointer] * 6 + [size] * 2 + [ctypes.c_int]
    library.geglu_forward.argtypes = [pointer] * 2 + [size] * 2 + [ctypes.c_int] * 2
    library.geglu_backward.argtypes = [pointer] * 3 + [size] * 2 + [ctypes.c_int] * 2
    _library, _status = library, f"compiled: {built}"
    return library


def _pointer(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _forward(hidden: Tensor, bias: Tensor, h0: Tensor | None, cell: str, log_space: bool,
             normalize: bool) -> tuple[Tensor, Tensor]:
    """(h, h0 as passed to the kernel: zeros for none) for a contiguous float32 projection and its bias."""
    batch, length, width = hidden.shape
    d_inner = inner_width(width, N_GATES[cell])
    h = torch.empty(batch, length, d_inner, dtype=hidden.dtype)
    h0 = hidden.new_zeros(batch, d_inner) if h0 is None else h0
    _load().cell_forward(CELL_CODES[cell], int(normalize), int(log_space), _pointer(hidden), _pointer(bias),
                         _pointer(h0), _pointer(h), batch, length, d_inner, torch.get_num_threads())
    return h, h0


class _CellScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, bias: Tensor, h0: Tensor | None, cell: str, log_space: bool,
                normalize: bool) -> Tensor:
        h, h0 = _forward(hidden, bias, h0, cell, log_space, normalize)
        ctx.settings = (cell, log_space, normalize)
        ctx.save_for_backward(hidden, bias, h0, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        hidden, bias, h0, h = ctx.saved_tensors
        cell, log_space, normalize = ctx.settings
        batch, length, d_inner = h.shape
        grad_h = grad_h.contiguous()
        grad_hidden = torch.empty_like(hidden)
        grad_bias_rows = hidden.new_empty(batch, hidden.shape[2])
        grad_h0 = torch.empty_like(h0)
        scratch = torch.empty(batch, 2, d_inner, dtype=hidden.dtype)
        _load().cell_backward(CELL_CODES[cell], int(normalize), int(log_space), _pointer(hidden), _pointer(bias),
                              _pointer(h0), _pointer(h), _pointer(grad_h), _pointer(grad_hidden),
                              _pointer(grad_bias_rows), _pointer(grad_h0), _pointer(scratch), batch, length,
                              d_inner, torch.get_num_threads())
        grad_bias = grad_bias_rows.sum(0) if ctx.needs_input_grad[1] else None
        return grad_hidden, grad_bias, grad_h0 if ctx.needs_input_grad[2] else None, None, None, None


def handles(hidden: Tensor) -> bool:
    """Whether the compiled kernels take this projection: a CPU tensor, when they could be built."""
    return hidden.device.type == "cpu" and hidden.dtype != torch.float64 and available()


def compiled_cell_scan(hidden: Tensor, h0: Tensor | None, cell: str, log_space: bool, normalize: bool,
                       bias: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(h, h_last) of a minGRU / minLSTM from its projection, by the compiled kernel; computed in float32
    (bf16/fp16 inputs are cast) and returned in hidden's dtype. `bias` (the projection's, when `hidden` was
    computed without it) is added inside the kernel. Without gradients (inference, decoding one token at a
    time) the kernel is called directly, outside autograd."""
    dtype = hidden.dtype
    hidden32 = hidden.to(torch.float32).contiguous()
    bias32 = hidden32.new_zeros(hidden.shape[-1]) if bias is None else bias.to(torch.float32).contiguous()
    h0_32 = None if h0 is None else h0.to(torch.float32).expand(hidden.shape[0], -1).contiguous()
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden32, bias32, h0_32)):
        h = _CellScan.apply(hidden32, bias32, h0_32, cell, log_space, normalize)
    else:
        h = _forward(hidden32, bias32, h0_32, cell, log_space, normalize)[0]
    h = h.to(dtype)
    return h, h[:, -1]


# ---- Mamba's selective scan -------------------------------------------------------------------------------

def handles_selective(u: Tensor, A: Tensor) -> bool:
    """Whether the compiled selective scan takes these inputs: CPU, not float64 (any state size N)."""
    return u.device.type == "cpu" and u.dtype != torch.float64 and A.dtype != torch.float64 and available()


def _rows_of(t: Tensor) -> tuple[Tensor, int]:
    """A float32 (B, T, w) whose steps are rows at a common stride, and that stride (views into a wider tensor
    such as x_proj's or in_proj's output are kept as they are)."""
    t = t.float()
    if t.stride(2) != 1 or t.stride(0) != t.shape[1] * t.stride(1):
        t = t.contiguous()
    return t, t.stride(1)


def _scan_operands(u, delta, A, B, C, D, z) -> tuple:
    """The scan's inputs as the kernels take them: float32 u, delta (contiguous), A, B and C at one row stride
    (views into x_proj's output kept as they are), D, z (a view into in_proj's output) and its row stride."""
    u, delta = u.float().contiguous(), delta.float().contiguous()
    b_in, bc_stride = _rows_of(B)
    c_in, c_stride = _rows_of(C)
    if c_stride != bc_stride:
        b_in, c_in = b_in.contiguous(), c_in.contiguous()
        bc_stride = b_in.shape[2]
    z_in, z_stride = (None, 0) if z is None else _rows_of(z)
    skip = None if D is None else D.float().contiguous()
    return u, delta, A.float().contiguous(), b_in, c_in, bc_stride, skip, z_in, z_stride


def selective_forward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                      z: Tensor | None, h0: Tensor | None, chunk_len: int, keep: bool, softplus: bool
                      ) -> tuple[Tensor, Tensor, Tensor | None]:
    """(y, h_last, starts) in float32 for u, delta, z (B, T, D), B, C (B, T, N), A (D, N), D (D,), h0 (B, D, N);
    starts (B, chunks, N, D) is the state before every chunk, for `selective_backward` (None unless `keep`).
    With `softplus`, delta is its pre-activation and the kernel takes its softplus."""
    batch, length, d = u.shape
    n = A.shape[1]
    u, delta, a, b_in, c_in, bc_stride, skip, z_in, z_stride = _scan_operands(u, delta, A, B, C, D, z)
    h0 = None if h0 is None else h0.float().contiguous()
    y = torch.empty(batch, length, d)
    h_last = torch.empty(batch, d, n)
    chunks = -(-length // chunk_len)
    starts = torch.empty(batch, chunks, n, d) if keep else None
    _load().selective_forward(_pointer(u), _pointer(delta), _pointer(a), _pointer(b_in), _pointer(c_in), bc_stride,
                              _pointer(skip), _pointer(z_in), z_stride, _pointer(h0), _pointer(y), _pointer(h_last),
                              _pointer(starts), batch, length, d, n, chunk_len, int(softplus),
                              torch.get_num_threads())
    return y, h_last, starts


def selective_backward(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                       z: Tensor | None, starts: Tensor, grad_y: Tensor, grad_h_last: Tensor | None,
                       chunk_len: int, need_h0: bool, softplus: bool, grad_z: Tensor | None = None) -> tuple:
    """The gradients (u, delta, A, B, C, D, z, h0) in float32 of `selective_forward`'s (y, h_last), from the
    states it kept; None for D, z, h0 when there is none (or it is not needed). `grad_z`, a float32 (B, T, D)
    with unit channel stride (a view into a wider gradient), receives dL/dz when given. With `softplus`, delta is
    its pre-activation and the gradient returned is the pre-activation's."""
    batch, length, d = u.shape
    n = A.shape[1]
    u, delta, a, b_in, c_in, bc_stride, skip, z_in, z_stride = _scan_operands(u, delta, A, B, C, D, z)
    if z is not None and grad_z is None:
        grad_z = torch.empty(batch, length, d)
    grad_y = grad_y.float().contiguous()
    grad_h_last = None if grad_h_last is None else grad_h_last.float().contiguous()
    grad_u, grad_delta = torch.empty(batch, length, d), torch.empty(batch, length, d)
    grad_b, grad_c = torch.empty(batch, length, n), torch.empty(batch, length, n)
    grad_h0 = torch.empty(batch, d, n) if need_h0 else None
    threads = torch.get_num_threads()
    accum = torch.empty(threads, d * n + d)
    _load().selective_backward(_pointer(u), _pointer(delta), _pointer(a), _pointer(b_in), _pointer(c_in),
                               bc_stride, _pointer(skip), _pointer(z_in), z_stride, _pointer(starts),
                               _pointer(grad_y), _pointer(grad_h_last), _pointer(grad_u), _pointer(grad_delta),
                               _pointer(grad_b), _pointer(grad_c), _pointer(grad_z),
                               0 if grad_z is None else grad_z.stride(1), _pointer(grad_h0),
                               _pointer(accum), batch, length, d, n, chunk_len, int(softplus), threads)
    totals = accum.sum(0)
    grad_a = totals[: d * n].view(d, n)
    grad_skip = None if D is None else totals[d * n:]
    return grad_u, grad_delta, grad_a, grad_b, grad_c, grad_skip, grad_z, grad_h0


def causal_conv(x: Tensor, conv0: Tensor | None, weight: Tensor, bias: Tensor, silu: bool) -> Tensor:
    """u = causal depthwise conv(x), through silu when `silu`, float32: x (B, T, D) with unit channel stride (a
    view into in_proj's output, say), conv0 (B, D, k - 1) the inputs before the sequence (None: zeros), weight
    (k, D), bias (D,)."""
    batch, length, d = x.shape
    x, stride = _rows_of(x)
    conv0 = None if conv0 is None else conv0.float().contiguous()
    weight, bias = weight.float().contiguous(), bias.float().contiguous()
    u = torch.empty(batch, length, d)
    _load().causal_conv_forward(_pointer(x), stride, _pointer(conv0), _pointer(weight), _pointer(bias), _pointer(u),
                                batch, length, d, weight.shape[0], int(silu), torch.get_num_threads())
    return u


def causal_conv_backward(x: Tensor, conv0: Tensor | None, weight: Tensor, bias: Tensor, grad_u: Tensor,
                         grad_last: Tensor | None, grad_x: Tensor, silu: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """The backward of `causal_conv` (grad_u, float32 contiguous, is overwritten): writes dL/dx into grad_x (float32,
    unit channel stride) and returns (dL/dweight (k, D), dL/dbias, dL/dconv0 or None). grad_last (B, D, k - 1) is
    the gradient of the last k - 1 inputs, the carried conv state, or None."""
    batch, length, d = x.shape
    k = weight.shape[0]
    x, stride = _rows_of(x)
    conv0 = None if conv0 is None else conv0.float().contiguous()
    grad_last = None if grad_last is None else grad_last.float().contiguous()
    weight, bias = weight.float().contiguous(), bias.float().contiguous()
    grad_conv0 = None if conv0 is None else torch.empty(batch, d, k - 1)
    threads = torch.get_num_threads()
    accum = torch.empty(threads, k * d + d)
    _load().causal_conv_backward(_pointer(x), stride, _pointer(conv0), _pointer(weight), _pointer(bias),
                                 _pointer(grad_u), _pointer(grad_last), _pointer(grad_x), grad_x.stride(1),
                                 _pointer(grad_conv0), _pointer(accum), batch, length, d, k, int(silu), threads)
    totals = accum.sum(0)
    return totals[: k * d].view(k, d), totals[k * d:], grad_conv0


# ---- the residual block's RMSNorm ----------------------------------------------------------------------------

def rms_norm_forward(x: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(y, 1 / rms per row) of RMSNorm over the last dimension, float32; x contiguous, weight (D,)."""
    width = x.shape[-1]
    rows = x.numel() // width
    y = torch.empty_like(x)
    rstd = torch.empty(x.shape[:-1])
    _load().rms_norm_forward(_pointer(x), _pointer(weight), _pointer(y), _pointer(rstd), rows, width, eps,
                             torch.get_num_threads())
    return y, rstd


def rms_norm_backward(x: Tensor, weight: Tensor, rstd: Tensor, grad_y: Tensor) -> tuple[Tensor, Tensor]:
    """(dL/dx, dL/dweight) of `rms_norm_forward`; grad_y float32 contiguous."""
    width = x.shape[-1]
    rows = x.numel() // width
    grad_x = torch.empty_like(x)
    threads = torch.get_num_threads()
    accum = torch.empty(threads, width)
    _load().rms_norm_backward(_pointer(x), _pointer(weight), _pointer(rstd), _pointer(grad_y), _pointer(grad_x),
                              _pointer(accum), rows, width, threads)
    return grad_x, accum.sum(0)


# ---- the residual block's GEGLU ------------------------------------------------------------------------------

def geglu_forward(h: Tensor) -> Tensor:
    """value * gelu(gate) for h = [value | gate] (..., 2H), contiguous float32 or bfloat16, in h's dtype."""
    width = h.shape[-1] // 2
    out = h.new_empty(*h.shape[:-1], width)
    _load().geglu_forward(_pointer(h), _pointer(out), h.numel() // (2 * width), width,
                          int(h.dtype == torch.bfloat16), torch.get_num_threads())
    return out


def geglu_backward(h: Tensor, grad_out: Tensor) -> Tensor:
    """dL/dh of `geglu_forward`; grad_out contiguous, in h's dtype."""
    width = h.shape[-1] // 2
    grad_h = torch.empty_like(h)
    _load().geglu_backward(_pointer(h), _pointer(grad_out), _pointer(grad_h), h.numel() // (2 * width), width,
                           int(h.dtype == torch.bfloat16), torch.get_num_threads())
    return grad_h
