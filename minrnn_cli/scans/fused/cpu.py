"""minGRU and minLSTM on the CPU in one pass over memory each way: `cpu_kernels.c`, compiled at first use.

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

from minrnn_cli.scans.fused.layout import N_GATES, inner_width

log = logging.getLogger("minrnn")
SOURCE = Path(__file__).with_name("cpu_kernels.c")
# Tried in order: the fastest build this compiler and CPU accept. -fno-trapping-math and -fno-math-errno let
# the compiler vectorise floorf (exp's range reduction); NaN and infinity keep their IEEE meaning.
_OPTIMISE = ("-O3", "-fno-trapping-math", "-fno-math-errno")
FLAG_SETS = (
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
    if os.environ.get("MINRNN_CACHE_DIR"):
        return Path(os.environ["MINRNN_CACHE_DIR"]) / "kernels"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "minrnn" / "kernels"


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
                shutil.copyfile(built, partial)
                os.replace(partial, target)  # whole or not at all, for processes building side by side
                return flags
            errors.append(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}")
    raise RuntimeError("; ".join(errors))


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
        if not target.is_file():
            try:
                _build(compiler, target)
            except OSError:  # a cache folder that cannot be written: build into a private one
                target = Path(tempfile.mkdtemp(prefix="minrnn-kernels-")) / target.name
                _build(compiler, target)
        library = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        _status = f"unavailable: the C compiler failed ({error})"
        log.debug(f"CPU cell kernels {_status}")
        return None
    pointer, size = ctypes.c_void_p, ctypes.c_longlong
    library.cell_forward.argtypes = [ctypes.c_int] * 3 + [pointer] * 3 + [size] * 3 + [ctypes.c_int]
    library.cell_backward.argtypes = [ctypes.c_int] * 3 + [pointer] * 7 + [size] * 3 + [ctypes.c_int]
    _library, _status = library, f"compiled: {target}"
    return library


def _pointer(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _forward(hidden: Tensor, h0: Tensor | None, cell: str, log_space: bool, normalize: bool) -> tuple[Tensor, Tensor]:
    """(h, h0 as passed to the kernel: zeros for none) for a contiguous float32 projection."""
    batch, length, width = hidden.shape
    d_inner = inner_width(width, N_GATES[cell])
    h = torch.empty(batch, length, d_inner, dtype=hidden.dtype)
    h0 = hidden.new_zeros(batch, d_inner) if h0 is None else h0
    _load().cell_forward(CELL_CODES[cell], int(normalize), int(log_space), _pointer(hidden), _pointer(h0),
                         _pointer(h), batch, length, d_inner, torch.get_num_threads())
    return h, h0


class _CellScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, h0: Tensor | None, cell: str, log_space: bool, normalize: bool) -> Tensor:
        h, h0 = _forward(hidden, h0, cell, log_space, normalize)
        ctx.settings = (cell, log_space, normalize)
        ctx.save_for_backward(hidden, h0, h)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        hidden, h0, h = ctx.saved_tensors
        cell, log_space, normalize = ctx.settings
        batch, length, d_inner = h.shape
        grad_h = grad_h.contiguous()
        grad_hidden = torch.empty_like(hidden)
        grad_h0 = torch.empty_like(h0)
        scratch = torch.empty(batch, 2, d_inner, dtype=hidden.dtype)
        _load().cell_backward(CELL_CODES[cell], int(normalize), int(log_space), _pointer(hidden), _pointer(h0),
                              _pointer(h), _pointer(grad_h), _pointer(grad_hidden), _pointer(grad_h0),
                              _pointer(scratch), batch, length, d_inner, torch.get_num_threads())
        return grad_hidden, grad_h0 if ctx.needs_input_grad[1] else None, None, None, None


def handles(hidden: Tensor) -> bool:
    """Whether the compiled kernels take this projection: a CPU tensor, when they could be built."""
    return hidden.device.type == "cpu" and hidden.dtype != torch.float64 and available()


def compiled_cell_scan(hidden: Tensor, h0: Tensor | None, cell: str, log_space: bool,
                       normalize: bool) -> tuple[Tensor, Tensor]:
    """(h, h_last) of a minGRU / minLSTM from its projection, by the compiled kernel; computed in float32
    (bf16/fp16 inputs are cast) and returned in hidden's dtype. Without gradients (inference, decoding one
    token at a time) the kernel is called directly, outside autograd."""
    dtype = hidden.dtype
    hidden32 = hidden.to(torch.float32).contiguous()
    h0_32 = None if h0 is None else h0.to(torch.float32).expand(hidden.shape[0], -1).contiguous()
    if torch.is_grad_enabled() and (hidden32.requires_grad or (h0_32 is not None and h0_32.requires_grad)):
        h = _CellScan.apply(hidden32, h0_32, cell, log_space, normalize)
    else:
        h = _forward(hidden32, h0_32, cell, log_space, normalize)[0]
    h = h.to(dtype)
    return h, h[:, -1]
