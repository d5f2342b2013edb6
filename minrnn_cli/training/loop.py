"""The training loop, nanoGPT style: sample a batch, forward, backward, clip, step; every `eval_every`
steps evaluate, log and checkpoint (best and last). `trainer.resume` continues a run exactly."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from minrnn_cli.errors import UserError
from minrnn_cli.tasks import build_task
from minrnn_cli.tracking.progress import TrainingProgress
from minrnn_cli.tracking.records import MetricsLog
from minrnn_cli.training.checkpoint import (
    find_latest,
    load_checkpoint,
    load_model_state,
    restore_rng_states,
    save_checkpoint,
)
from minrnn_cli.training.device import autocast, resolve_device
from minrnn_cli.training.evaluation import evaluate, is_better
from minrnn_cli.training.model_setup import build_model
from minrnn_cli.training.optim import build_optimizer, build_scheduler

log = logging.getLogger("minrnn")


def resume_path(resume: str | None, cfg: DictConfig, runs_root: Path) -> Path | None:
    """The checkpoint to continue from: a path, `auto` (newest last.pt of this model and task), or None."""
    if resume is None:
        return None
    if resume == "auto":
        found = find_latest(runs_root, "last.pt", cfg.model.name, cfg.task.name)
        if found is None:
            log.info(f"trainer.resume=auto: no last.pt of {cfg.model.name} on {cfg.task.name} under "
                     f"{runs_root}; starting from scratch")
        return found
    return Path(resume).expanduser()


def check_resumable(payload: dict, cfg: DictConfig, path: Path) -> None:
    """A run continues only with the model and task it was started with."""
    for group in ("model", "task"):
        if payload["config"].get(group) != dict(cfg[group]):
            raise UserError(f"checkpoint {path} was trained with a different {group} config "
                            f"({payload['config'].get(group, {}).get('name')}); resume with the same {group}")
    if payload["step"] >= cfg.trainer.max_steps:
        raise UserError(f"checkpoint {path} is at step {payload['step']}, not below "
                        f"trainer.max_steps={cfg.trainer.max_steps}; nothing left to train")


def train(cfg: DictConfig, run_dir: Path, runs_root: Path) -> dict:
    """Train the configured model on the configured task; returns the final results (also in results.json)."""
    trainer = cfg.trainer
    device = resolve_device(trainer.device)
    torch.manual_seed(trainer.seed)
    batch_generator = torch.Generator().manual_seed(trainer.seed)
    task = build_task(cfg.task)
    model = build_model(cfg.model, task.vocab_size).to(device)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, trainer.max_steps)

    start_step, best = 0, None
    checkpoint_path = resume_path(trainer.resume, cfg, runs_root)
    if checkpoint_path is not None:
        payload = load_checkpoint(checkpoint_path)
        check_resumable(payload, cfg, checkpoint_path)
        load_model_state(model, payload, checkpoint_path)
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        restore_rng_states(payload["rng"], batch_generator)
        start_step, best = payload["step"], payload["best"]
        earlier_best = checkpoint_path.parent / "best.pt"
        if best is not None and earlier_best.is_file():
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(earlier_best, run_dir / "checkpoints" / "best.pt")
        log.info(f"resumed from {checkpoint_path} at step {start_step}")

    forward = torch.compile(model) if trainer.compile else model
    checkpoints = run_dir / "checkpoints"

    def save(name: str, step: int) -> None:
        save_checkpoint(checkpoints / name, model=model, optimizer=optimizer, scheduler=scheduler, step=step,
                        best=best, config=cfg, vocabulary=task.vocabulary(), batch_generator=batch_generator)

    from minrnn_cli.tracking.wandb_run import wandb_run

    started = time.perf_counter()
    step = start_step
    with wandb_run(cfg, run_dir, name=run_dir.name) as run, \
            TrainingProgress(trainer.max_steps, start_step) as progress:
        metrics_log = MetricsLog(run_dir, run)
        model.train()
        loss_sum, window_started, window_steps = torch.zeros((), device=device), time.perf_counter(), 0
        try:
            while step < trainer.max_steps:
                inputs, targets = (tensor.to(device) for tensor in task.train_batch(batch_generator))
                with autocast(device, trainer.precision):
                    logits, _ = forward(inputs)
                    loss, _, _ = task.score(logits, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if trainer.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), trainer.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                loss_sum += loss.detach()
                window_steps += 1

                last_step = step == trainer.max_steps
                if step % trainer.log_every == 0 or last_step:
                    train_loss = loss_sum.item() / window_steps
                    tokens_per_s = task.tokens_per_batch * window_steps / (time.perf_counter() - window_started)
                    metrics_log.log(step, {"train_loss": train_loss, "lr": scheduler.get_last_lr()[0],
                                           "tokens_per_s": tokens_per_s})
                    progress.update(step, train_loss, tokens_per_s)
                    loss_sum.zero_()
                    window_started, window_steps = time.perf_counter(), 0

                if step % trainer.eval_every == 0 or last_step:
                    eval_metrics = evaluate(model, task, device, trainer.precision)
                    metrics_log.log(step, eval_metrics)
                    value = eval_metrics[f"val_{task.primary_metric}"]
                    log.info(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()))
                    if is_better(value, best and best["value"], task.primary_metric):
                        best = {"step": step, "value": value, "metrics": eval_metrics}
                        save("best.pt", step)
                    save("last.pt", step)
                    window_started = time.perf_counter()
        except KeyboardInterrupt:
            save("last.pt", step)
            log.warning(f"interrupted at step {step}; continue with trainer.resume={checkpoints / 'last.pt'}")
            raise
        wall_time = time.perf_counter() - started

        from minrnn_cli.models import count_params

        results = {
            "model": cfg.model.name,
            "task": cfg.task.name,
            "params": count_params(model),
            "steps": step,
            "resumed_from_step": start_step,
            "wall_time_s": round(wall_time, 2),
            "device": str(device),
            "best_step": best["step"],
            **final_metrics(model, task, device, trainer.precision, checkpoints / "best.pt"),
        }
        if run is not None:
            run.summary.update(results)
    return results


def final_metrics(model, task, device: torch.device, precision: str, best_path: Path) -> dict[str, float]:
    """Every split scored by the best checkpoint's weights (which the model is left holding)."""
    load_model_state(model, load_checkpoint(best_path), best_path)
    return evaluate(model, task, device, precision)
