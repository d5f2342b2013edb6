"""The model a config names, under the head its task declares (a one-line error for a bad name or option)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from minrnn_cli.errors import UserError


def check_model_config(model_cfg: Mapping[str, Any]) -> None:
    """The model's name and every option against the model registry's table, before anything is built."""
    from minrnn_cli.models import MODELS, check_options

    options = dict(model_cfg)
    name = options.pop("name", None)
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    try:
        check_options(name, options, prefix="model.")
    except ValueError as error:
        raise UserError(str(error)) from None


def build_task_model(model_cfg: Mapping[str, Any], task) -> nn.Module:
    """The configured model with the head `task.head` asks for (a language model, a classifier, a policy)."""
    return build_headed_model(model_cfg, task.head)


def build_headed_model(model_cfg: Mapping[str, Any], head) -> nn.Module:
    """The configured model under `head` (models/heads.py)."""
    from minrnn_cli.models import build_model

    check_model_config(model_cfg)
    options = dict(model_cfg)
    name = options.pop("name")
    try:
        return build_model(name, head, **options)
    except (ValueError, TypeError) as error:  # options valid one by one that do not fit together
        raise UserError(f"model {name}: {error}") from None


# ---- will it fit? ---------------------------------------------------------------------------------------
# A rough estimate of a training step's memory, made before anything is allocated, so that a size no machine
# holds (model.d_model=100000, task.batch_size=10000000) is one line rather than an allocator's failure or
# the machine swapping. It counts float32 numbers: the backbone's weights (counted exactly, built on the
# meta device, which allocates nothing), their gradients and Adam's two moments (4 copies), and one batch's
# activations kept for the backward pass, taken as ACTIVATION_FLOATS numbers per token, layer and unit of
# the widest layer (d_model x max(1, expansion, mlp_ratio)), plus the attention matrices of a transformer.
# The embedding and output layer, the data and PyTorch's own overhead are left out: it is an estimate,
# meant to be above what the blocks need, and a run is refused only when it exceeds all the memory there is.

FLOAT_BYTES = 4
ACTIVATION_FLOATS = 16
LENGTH_KEYS = ("seq_len", "max_length", "max_train_length")  # a task's training sequence length


def training_sequence(task_cfg: Mapping[str, Any]) -> tuple[int, int, str] | None:
    """(batch size, sequence length, how the length was set) of a task's training batch; None: not known from
    the config alone (a task whose length comes from its data)."""
    batch = task_cfg.get("batch_size")
    key = next((key for key in LENGTH_KEYS if isinstance(task_cfg.get(key), int)), None)
    if isinstance(batch, int) and key is not None:
        return batch, task_cfg[key], f"task.{key}={task_cfg[key]}"
    if isinstance(batch, int) and isinstance(task_cfg.get("context"), int):  # (return, state, action) tokens
        return batch, 3 * task_cfg["context"], f"task.context={task_cfg['context']}"
    return None


def estimate_training_bytes(model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any]) -> tuple[int, int, str]:
    """(weights+gradients+Adam bytes, activation bytes, the task sizes they assume): see the comment above."""
    import torch

    from minrnn_cli.models import build_backbone, count_params

    options = dict(model_cfg)
    name = options.pop("name")
    with torch.device("meta"):
        params = count_params(build_backbone(name, None, **options))
    state = 4 * params * FLOAT_BYTES
    sequence = training_sequence(task_cfg)
    if sequence is None:
        return state, 0, ""
    batch, length, length_key = sequence
    d_model, n_layers = model_cfg.get("d_model", 128), model_cfg.get("n_layers", 2)
    widest = max(1.0, float(model_cfg.get("expansion", 1)),
                 float(model_cfg.get("mlp_ratio", 0)) if model_cfg.get("mlp") else 0.0)
    activations = batch * length * n_layers * int(d_model * widest) * ACTIVATION_FLOATS * FLOAT_BYTES
    if name == "transformer":  # scores and probabilities, (batch, heads, T, T) each, per layer
        activations += 2 * batch * model_cfg.get("n_heads", 4) * length * length * n_layers * FLOAT_BYTES
    return state, activations, f"task.batch_size={batch}, {length_key}"


def available_memory(device) -> tuple[int, str] | None:
    """Bytes free for a run on `device` and where that figure comes from; None where it cannot be told."""
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0], f"free on {device}"
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available on this machine (MemAvailable)"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free on this machine"
    except (OSError, ValueError, AttributeError):
        return None


def check_model_fits(model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any], device) -> None:
    """Before anything is allocated: the model's options (the registry's table), its scan backend against the
    device, and the estimated training memory against what `device` has free; a one-line UserError each."""
    check_model_config(model_cfg)
    check_scan_backend(model_cfg, device)
    check_fits_in_memory(model_cfg, task_cfg, device)


def check_scan_backend(model_cfg: Mapping[str, Any], device) -> None:
    """`model.scan_backend=triton` only where Triton runs (CUDA; the CPU under TRITON_INTERPRET=1)."""
    if model_cfg.get("scan_backend") != "triton":
        return
    from minrnn_cli.scans.triton_scan import runs_on, triton_importable

    if not triton_importable():
        raise UserError("model.scan_backend=triton needs the triton package (pip install triton); use "
                        "model.scan_backend=auto or linear")
    if not runs_on(device):
        raise UserError(f"model.scan_backend=triton runs on CUDA (on the CPU only under TRITON_INTERPRET=1), and this "
                        f"run is on {device}; use model.scan_backend=auto or linear")


def check_fits_in_memory(model_cfg: Mapping[str, Any], task_cfg: Mapping[str, Any], device) -> None:
    """A one-line UserError when the estimated training memory exceeds what `device` has free."""
    free = available_memory(device)
    if free is None:
        return
    state, activations, sizes = estimate_training_bytes(model_cfg, task_cfg)
    if state + activations <= free[0]:
        return
    shown = ", ".join(f"model.{key}={model_cfg[key]}" for key in ("d_model", "n_layers") if key in model_cfg)
    batch = f" + one batch's activations {_size(activations)} ({sizes})" if activations else ""
    raise UserError(f"model {model_cfg['name']} with {shown} needs about {_size(state + activations)} to train "
                    f"(an estimate: weights, gradients and Adam state {_size(state)}{batch}), more than the "
                    f"{_size(free[0])} {free[1]}; use a smaller model.d_model or model.n_layers"
                    f"{', task.batch_size or the sequence length' if activations else ''}")


def _size(n_bytes: float) -> str:
    if n_bytes < 1024:
        return f"{n_bytes:,.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n_bytes /= 1024
        if n_bytes < 1024:
            return f"{n_bytes:,.1f} {unit}"
    return f"{n_bytes / 1024:,.1f} TiB"
