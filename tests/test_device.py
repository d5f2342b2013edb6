"""trainer.precision=auto: bf16 autocast only where the device multiplies bf16 natively."""

import pytest
import torch

from minrnn_cli import device as device_module
from minrnn_cli.device import precision_shown, resolve_precision

CPU = torch.device("cpu")


@pytest.mark.parametrize("given", ["fp32", "bf16"])
def test_an_explicit_precision_is_kept(given):
    assert resolve_precision(given, CPU) == given


@pytest.mark.parametrize(("flags", "expected"), [
    ("fpu avx2 avx512f avx512_bf16 fma", "bf16"),   # AVX512-BF16 (Zen 4, Cooper Lake and later)
    ("fpu avx2 amx_bf16 amx_tile", "bf16"),          # AMX (Sapphire Rapids and later)
    ("fpu avx2 avx512f avx512bw fma", "fp32"),       # AVX-512 without bf16: emulated, slower
])
def test_auto_on_the_cpu_follows_its_flags(monkeypatch, tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    real_open = open
    monkeypatch.setattr(device_module, "open", lambda path, *a, **k: real_open(
        cpuinfo if path == "/proc/cpuinfo" else path, *a, **k), raising=False)
    assert resolve_precision("auto", CPU) == expected


def test_auto_is_fp32_where_the_cpu_cannot_be_read(monkeypatch):
    def unreadable(*args, **kwargs):
        raise OSError("no /proc here")

    monkeypatch.setattr(device_module, "open", unreadable, raising=False)
    assert resolve_precision("auto", CPU) == "fp32"


def test_auto_on_mps_is_fp32():
    assert resolve_precision("auto", torch.device("mps")) == "fp32"


def test_the_start_line_says_when_auto_chose():
    assert precision_shown("auto", "bf16") == "bf16 (auto)"
    assert precision_shown("fp32", "fp32") == "fp32"
