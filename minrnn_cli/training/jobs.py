"""The Hydra task functions behind `minrnn train`, `eval`, `generate` and `config`.

Each is a module-level function of the installed package (joblib and submitit launchers pickle them),
takes the composed config and works in Hydra's output folder for the job.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.syntax import Syntax

from minrnn_cli.errors import UserError
from minrnn_cli.training.settings import check_generate_config, check_runtime, check_train_config

log = logging.getLogger("minrnn")
OUTPUTS_ROOT = Path("outputs")


def _run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _checkpoint_path(checkpoint: str) -> Path:
    from minrnn_cli.training.checkpoint import find_latest

    if checkpoint == "latest":
        found = find_latest(OUTPUTS_ROOT, "best.pt")
        if found is None:
            raise UserError(f"checkpoint=latest but there is no checkpoints/best.pt under {OUTPUTS_ROOT.resolve()}; "
                            "train one with `minrnn train` or pass checkpoint=PATH")
        return found.absolute()  # recorded in results.json: a path that holds from anywhere
    return Path(checkpoint).expanduser()


def _load_trained(cfg: DictConfig):
    """(model on its device, task, checkpoint payload, device, checkpoint path) for eval and generate."""
    from minrnn_cli.tasks import build_task
    from minrnn_cli.training.checkpoint import load_checkpoint, load_model_state
    from minrnn_cli.training.device import resolve_device
    from minrnn_cli.training.model_setup import build_task_model

    check_runtime(cfg.trainer)
    device = resolve_device(cfg.trainer.device)
    path = _checkpoint_path(cfg.checkpoint)
    payload = load_checkpoint(path)
    trained = payload["config"]
    task = build_task(trained["task"])
    model = build_task_model(trained["model"], task)
    load_model_state(model, payload, path)
    log.info(f"loaded {path} ({trained['model']['name']} on {trained['task']['name']}, step {payload['step']})")
    return model.to(device), task, payload, device, path


def train_job(cfg: DictConfig) -> float | None:
    from minrnn_cli.tracking.records import write_results
    from minrnn_cli.tracking.tables import summary_table
    from minrnn_cli.training.distributed import init_process_group, shutdown
    from minrnn_cli.training.loop import train

    check_train_config(cfg)
    run_dir = _run_dir()
    _require_unused(run_dir)
    replica = init_process_group()  # several ranks under torchrun or a multi-task submitit job
    try:
        results = train(cfg, run_dir, OUTPUTS_ROOT)
    except BaseException:
        shutdown(wait=False)
        raise
    shutdown()
    if not replica.is_main:
        return None  # rank 0 writes the results
    console = Console()
    if cfg.task.get("sample_chars", 0):
        sample = _sample_after_training(cfg, run_dir)
        results["sample"] = sample
        console.rule("sample from the best checkpoint")
        console.print(sample, markup=False, highlight=False)
        console.rule()
    write_results(run_dir, results)
    shown = {key: value for key, value in results.items() if key != "sample"}  # the sample is printed above
    console.print(summary_table(f"{cfg.model.name} on {cfg.task.name}", shown))
    console.print(f"run folder: {run_dir}")
    metric = cfg.get("optimize_metric")
    return results.get(metric) if metric else None


def _require_unused(run_dir: Path) -> None:
    """One folder per run: a folder that already holds a run's records (`hydra.run.dir` set to an earlier
    run's folder) is refused rather than mixed into."""
    from minrnn_cli.tracking.records import METRICS_FILE, RESULTS_FILE

    held = [name for name in (METRICS_FILE, RESULTS_FILE, "checkpoints") if (run_dir / name).exists()]
    if held:
        raise UserError(f"the run folder {run_dir} already holds a run ({', '.join(held)}); leave hydra.run.dir "
                        "at its default or name a new folder (to continue that run: trainer.resume=auto)")


def _sample_after_training(cfg: DictConfig, run_dir: Path) -> str:
    from minrnn_cli.training.checkpoint import load_checkpoint, load_model_state
    from minrnn_cli.training.device import resolve_device
    from minrnn_cli.training.model_setup import build_model
    from minrnn_cli.training.sampling import sample_text

    path = run_dir / "checkpoints" / "best.pt"
    payload = load_checkpoint(path)
    chars = payload["vocabulary"]["chars"]
    device = resolve_device(cfg.trainer.device)
    model = build_model(cfg.model, len(chars))
    load_model_state(model, payload, path)
    text = sample_text(model.to(device), chars, "\n", cfg.task.sample_chars, temperature=0.8, top_k=None,
                       seed=cfg.trainer.seed, device=device)
    (run_dir / "sample.txt").write_text(text)
    return text


def eval_job(cfg: DictConfig) -> None:
    from minrnn_cli.tracking.records import write_results
    from minrnn_cli.tracking.tables import summary_table
    from minrnn_cli.training.evaluation import evaluate

    model, task, payload, device, path = _load_trained(cfg)
    metrics = evaluate(model, task, device, cfg.trainer.precision)
    trained = payload["config"]
    from minrnn_cli.models import count_params

    results = {"checkpoint": str(path), "model": trained["model"]["name"], "task": trained["task"]["name"],
               "params": count_params(model), "steps": payload["step"], **metrics}
    write_results(_run_dir(), results)
    Console().print(summary_table(f"eval of {path}", results))


def generate_job(cfg: DictConfig) -> None:
    from minrnn_cli.training.sampling import sample_text

    check_generate_config(cfg)
    model, task, payload, device, path = _load_trained(cfg)
    chars = payload["vocabulary"].get("chars")
    if not chars:
        raise UserError(f"checkpoint {path} is a {task.name} model; generate needs a text model (shakespeare)")
    if cfg.top_k is not None and cfg.top_k > len(chars):
        raise UserError(f"top_k={cfg.top_k} is invalid: the model's vocabulary has {len(chars)} tokens")
    text = sample_text(model, chars, cfg.prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.seed, device)
    (_run_dir() / "sample.txt").write_text(text)
    Console().print(text, markup=False, highlight=False)


def show_config(cfg: DictConfig) -> None:
    """`minrnn config`: print the composed config as YAML and run nothing."""
    yaml = OmegaConf.to_yaml(cfg, resolve=False)
    Console().print(Syntax(yaml, "yaml", theme="ansi_dark", background_color="default"))
