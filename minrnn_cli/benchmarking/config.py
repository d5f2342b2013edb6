"""The benchmark's settings: one dataclass, built from a plain mapping and validated in one place.

Both front ends (Hydra's `minrnn bench` and the torch-only `python -m minrnn_cli.benchmarking`) end here,
so a bad value gets the same one-line message either way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

DTYPES = ("float32", "bfloat16", "float16", "float64")
# The paper's grid (Fig. 1): powers of two from 64 to 4096.
PAPER_SEQ_LENS = (64, 128, 256, 512, 1024, 2048, 4096)


@dataclass
class BenchConfig:
    """What `minrnn bench` measures: the one source of its keys and defaults (`minrnn bench` registers them as
    Hydra's `bench` config; `minrnn config --config-name bench` prints them)."""

    models: list[str] = field(  # any of minrnn_cli.models.MODELS
        default_factory=lambda: ["mingru", "minlstm", "gru", "gru_loop", "lstm", "lstm_loop", "mamba"]
    )
    seq_len: list[int] = field(default_factory=lambda: [64, 128, 256, 512])  # paper: 64, 128, ..., 4096
    batch_size: int = 64
    d_model: int = 128  # width of every layer
    depth: int = 1  # mixers stacked (the same for every model)
    dtype: str = "float32"  # float32 | bfloat16 | float16 | float64
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    threads: int | None = None  # CPU intra-op threads; None = torch's default; fixed and recorded
    scan_backend: str = "auto"  # minGRU / minLSTM scan: auto | linear | log | sequential | triton
    warmup: int = 2  # untimed calls after the probe call
    repeats: int = 10  # timed calls; median, min and max are reported
    min_repeats: int = 3  # the budget may cut repeats down to this, else the measurement is skipped
    budget_s: float = 60.0  # per measurement of one (model, length): skip when it would take longer
    max_memory_gib: float | None = None  # skip cells predicted above it; None = half the RAM / 90% of the GPU
    optimizer_step: bool = False  # include AdamW's step in the training step
    inference: bool = True  # measure prefill and step decoding
    decode_tokens: int = 16  # tokens per decoding repeat
    memory: bool = True  # measure the training step's peak memory
    seed: int = 0
    plot: bool = True  # write bench.png

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> BenchConfig:
        """Build and validate from plain values (a scalar seq_len or model is taken as a one-item list)."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown bench setting {unknown[0]!r}; allowed: {', '.join(known)}")
        coerced = {name: _coerce(name, value, str(known[name].type)) for name, value in values.items()}
        config = cls(**coerced)
        config.validate()
        return config

    def validate(self) -> None:
        from minrnn_cli.models import MODELS
        from minrnn_cli.scans import BACKENDS

        for name in self.models:
            _choice("models", name, tuple(MODELS))
        if not self.models:
            raise ValueError(f"models is empty; choose from {', '.join(MODELS)}")
        if not self.seq_len:
            raise ValueError("seq_len is empty; give at least one length >= 1")
        for length in self.seq_len:
            _at_least("seq_len", length, 1)
        _choice("dtype", self.dtype, DTYPES)
        _device(self.device)
        _choice("scan_backend", self.scan_backend, BACKENDS)
        for name in ("batch_size", "d_model", "depth", "repeats", "min_repeats", "decode_tokens"):
            _at_least(name, getattr(self, name), 1)
        _at_least("warmup", self.warmup, 0)
        if self.threads is not None:
            _at_least("threads", self.threads, 1)
        if self.min_repeats > self.repeats:
            raise ValueError(f"min_repeats={self.min_repeats} exceeds repeats={self.repeats}")
        if self.max_memory_gib is not None and not self.max_memory_gib > 0:
            raise ValueError(f"max_memory_gib={self.max_memory_gib} must be > 0 (or null for the default)")
        if not self.budget_s > 0:
            raise ValueError(f"budget_s={self.budget_s} must be > 0 (seconds per measurement)")


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: unknown value {value!r}; allowed: {', '.join(allowed)}")


def _device(name: str) -> None:
    """A device this machine has (the resolver training uses; its one-line error as a ValueError)."""
    from minrnn_cli.device import resolve_device
    from minrnn_cli.errors import UserError

    try:
        resolve_device(name, key="device")
    except UserError as error:
        raise ValueError(str(error).removeprefix("error: ")) from None


def _at_least(name: str, value: int, low: int) -> None:
    if value < low:
        raise ValueError(f"{name}={value} must be >= {low}")


def _coerce(name: str, value: object, annotation: str) -> object:
    """Check one value against its field's annotation (lists of str/int, int, float, bool, str)."""
    if annotation.startswith("list["):
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        item_type = annotation[len("list[") : -1]
        return [_coerce(name, item, item_type) for item in items]
    if value is None and "None" in annotation:
        return None
    base = annotation.split(" |")[0]
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError(f"{name}={value!r} must be true or false")
    if base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError(f"{name}={value!r} must be an integer")
    if base == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{name}={value!r} must be a number")
    if isinstance(value, str):
        return value
    raise ValueError(f"{name}={value!r} must be a string")
