"""What `minrnn train`, `eval` and `generate` do with a composed config and the run folder they are given.

No Hydra here: the Hydra task functions (minrnn_cli.hydra_app.jobs) pass in the job's folder and call these.
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from minrnn_cli.errors import UserError
from minrnn_cli.paths import outputs_dir
from minrnn_cli.runtime import apply_process_settings, process_settings
from minrnn_cli.tracking.records import CHECKPOINTS_DIR, earlier_run, write_results
from minrnn_cli.training.settings import check_generate_config, check_runtime, check_train_config

log = logging.getLogger("minrnn")
SAMPLE_TEMPERATURE = 0.8  # the closing sample of a text model's training run
PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./:+-]+")  # what a Hydra override value may hold unquoted
TRAIN_ONLY_GROUPS = ("model", "task", "optim", "logger", "experiment")  # eval and generate read the checkpoint


def train_run(cfg: DictConfig, run_dir: Path, group: str | None = None, continued: bool = False) -> dict | None:
    """Train, write results.json (rank 0) and print the summary; returns the results (None on ranks > 0).
    `group`: the W&B group of a sweep's jobs. `continued`: a job of a sweep started again in its folder, which
    keeps its finished run or continues its unfinished one (minrnn_cli.training.sweep_jobs)."""
    from minrnn_cli.tracking.tables import print_summary
    from minrnn_cli.training.distributed import init_process_group, shutdown
    from minrnn_cli.training.loop import train
    from minrnn_cli.training.model_setup import check_model_config
    from minrnn_cli.training.sweep_jobs import earlier_job

    check_train_config(cfg)
    check_model_config(cfg.model)
    earlier = earlier_job(run_dir, cfg) if continued else None
    if earlier is not None and earlier.results is not None:
        log.info(f"kept: {run_dir} finished this job earlier ({earlier.results.get('steps')} steps); not trained "
                 "again")
        return earlier.results
    if earlier is not None:
        cfg.trainer.resume = str(earlier.checkpoint)  # its own last.pt, in its own folder
    else:
        require_unused(run_dir)
    apply_process_settings()
    replica = init_process_group()  # several ranks under torchrun or a multi-task submitit job
    try:
        trained = train(cfg, run_dir, outputs_dir(cfg.get("outputs_dir")), replica, group)
    except BaseException:
        shutdown(wait=False)
        raise
    shutdown()
    if not replica.is_main:
        return None  # rank 0 writes the results
    results = {"command": "train", **trained.results, "process_settings": process_settings(),
               "config": OmegaConf.to_container(cfg, resolve=True)}  # what a continued sweep compares
    write_results(run_dir, results)  # the finished training's results, before anything optional runs
    console = Console()
    if cfg.task.get("sample_chars", 0):
        try:
            sample = closing_sample(trained, cfg.task.sample_chars, cfg.trainer.seed)
        except Exception as error:  # optional: a failure is a warning, the results stay written
            log.warning(f"the closing text sample failed ({type(error).__name__}: {error}); the run's results "
                        f"are in {run_dir / 'results.json'}")
        else:
            (run_dir / "sample.txt").write_text(sample)
            results["sample"] = sample
            write_results(run_dir, results)
            console.rule("sample from the best checkpoint")
            console.print(sample, markup=False, highlight=False)
            console.rule()
    shown = {key: value for key, value in results.items() if key not in ("sample", "command")}  # sample: above
    print_summary(console, f"{cfg.model.name} on {cfg.task.name}", shown)
    console.print(f"run folder: {run_dir}", soft_wrap=True, markup=False, highlight=False)  # paths stay one line
    console.print("next:", highlight=False)
    for command in next_commands(run_dir, getattr(trained.task, "codec", None) is not None):
        console.print(f"  {command}", soft_wrap=True, markup=False, highlight=False)
    return results


def next_commands(run_dir: Path, text_model: bool) -> list[str]:
    """What to do with a finished run, as commands to paste into a shell (generate only for a text model)."""
    best = (run_dir / CHECKPOINTS_DIR / "best.pt").absolute()
    commands = [f"minrnn eval {override('checkpoint', best)}"]
    if text_model:
        commands.append(f"minrnn generate {override('checkpoint', best)}")
    return [*commands, f"minrnn report {shlex.quote(str(run_dir.absolute()))}"]


def override(key: str, value: Path) -> str:
    """`key=value` quoted for Hydra where the value needs it (spaces, quotes, non-ASCII), then for the shell."""
    text = str(value)
    if not PLAIN_VALUE.fullmatch(text):
        # in a quoted value a backslash is literal except before a quote (and the closing one)
        text = '"' + re.sub(r'(\\*)("|$)', lambda m: m[1] * 2 + ("\\" + m[2] if m[2] else ""), text) + '"'
    return shlex.quote(f"{key}={text}")


def require_unused(run_dir: Path) -> None:
    """One folder per run: a folder that already holds a run's records (`hydra.run.dir` set to an earlier
    run's folder) is refused rather than mixed into."""
    held = earlier_run(run_dir, ignore=(".hydra",))  # Hydra writes .hydra/ before the job starts
    if held:
        raise UserError(f"the run folder {run_dir} already holds a run ({', '.join(held)}); leave hydra.run.dir "
                        "at its default or name a new folder (to continue that run: trainer.resume=auto)")


def closing_sample(trained, length: int, seed: int) -> str:
    """Text sampled from the trained model (which holds the best checkpoint's weights), starting a line."""
    from minrnn_cli.training.sampling import sample_text

    return sample_text(trained.model, trained.task.codec, "\n", length, temperature=SAMPLE_TEMPERATURE, top_k=None,
                       seed=seed, device=trained.device)


def open_checkpoint(cfg: DictConfig):
    """(checkpoint payload, its path, device) for eval and generate."""
    from minrnn_cli.device import resolve_device
    from minrnn_cli.training.checkpoint import load_checkpoint, resolve_checkpoint

    check_runtime(cfg.trainer)
    given = [group for group in TRAIN_ONLY_GROUPS if group in cfg]
    if given:
        raise UserError(f"{given[0]}=... is not taken here: the model and task come from the checkpoint "
                        f"(checkpoint={cfg.checkpoint}); drop the {given[0]} override")
    apply_process_settings()
    device = resolve_device(cfg.trainer.device)
    path = resolve_checkpoint(str(cfg.checkpoint), outputs_dir(cfg.get("outputs_dir")))
    return load_checkpoint(path), path, device


def restore_model(payload: dict, path: Path, head, device):
    """The checkpoint's model under `head`, its weights loaded, on `device`."""
    from minrnn_cli.training.checkpoint import load_model_state
    from minrnn_cli.training.model_setup import build_headed_model

    trained = payload["config"]
    model = build_headed_model(trained["model"], head)
    load_model_state(model, payload, path)
    log.info(f"loaded {path} ({trained['model']['name']} on {trained['task']['name']}, step {payload['step']})")
    return model.to(device)


def load_trained(cfg: DictConfig):
    """(model on its device, task, checkpoint payload, device, checkpoint path) for eval: the task is rebuilt
    from the checkpoint's config (its evaluation sets need its data)."""
    from minrnn_cli.tasks import build_task

    payload, path, device = open_checkpoint(cfg)
    task = build_task(payload["config"]["task"])
    return restore_model(payload, path, task.head, device), task, payload, device, path


def eval_run(cfg: DictConfig, run_dir: Path) -> None:
    from minrnn_cli.device import resolve_precision
    from minrnn_cli.models import count_params
    from minrnn_cli.tracking.tables import print_summary
    from minrnn_cli.training.evaluation import evaluate

    model, task, payload, device, path = load_trained(cfg)
    metrics = evaluate(model, task, device, resolve_precision(cfg.trainer.precision, device))
    trained = payload["config"]
    results = {"command": "eval", "checkpoint": str(path), "model": trained["model"]["name"],
               "task": trained["task"]["name"], "params": count_params(model), "steps": payload["step"], **metrics}
    write_results(run_dir, results)
    console = Console()
    console.print(f"checkpoint: {path}", soft_wrap=True, markup=False, highlight=False)  # a path stays one line
    print_summary(console, f"eval: {results['model']} on {results['task']}",
                  {key: value for key, value in results.items() if key not in ("checkpoint", "command")})


def generate_run(cfg: DictConfig, run_dir: Path) -> None:
    from minrnn_cli.models.heads import TokenHead
    from minrnn_cli.tasks.corpus.tokenizers import codec_from_vocabulary
    from minrnn_cli.training.sampling import sample_text

    check_generate_config(cfg)
    payload, path, device = open_checkpoint(cfg)
    # the checkpoint alone: its tokenizer travels in it, so the corpus need not be there any more
    codec = codec_from_vocabulary(payload.get("vocabulary", {}), f"checkpoint {path}")
    if codec is None:
        raise UserError(f"checkpoint {path} is a {payload['config']['task']['name']} model; generate needs a text "
                        "model (shakespeare, text, enwik8, wikitext103)")
    if cfg.top_k is not None and cfg.top_k > codec.vocab_size:
        raise UserError(f"top_k={cfg.top_k} is invalid: the model's vocabulary has {codec.vocab_size} tokens")
    model = restore_model(payload, path, TokenHead(codec.vocab_size), device)
    print(f"seed={cfg.seed} (with the prompt, it fixes the sample: seed=N gives another one)", file=sys.stderr,
          flush=True)
    text = sample_text(model, codec, cfg.prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_k, cfg.seed, device,
                       stream=sys.stdout)
    (run_dir / "sample.txt").write_text(text)
