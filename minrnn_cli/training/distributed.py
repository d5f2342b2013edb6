"""Data-parallel training: one process (rank) per device, started by torchrun or by a submitit (SLURM) job.

Both describe the process group in environment variables: torchrun sets RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR and MASTER_PORT itself; inside a submitit job with several tasks, submitit's own variables are
exported under those names. Every rank runs the whole command, so:

- under torchrun, rank 0 picks the run folder's timestamp and sends it to the other ranks before Hydra
  starts (Hydra's `${now:...}` differs between processes), and ranks > 0 write no `.hydra/` and no log file;
  under submitit the launcher fixes the job folder before the tasks start;
- each rank draws its own batches, from a generator seeded by (seed, rank, step) alone, so a checkpoint
  resumes with any number of ranks;
- only rank 0 logs, evaluates, writes metrics.jsonl, results.json, W&B and checkpoints.

Heavy imports stay inside the functions: `minrnn_cli.cli` imports this module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime

from minrnn_cli.errors import UserError

TORCHRUN_VARIABLE = "TORCHELASTIC_RUN_ID"  # set by torchrun in every worker
RUNS_DIR = "${minrnn.output_folder:train}"  # hydra.run.dir's folder in conf/hydra/default.yaml: <outputs>/runs
STAMP_FORMAT = "%Y-%m-%d_%H-%M-%S-%f"  # and its timestamp


@dataclass(frozen=True)
class Replica:
    """This process's place in the process group (rank 0 of 1 when training alone)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def under_torchrun() -> bool:
    return TORCHRUN_VARIABLE in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _export_submitit_environment() -> None:
    """In a submitit job of several tasks (SLURM or local), set the variables init_process_group reads."""
    if "SUBMITIT_EXECUTOR" not in os.environ or "RANK" in os.environ:
        return
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def init_process_group() -> Replica:
    """Join the process group the environment describes; calling it again returns the same Replica."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        _export_submitit_environment()
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:
            return Replica()
        # gloo for CPU tensors (and the run folder's name), nccl for CUDA tensors where there is CUDA
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
    return Replica(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())


def shutdown(wait: bool = True) -> None:
    """Leave the process group. `wait`: first wait for every rank (after a failure a peer may never come)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait:  # a gloo rank that tears its group down while rank 0 still checkpoints can abort
            dist.barrier()
        dist.destroy_process_group()


def broadcast(value, replica: Replica):
    """Rank 0's `value` on every rank (any picklable object)."""
    if not replica.distributed:
        return value
    import torch
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
    return box[0]


def torchrun_overrides(tokens: list[str], multirun: bool) -> list[str]:
    """Hydra overrides for one rank of a torchrun job: every rank gets rank 0's run folder, and ranks > 0
    write neither `.hydra/` nor a log file into it. Nothing outside torchrun."""
    if not under_torchrun():
        return []
    if multirun or any(token.startswith("hparams_search=") for token in tokens):
        raise UserError("sweeps (-m, hparams_search=) do not run under torchrun (every rank would run the whole "
                        "sweep); sweep with hydra/launcher=slurm (or local_ddp), whose jobs train data-parallel")
    replica = init_process_group()
    stamp = broadcast(datetime.now().strftime(STAMP_FORMAT), replica)
    overrides = []
    if not any(token.startswith("hydra.run.dir=") for token in tokens):
        overrides.append(f"hydra.run.dir={RUNS_DIR}/{stamp}")
    if not replica.is_main:
        overrides += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    return overrides


def replica_device(device, replica: Replica):
    """Under DDP each rank takes the GPU of its local rank; on CPUs the ranks of one machine share its cores
    (torchrun sets OMP_NUM_THREADS=1 itself, submitit does not)."""
    import torch

    if not replica.distributed:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", replica.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    elif device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", replica.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks_here))
    return device


def wrap_model(model, device, replica: Replica):
    """The module to train: DistributedDataParallel (gradients averaged across ranks) or the model itself."""
    if not replica.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def mean_across_ranks(tensor, replica: Replica):
    """The mean of `tensor` over all ranks (on every rank)."""
    if not replica.distributed:
        return tensor
    import torch.distributed as dist

    total = tensor.clone()
    dist.all_reduce(total)
    return total / replica.world_size


def batch_seed(seed: int, rank: int, step: int) -> int:
    """The seed of `rank`'s training batch at `step`: a function of these three alone, so a resumed run
    draws the batches it would have drawn, whatever number of ranks it resumes with."""
    import numpy as np

    return int(np.random.SeedSequence([seed % 2**64, rank, step]).generate_state(1)[0])
