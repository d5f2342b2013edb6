"""The training loop, nanoGPT style: sample a batch, forward, backward, clip, step; every `eval_every`
steps evaluate, log and checkpoint (best and last). `trainer.resume` continues a run exactly.
Under torchrun or a multi-task submitit job it trains data-parallel (minrnn_cli.training.distributed)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from minrnn_cli.errors import UserError
from minrnn_cli.tasks import build_task
from minrnn_cli.tracking.progress import TrainingProgress
from minrnn_cli.tracking.records import MetricsLog, copy_metrics
from minrnn_cli.training.checkpoint import (
    latest_resumable,
    load_checkpoint,
    load_model_state,
    restore_rng_states,
    save_checkpoint,
)
from minrnn_cli.training.device import autocast, resolve_device
from minrnn_cli.training.distributed import (
    batch_seed,
    broadcast,
    init_process_group,
    mean_across_ranks,
    replica_device,
    wrap_model,
)
from minrnn_cli.training.evaluation import evaluate, is_better
from minrnn_cli.training.model_setup import build_task_model
from minrnn_cli.training.numerics import gradient_norm, update_is_finite
from minrnn_cli.training.optim import build_optimizer, build_scheduler
from minrnn_cli.training.signals import Interrupted, agreed_stop_signal, stop_signals

log = logging.getLogger("minrnn")


def resume_path(resume: str | None, cfg: DictConfig, runs_root: Path) -> Path | None:
    """The checkpoint to continue from: a path, `auto` (newest last.pt of this model and task config), or None."""
    if resume is None:
        return None
    if resume == "auto":
        found = latest_resumable(runs_root, cfg)
        if found is None:
            log.info(f"trainer.resume=auto: no last.pt of this {cfg.model.name} config on this {cfg.task.name} "
                     f"config under {runs_root}; starting from scratch")
        return found
    return Path(resume).expanduser()


def check_resumable(payload: dict, cfg: DictConfig, path: Path) -> None:
    """A run continues only with the model and task it was started with."""
    for group in ("model", "task"):
        theirs, ours = payload["config"].get(group, {}), dict(cfg[group])
        if theirs != ours:
            keys = ["name"] if theirs.get("name") != ours.get("name") else sorted({*theirs, *ours})
            differ = ", ".join(f"{group}.{key}={theirs.get(key)!r} there, {ours.get(key)!r} here"
                               for key in keys if theirs.get(key) != ours.get(key))
            raise UserError(f"checkpoint {path} was trained with a different {group} config ({differ}); "
                            f"resume with the same {group} settings")
    if payload["step"] >= cfg.trainer.max_steps:
        raise UserError(f"checkpoint {path} is at step {payload['step']}, not below "
                        f"trainer.max_steps={cfg.trainer.max_steps}; nothing left to train")


def train(cfg: DictConfig, run_dir: Path, runs_root: Path) -> dict:
    """Train the configured model on the configured task; returns the final results (also in results.json)."""
    trainer = cfg.trainer
    replica = init_process_group()  # one rank of 1 unless started by torchrun or a multi-task submitit job
    if not replica.is_main:
        log.setLevel(logging.WARNING)  # rank 0 speaks for the run
    device = replica_device(resolve_device(trainer.device), replica)
    torch.manual_seed(trainer.seed)
    batch_generator = torch.Generator()
    task = build_task(cfg.task)
    model = build_task_model(cfg.model, task).to(device)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, trainer.max_steps)

    start_step, best, last_saved = 0, None, None  # last_saved: the newest last.pt, for error messages
    checkpoint_path = broadcast(resume_path(trainer.resume, cfg, runs_root), replica)
    if checkpoint_path is not None:
        payload = load_checkpoint(checkpoint_path)
        check_resumable(payload, cfg, checkpoint_path)
        load_model_state(model, payload, checkpoint_path)
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        restore_rng_states(payload["rng"])
        start_step, best = payload["step"], payload["best"]
        # the best weights: the checkpoint itself when it was the best (best.pt may not have been written yet)
        best_here = best is not None and best["step"] == start_step
        earlier_best = checkpoint_path if best_here else checkpoint_path.parent / "best.pt"
        if best is not None and earlier_best.is_file() and replica.is_main:
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(earlier_best, run_dir / "checkpoints" / "best.pt")
        last_saved = f"{checkpoint_path} (step {start_step})"
        if replica.is_main:
            copy_metrics(checkpoint_path.parent.parent, run_dir, start_step)
        log.info(f"resumed from {checkpoint_path} at step {start_step}")

    trained = wrap_model(model, device, replica)  # DDP averages the gradients of all ranks
    forward = torch.compile(trained) if trainer.compile else trained
    checkpoints = run_dir / "checkpoints"

    def save(name: str, step: int) -> None:
        if replica.is_main:
            save_checkpoint(checkpoints / name, model=model, optimizer=optimizer, scheduler=scheduler, step=step,
                            best=best, config=cfg, vocabulary=task.vocabulary())

    from minrnn_cli.tracking.wandb_run import wandb_run

    started = time.perf_counter()
    step = start_step
    on_main = contextlib.nullcontext  # ranks > 0 neither log to W&B nor show progress
    with stop_signals() as stop, \
            (wandb_run(cfg, run_dir, name=run_dir.name) if replica.is_main else on_main()) as run, \
            (TrainingProgress(trainer.max_steps, start_step) if replica.is_main else on_main()) as progress:
        metrics_log = MetricsLog(run_dir, run)
        model.train()
        loss_sum, window_started, window_steps = torch.zeros((), device=device), time.perf_counter(), 0
        skipped_steps = 0  # updates skipped for a non-finite loss or gradient (trainer.on_nonfinite=skip)
        while step < trainer.max_steps:
            batch_generator.manual_seed(batch_seed(trainer.seed, replica.rank, step))
            inputs, targets = (tensor.to(device) for tensor in task.train_batch(batch_generator))
            with autocast(device, trainer.precision):
                logits, _ = forward(inputs)
                loss, _, _ = task.score(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = gradient_norm(model, trainer.grad_clip)
            if update_is_finite(loss, grad_norm, step + 1, trainer.on_nonfinite, last_saved):
                optimizer.step()
                loss_sum += loss.detach()
                window_steps += 1
            else:
                skipped_steps += 1
                log.warning(f"step {step + 1}: non-finite loss or gradient; update skipped (trainer.on_nonfinite)")
            scheduler.step()
            step += 1

            last_step = step == trainer.max_steps
            if step % trainer.log_every == 0 or last_step:
                loss_total = mean_across_ranks(loss_sum, replica).item()
                train_loss = loss_total / window_steps if window_steps else float("nan")  # all skipped
                tokens_per_s = (task.tokens_per_batch * replica.world_size * window_steps
                                / (time.perf_counter() - window_started))
                if replica.is_main:
                    skipped = {"skipped_steps": skipped_steps} if skipped_steps else {}
                    metrics_log.log(step, {"train_loss": train_loss, "lr": scheduler.get_last_lr()[0],
                                           "tokens_per_s": tokens_per_s, **skipped})
                    progress.update(step, train_loss, tokens_per_s)
                loss_sum.zero_()
                window_started, window_steps = time.perf_counter(), 0

            if (step % trainer.eval_every == 0 or last_step) and replica.is_main:
                eval_metrics = evaluate(model, task, device, trainer.precision)
                metrics_log.log(step, eval_metrics)
                value = eval_metrics[f"val_{task.primary_metric}"]
                log.info(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
                improved = is_better(value, best and best["value"], task.primary_metric)
                if improved:
                    best = {"step": step, "value": value, "metrics": eval_metrics}
                save("last.pt", step)
                if improved:  # after last.pt, so a kill in between leaves a last.pt that can stand in for it
                    save("best.pt", step)
                last_saved = f"{checkpoints / 'last.pt'} (step {step})"
                window_started = time.perf_counter()

            signum = agreed_stop_signal(stop, replica)
            if signum:
                save("last.pt", step)
                raise Interrupted(signum, step, checkpoints / "last.pt")
        wall_time = time.perf_counter() - started
        if not replica.is_main:
            return {"steps": step, "rank": replica.rank}

        from minrnn_cli.models import count_params

        results = {
            "model": cfg.model.name,
            "task": cfg.task.name,
            "params": count_params(model),
            "steps": step,
            "resumed_from_step": start_step,
            "wall_time_s": round(wall_time, 2),
            "device": str(device),
            "world_size": replica.world_size,
            "best_step": best["step"],
            "skipped_steps": skipped_steps,
            **final_metrics(model, task, device, trainer.precision, checkpoints / "best.pt"),
        }
        if run is not None:
            run.summary.update(results)
    return results


def final_metrics(model, task, device: torch.device, precision: str, best_path: Path) -> dict[str, float]:
    """Every split scored by the best checkpoint's weights (which the model is left holding)."""
    load_model_state(model, load_checkpoint(best_path), best_path)
    return evaluate(model, task, device, precision)
