"""The training loop, nanoGPT style: sample a batch, forward, backward, clip, step; every `eval_every`
steps evaluate, log and checkpoint (best and last). `trainer.resume` continues a run exactly.
Under torchrun or a multi-task submitit job it trains data-parallel (minrnn_cli.training.distributed):
every rank steps, rank 0 alone evaluates, logs and writes.

`train` reads as the loop itself; each named step below it does one thing to the `Run` it is given.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from minrnn_cli.device import autocast, precision_shown, resolve_device, resolve_precision
from minrnn_cli.errors import UserError
from minrnn_cli.runtime import busy_machine, fewer_threads, load_average, usable_cores
from minrnn_cli.tasks import build_task
from minrnn_cli.tracking.progress import TrainingProgress
from minrnn_cli.tracking.records import MetricsLog, copy_metrics
from minrnn_cli.training.checkpoint import (
    copy_checkpoint,
    latest_resumable,
    load_checkpoint,
    load_model_state,
    restore_rng_states,
    save_checkpoint,
)
from minrnn_cli.training.distributed import (
    Replica,
    batch_seed,
    broadcast,
    mean_across_ranks,
    replica_device,
    wrap_model,
)
from minrnn_cli.training.evaluation import evaluate, is_better
from minrnn_cli.training.model_setup import build_task_model, check_model_fits
from minrnn_cli.training.numerics import gradient_norm, update_is_finite
from minrnn_cli.training.optim import build_optimizer, build_scheduler
from minrnn_cli.training.signals import FinalPhaseInterrupted, Interrupted, agreed_stop_signal, stop_signals

log = logging.getLogger("minrnn")
THREADS_REMEDY = "OMP_NUM_THREADS=1 before the command"  # how a training run takes fewer torch threads
SLOWDOWN = 3.0  # a window this many times below the best window's tokens/s: other work is competing
JUDGED_WINDOW_S = 1.0  # shorter windows vary too much on their own to be compared


@dataclass
class Run:
    """One training run's state: what it trains, where it writes, and how far it has got."""

    cfg: DictConfig
    run_dir: Path
    replica: Replica
    device: torch.device
    task: object
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: str = "fp32"  # trainer.precision with `auto` resolved for the device
    step: int = 0
    start_step: int = 0
    best: dict | None = None  # {"step", "value", "metrics"} of the best evaluation so far
    last_saved: str | None = None  # the newest last.pt, named in error messages
    skipped_steps: int = 0  # updates skipped for a non-finite loss or gradient (trainer.on_nonfinite=skip)
    load_at_start: list[float] | None = None  # the 1/5/15-minute load averages before training
    throughput: Throughput = field(default_factory=lambda: Throughput())
    elapsed_at_start: float = 0.0  # elapsed_s of the checkpoint a resumed run continues
    clock_started: float = field(default_factory=time.perf_counter)  # restarted at the first training step

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints"

    def elapsed_s(self) -> float:
        """Wall-clock seconds since the run's first training step (start-up left out, evaluations counted),
        across resumes: metrics.jsonl's `elapsed_s`."""
        return self.elapsed_at_start + time.perf_counter() - self.clock_started


@dataclass
class Window:
    """The training loss and throughput since the last log line."""

    loss_sum: torch.Tensor
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0

    def restart(self) -> None:
        self.loss_sum.zero_()
        self.started, self.steps = time.perf_counter(), 0


@dataclass
class Throughput:
    """The training time and steps of the whole run (evaluations left out) and the best window's tokens/s, to
    notice other work starting to compete for the machine (once: one warning a run)."""

    seconds: float = 0.0
    steps: int = 0
    best: float = 0.0
    warned: bool = False

    def add(self, steps: int, seconds: float, tokens_per_s: float) -> str | None:
        """Count a window; a warning line when it ran far below the best judged window before it."""
        self.seconds, self.steps = self.seconds + seconds, self.steps + steps
        if seconds < JUDGED_WINDOW_S or not steps:
            return None
        slow = not self.warned and tokens_per_s * SLOWDOWN < self.best
        if slow:
            self.warned = True
            load, cores = load_average(), usable_cores()
            return (f"training slowed down to {tokens_per_s:,.0f} tokens/s from {self.best:,.0f} at best: other "
                    f"work is probably competing for the machine (1-minute load average "
                    f"{load[0] if load else 'unknown'} on {cores} core{'s' if cores != 1 else ''}); "
                    f"{fewer_threads(THREADS_REMEDY)}wait for the other work to finish")
        self.best = max(self.best, tokens_per_s)
        return None


@dataclass
class Trained:
    """What `train` hands back: the results (also in results.json) and the model holding the best weights."""

    results: dict
    model: nn.Module
    task: object
    device: torch.device


def train(cfg: DictConfig, run_dir: Path, runs_root: Path, replica: Replica, group: str | None = None) -> Trained:
    """Train the configured model on the configured task, from scratch or from `trainer.resume`. `group`: the
    W&B group (a sweep's)."""
    trainer = cfg.trainer
    load_at_start = load_average()  # before this run's own work counts in it
    run = set_up(cfg, run_dir, replica)
    run.load_at_start = load_at_start
    resume(run, runs_root)
    if replica.is_main:
        announce(run)
    forward = wrap_model(run.model, run.device, replica)  # DDP averages the gradients of all ranks
    forward = torch.compile(forward) if trainer.compile else forward
    started = time.perf_counter()
    on_main = contextlib.nullcontext  # ranks > 0 neither log to W&B nor show progress
    from minrnn_cli.tracking.wandb_run import wandb_run

    with stop_signals() as stop, \
            (wandb_run(cfg, run_dir, run_dir.name, group) if replica.is_main else on_main()) as wandb, \
            (TrainingProgress(trainer.max_steps, run.start_step) if replica.is_main else on_main()) as progress:
        metrics_log = MetricsLog(run_dir, run.elapsed_s, wandb)
        window = Window(torch.zeros((), device=run.device))
        run.model.train()
        run.clock_started = time.perf_counter()
        while run.step < trainer.max_steps:
            train_step(run, forward, window)
            last_step = run.step == trainer.max_steps
            if run.step % trainer.log_every == 0 or last_step:
                log_window(run, window, metrics_log, progress)
            if (run.step % trainer.eval_every == 0 or last_step) and replica.is_main:
                evaluate_and_checkpoint(run, metrics_log)
                window.started = time.perf_counter()  # the evaluation's time is not training throughput
            stop_if_signalled(run, stop)
        wall_time = time.perf_counter() - started
        if not replica.is_main:
            return Trained({"steps": run.step, "rank": replica.rank}, run.model, run.task, run.device)
        stop_in_final_phase(run, stop)
        results = final_results(run, wall_time)
        if wandb is not None:
            wandb.summary.update(results)
    return Trained(results, run.model, run.task, run.device)


def set_up(cfg: DictConfig, run_dir: Path, replica: Replica) -> Run:
    """Task, model, optimiser and schedule on this rank's device, seeded by `trainer.seed`."""
    trainer = cfg.trainer
    if not replica.is_main:
        log.setLevel(logging.WARNING)  # rank 0 speaks for the run
    device = replica_device(resolve_device(trainer.device), replica)
    torch.manual_seed(trainer.seed)
    check_model_fits(cfg.model, cfg.task, device)  # before the task's data and the model are allocated
    task = build_task(cfg.task)
    model = build_task_model(cfg.model, task).to(device)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, trainer.max_steps)
    return Run(cfg, run_dir, replica, device, task, model, optimizer, scheduler,
               precision=resolve_precision(trainer.precision, device))


def announce(run: Run) -> None:
    """The start line (what trains on what, where, how) and a warning when the machine is already busy."""
    from minrnn_cli.models import count_params

    cfg, trainer = run.cfg, run.cfg.trainer
    batch = cfg.task.get("batch_size")
    threads = torch.get_num_threads()
    start = f"from step {run.start_step:,} to {trainer.max_steps:,}" if run.start_step else f"{trainer.max_steps:,}"
    ranks = f" x{run.replica.world_size} ranks" if run.replica.world_size > 1 else ""
    log.info(f"training {cfg.model.name} ({count_params(run.model):,} params) on {cfg.task.name} "
             f"({run.task.training_data()}{f', batch {batch}' if batch else ''}), {start} steps; "
             f"device {run.device}{ranks}, {threads} torch thread{'s' if threads != 1 else ''}, "
             f"{precision_shown(trainer.precision, run.precision)}; run folder {run.run_dir}")
    busy = busy_machine(THREADS_REMEDY)
    if busy:
        log.warning(busy)


def resume(run: Run, runs_root: Path) -> None:
    """Continue from `trainer.resume`: weights, optimiser, schedule, RNGs, step, best so far and the metrics
    logged up to the checkpoint's step; the earlier best.pt is carried into this run's folder."""
    path = broadcast(resume_path(run.cfg.trainer.resume, run.cfg, runs_root), run.replica)
    if path is None:
        return
    payload = load_checkpoint(path)
    check_resumable(payload, run.cfg, path)
    load_model_state(run.model, payload, path)
    run.optimizer.load_state_dict(payload["optimizer"])
    run.scheduler.load_state_dict(payload["scheduler"])
    restore_rng_states(payload["rng"])
    run.start_step = run.step = payload["step"]
    run.elapsed_at_start = payload.get("elapsed_s", 0.0)  # checkpoints written before elapsed_s: count from 0
    run.best = payload["best"]
    run.last_saved = f"{path} (step {run.step})"
    if run.replica.is_main:
        # the best weights: the checkpoint itself when it was the best (best.pt may not have been written yet)
        best_here = run.best is not None and run.best["step"] == run.step
        earlier_best = path if best_here else path.parent / "best.pt"
        in_place = earlier_best.absolute() == (run.checkpoints / "best.pt").absolute()  # a sweep job continued
        if run.best is not None and earlier_best.is_file() and not in_place:
            run.checkpoints.mkdir(parents=True, exist_ok=True)
            copy_checkpoint(earlier_best, run.checkpoints / "best.pt")
        copy_metrics(path.parent.parent, run.run_dir, run.step)
    log.info(f"resumed from {path} at step {run.step}")


def resume_path(resume: str | None, cfg: DictConfig, runs_root: Path) -> Path | None:
    """The checkpoint to continue from: a path, `auto` (the newest last.pt of this model, task and optim
    config), or None."""
    if resume is None:
        return None
    if resume == "auto":
        found = latest_resumable(runs_root, cfg)
        if found is None:
            log.info(f"trainer.resume=auto: no last.pt of this {cfg.model.name} config on this {cfg.task.name} "
                     f"config under {runs_root}; starting from scratch")
        return found
    return Path(resume).expanduser()


RESUMED_AS_SAVED = {  # groups a resumed run must keep: the checkpoint carries their state
    "model": "resume with the same model settings",
    "task": "resume with the same task settings",
    "optim": "a resumed run continues the checkpoint's optimiser and schedule: resume with the same optim "
             "settings, or start a new run (trainer.resume=null) to train with these",
}


def check_resumable(payload: dict, cfg: DictConfig, path: Path) -> None:
    """A run continues only with the model, task and optimiser it was started with (a config that did not
    run is never recorded as this run's)."""
    for group, advice in RESUMED_AS_SAVED.items():
        theirs, ours = payload["config"].get(group, {}), OmegaConf.to_container(cfg[group], resolve=True)
        if theirs != ours:
            keys = ["name"] if theirs.get("name") != ours.get("name") else sorted({*theirs, *ours})
            differ = ", ".join(f"{group}.{key}={theirs.get(key)!r} there, {ours.get(key)!r} here"
                               for key in keys if theirs.get(key) != ours.get(key))
            raise UserError(f"checkpoint {path} was trained with a different {group} config ({differ}); {advice}")
    finished = (path.parent.parent / "results.json").exists()
    if payload["step"] > cfg.trainer.max_steps or (payload["step"] == cfg.trainer.max_steps and finished):
        raise UserError(f"checkpoint {path} is at step {payload['step']}, not below "
                        f"trainer.max_steps={cfg.trainer.max_steps}; nothing left to train")
    if payload["step"] == cfg.trainer.max_steps:  # stopped before its results: finish it
        log.info(f"checkpoint {path} is at trainer.max_steps={cfg.trainer.max_steps}: finishing that run (final "
                 "evaluation and results, no training)")


def train_step(run: Run, forward: nn.Module, window: Window) -> None:
    """One optimiser step on a fresh batch (skipped or stopped on a non-finite loss or gradient)."""
    trainer = run.cfg.trainer
    generator = torch.Generator().manual_seed(batch_seed(trainer.seed, run.replica.rank, run.step))
    inputs, targets = (tensor.to(run.device) for tensor in run.task.train_batch(generator))
    with autocast(run.device, run.precision):
        outputs, _ = forward(inputs)
        loss, _, _ = run.task.score(outputs, targets)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = gradient_norm(run.model, trainer.grad_clip)
    if update_is_finite(loss, grad_norm, run.step + 1, trainer.on_nonfinite, run.last_saved):
        run.optimizer.step()
        window.loss_sum += loss.detach()
        window.steps += 1
    else:
        run.skipped_steps += 1
        log.warning(f"step {run.step + 1}: non-finite loss or gradient; update skipped (trainer.on_nonfinite)")
    run.scheduler.step()
    run.step += 1


def log_window(run: Run, window: Window, metrics_log: MetricsLog, progress) -> None:
    """The window's mean training loss (over all ranks) and tokens/s to metrics.jsonl, W&B and the progress."""
    world_size = run.replica.world_size
    loss_total = mean_across_ranks(window.loss_sum, run.replica).item()
    train_loss = loss_total / window.steps if window.steps else float("nan")  # all skipped
    seconds = time.perf_counter() - window.started
    tokens_per_s = run.task.tokens_per_batch * world_size * window.steps / seconds
    slowed = run.throughput.add(window.steps, seconds, tokens_per_s)
    if run.replica.is_main:
        if slowed:
            log.warning(f"step {run.step}: {slowed}")
        skipped = {"skipped_steps": run.skipped_steps} if run.skipped_steps else {}
        metrics_log.log(run.step, {"train_loss": train_loss, "lr": run.scheduler.get_last_lr()[0],
                                   "tokens_per_s": tokens_per_s, **skipped})
        progress.update(run.step, train_loss, tokens_per_s)
    window.restart()


def evaluate_and_checkpoint(run: Run, metrics_log: MetricsLog) -> None:
    """Score every split, log it, save last.pt and, when `val` improved, best.pt."""
    task = run.task
    eval_metrics = evaluate(run.model, task, run.device, run.precision)
    metrics_log.log(run.step, eval_metrics)
    log.info(f"step {run.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
    value = eval_metrics[f"val_{task.primary_metric}"]
    improved = is_better(value, run.best and run.best["value"], task.higher_is_better)
    if improved:
        run.best = {"step": run.step, "value": value, "metrics": eval_metrics}
    save(run, "last.pt")
    if improved:  # after last.pt, so a kill in between leaves a last.pt that can stand in for it
        save(run, "best.pt")
    run.last_saved = f"{run.checkpoints / 'last.pt'} (step {run.step})"


def save(run: Run, name: str) -> None:
    if run.replica.is_main:
        save_checkpoint(run.checkpoints / name, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
                        step=run.step, best=run.best, config=run.cfg, vocabulary=run.task.vocabulary(),
                        elapsed_s=run.elapsed_s())


def stop_if_signalled(run: Run, stop) -> None:
    """After a SIGINT or SIGTERM (agreed by every rank): save last.pt and stop with one line."""
    signum = agreed_stop_signal(stop, run.replica)
    if signum:
        save(run, "last.pt")
        raise Interrupted(signum, run.step, run.checkpoints / "last.pt")


def stop_in_final_phase(run: Run, stop) -> None:
    """From here on (the results) a stop needs no save: every checkpoint is written, so a signal
    ends the run at once, and `trainer.resume=<last.pt>` later finishes it."""
    last = run.checkpoints / "last.pt"

    def stop_now(signum: int) -> None:
        raise FinalPhaseInterrupted(signum, run.step, last)

    if stop.requested:
        stop_now(stop.signum)
    stop.on_signal = stop_now


def final_results(run: Run, wall_time: float) -> dict:
    """The run's summary, every split scored by the best checkpoint's weights (which the model keeps): the scores
    of the evaluation that made it the best (the same weights and evaluation sets), scored again only when the
    checkpoint does not hold them."""
    from minrnn_cli.models import count_params

    best_path = run.checkpoints / "best.pt"
    load_model_state(run.model, load_checkpoint(best_path), best_path)
    best_scores = (run.best or {}).get("metrics")
    timed = run.throughput  # training steps alone, evaluations left out; none when a resumed run only finishes
    tokens = run.task.tokens_per_batch * run.replica.world_size * timed.steps
    return {
        "model": run.cfg.model.name,
        "task": run.cfg.task.name,
        "params": count_params(run.model),
        "steps": run.step,
        "resumed_from_step": run.start_step,
        "wall_time_s": round(wall_time, 2),
        "tokens_per_s": round(tokens / timed.seconds, 1) if timed.steps else None,
        "step_time_ms": round(timed.seconds / timed.steps * 1e3, 3) if timed.steps else None,
        "device": str(run.device),
        "precision": run.precision,
        "world_size": run.replica.world_size,
        "best_step": run.best["step"],
        "skipped_steps": run.skipped_steps,
        **(best_scores or evaluate(run.model, run.task, run.device, run.precision)),
        "load_average_at_start": run.load_at_start,  # 1/5/15 minutes: other work on the machine slows a run
        "load_average_at_end": load_average(),
    }
