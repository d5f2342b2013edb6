"""The table of user mistakes (docs/BAD_INPUT.md): each gives one line naming the bad value and what is
allowed, a non-zero exit, no traceback, and leaves nothing behind that looks like a result."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_faults import TINY, TINY_RUN, assert_one_line_error, invoke, subprocess_env

ROOT = Path(__file__).resolve().parents[1]

# a text task small enough to load in milliseconds: {ws} is the folder of prepared files
TEXT = [*TINY_RUN, "task=shakespeare", "task.seq_len=4", "task.batch_size=2", "task.eval_batches=1",
        "task.sample_chars=0"]


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]
    expected: list[str]  # fragments of the one error line: the bad value and what is allowed
    exit_code: int = 2
    unset: tuple[str, ...] = ()  # environment variables the case runs without


CASES = [
    # ---- train: config values --------------------------------------------------------------------------
    Case("unknown-group-option", ["train", *TINY, "model=nope"], ["unknown model 'nope'", "mingru, minlstm"]),
    Case("unknown-option-in-sweep", ["train", "-m", *TINY, "model=mingru,nope"], ["'nope'", "mingru"]),
    # the launchers listed: basic and minrnn's own, joblib too with the sweeps extra (so not asserted)
    Case("unknown-hydra-option", ["train", *TINY, "hydra/launcher=nope"], ["'hydra/launcher/nope'", "basic"]),
    Case("missing-config-dir", ["train", "-cd", "{ws}/no_configs", *TINY], ["no_configs' not found"]),
    Case("override-without-key", ["train", *TINY, "=5"], ["override '=5' has no key", "key=value"]),
    Case("unquoted-non-ascii-value", ["train", *TINY, "task.data_path=données.txt"],
         ["non-ASCII characters only inside quotes", "'task.data_path=\"données.txt\"'"]),
    Case("unbalanced-brackets", ["train", *TINY, "optim.betas=[0.9,0.99"],
         ["'optim.betas=[0.9,0.99' is not a valid override", "key=[a,b]"]),
    Case("unknown-key", ["train", *TINY, "trainer.foo=1"], ["'trainer.foo'", "max_steps", "+trainer.foo="]),
    Case("wrong-type-integer", ["train", *TINY, "trainer.max_steps=abc"], ["trainer.max_steps='abc'", "integer >= 1"]),
    Case("wrong-type-boolean", ["train", *TINY, "trainer.compile=maybe"], ["trainer.compile='maybe'", "true or false"]),
    Case("wrong-type-list", ["train", *TINY, "optim.betas=[0.9]"], ["optim.betas=[0.9]", "two numbers in [0, 1)"]),
    Case("negative-learning-rate", ["train", *TINY, "optim.lr=-1"], ["optim.lr=-1", "> 0"]),
    Case("dropout-out-of-range", ["train", *TINY, "model.dropout=1.5"], ["model.dropout=1.5", "[0, 1)"]),
    Case("zero-steps", ["train", *TINY, "trainer.max_steps=0"], ["trainer.max_steps=0", "integer >= 1"]),
    Case("unknown-precision", ["train", *TINY, "trainer.precision=fp8"], ["'fp8'", "fp32, bf16"]),
    Case("unknown-nonfinite-policy", ["train", *TINY, "trainer.on_nonfinite=maybe"], ["'maybe'", "stop, skip"]),
    Case("unknown-scan-backend", ["train", *TINY, "model.scan_backend=fast"], ["'fast'", "sequential, log, linear"]),
    Case("unknown-wandb-mode", ["train", *TINY, "logger=wandb", "logger.mode=sometimes"],
         ["logger.mode='sometimes'", "online, offline, disabled"]),
    Case("interpolation-to-missing-key", ["train", *TINY, "trainer.seed=${{nope}}"],
         ["'nope' not found", "trainer.seed"]),
    Case("conflicting-task-options", ["train", *TINY, "task.n_memorize=32"], ["task.n_memorize=32", "task.seq_len=16"]),
    Case("conflicting-flags", ["train", "-m", "--cfg", "job", *TINY], ["-m/--multirun and --cfg", "use one of"]),
    Case("unknown-device", ["train", *TINY, "trainer.device=tpu"], ["trainer.device='tpu'", "auto, cpu, cuda"]),
    Case("cuda-without-cuda", ["train", *TINY, "trainer.device=cuda"], ["trainer.device=cuda", "trainer.device=cpu"]),
    # ---- train: options that do not fit together, sizes no machine holds ---------------------------------------
    Case("heads-do-not-divide-width", ["train", *TINY, "model=transformer", "model.n_heads=3"],
         ["model.n_heads=3 does not fit model.d_model=16", "model.n_heads can be one of 1, 2, 4, 8"]),
    Case("expansion-gives-no-width", ["train", *TINY, "model.expansion=0.01"],
         ["model.expansion=0.01 with model.d_model=16", "at least 1"]),
    Case("mlp-ratio-gives-no-width", ["train", *TINY, "model.mlp=true", "model.mlp_ratio=0.01"],
         ["model.mlp_ratio=0.01 with model.d_model=16", "model.mlp=false"]),
    Case("model-too-large-for-memory", ["train", *TINY, "model.d_model=1000000"],
         ["model mingru with model.d_model=1000000", "needs about", "(an estimate:", "more than the",
          "smaller model.d_model"]),
    Case("batch-too-large-for-memory", ["train", *TINY, "task.batch_size=10000000000"],
         ["task.batch_size=10000000000, task.seq_len=16", "more than the", "task.batch_size"]),
    Case("sequence-too-long-for-memory", ["train", *TINY, "task.seq_len=100000000000"],
         ["task.batch_size=4, task.seq_len=100000000000", "more than the"]),
    # ---- train: careless values (a second pass) -----------------------------------------------------------
    Case("infinite-learning-rate", ["train", *TINY, "optim.lr=inf"], ["optim.lr=inf is invalid", "> 0"]),
    Case("eval-seed-not-an-integer", ["train", *TINY, "task.eval_seed=abc"],
         ["task.eval_seed='abc' is invalid", "integer >= 0"]),
    Case("triton-backend-where-triton-cannot-run", ["train", *TINY, "model.scan_backend=triton"],
         ["model.scan_backend=triton", "model.scan_backend=auto or linear"], unset=("TRITON_INTERPRET",)),
    Case("unquoted-home-path", ["train", *TINY, "trainer.resume=~/nope.pt"],
         ["Hydra's overrides take '~' only inside quotes", "'trainer.resume=\"~/nope.pt\"'"]),
    Case("empty-run-dir", ["train", *TINY, "hydra.run.dir="], ["hydra.run.dir='' is empty", "leave it out"]),
    Case("empty-sweep-dir", ["train", "-m", *TINY, "hydra.sweep.dir="], ["hydra.sweep.dir='' is empty"]),
    Case("sweep-folder-of-other-overrides", ["train", "-m", *TINY, "trainer.seed=1,2", "hydra.sweep.dir={ws}/sweep"],
         ["sweep folder", "holds a sweep of other overrides (trainer.seed=1)", "new hydra.sweep.dir=..."]),
    Case("empty-wandb-project", ["train", *TINY, "logger=wandb", "logger.project="],
         ["logger.project='' is invalid", "logger.project=minrnn"]),
    # ---- train: data ---------------------------------------------------------------------------------------
    Case("missing-data-file", ["train", *TEXT, "task.data_files={ws}/nope.txt"],
         ["nope.txt", "No such file", "UTF-8 text file"]),
    Case("unreadable-data-file", ["train", *TEXT, "task.data_files={ws}/a_folder"], ["a_folder", "Is a directory"]),
    Case("empty-text-file", ["train", *TEXT, "task.data_files={ws}/empty.txt"], ["empty.txt is empty", "UTF-8"]),
    Case("binary-text-file", ["train", *TEXT, "task.data_files={ws}/random.bin"], ["random.bin is not UTF-8 text"]),
    Case("text-file-with-nul-bytes", ["train", *TEXT, "task.data_files={ws}/nul.txt"], ["nul.txt looks binary"]),
    Case("data-file-is-a-pipe", ["train", *TEXT, "task.data_files={ws}/a_pipe"],
         ["a_pipe is not a regular file", "UTF-8 text file"]),
    Case("late-non-utf8-byte", ["train", *TEXT, "task.data_files={ws}/late_latin1.txt"],
         ["late_latin1.txt is not UTF-8 text (byte 2000003)"]),
    Case("seq-len-longer-than-data", ["train", *TEXT, "task.data_files={ws}/short.txt", "task.seq_len=64"],
         ["task.seq_len=64", "has 12 tokens", "task.seq_len <= 11"]),
    Case("batch-larger-than-data", ["train", *TEXT, "task.data_files={ws}/short.txt", "task.batch_size=64"],
         ["task.batch_size=64", "task.batch_size <= 8"]),
    Case("text-column-missing", ["train", *TEXT, "task.data_files={ws}/rows.jsonl", "task.text_column=body"],
         ["task.text_column=body", "no such column", "its columns are text, id"]),
    Case("text-column-not-text", ["train", *TEXT, "task.data_files={ws}/rows.jsonl", "task.text_column=id"],
         ["task.text_column=id", "is int64, not text", "its text columns are text"]),
    Case("empty-test-split", ["train", *TEXT, "task.data_files={ws}/short.txt", "task.test_fraction=0.001"],
         ["the test split is empty", "give more text"]),
    Case("glob-matching-nothing", ["train", *TEXT, "task.data_files={ws}/corpus-*.txt"],
         ["corpus-*.txt matches no file"]),
    Case("tokenizer-file-does-not-parse", ["train", *TEXT, "task.data_files={ws}/short.txt",
                                           "task.tokenizer={ws}/broken_tokenizer.json"],
         ["broken_tokenizer.json does not parse as a tokenizers tokenizer.json"]),
    Case("hub-dataset-not-cached-offline", ["train", *TINY_RUN, "task=text", "task.dataset=no-such-org/no-such-corpus"],
         ["task.dataset=no-such-org/no-such-corpus cannot be loaded", "not in the local HF cache",
          "task.download=true"]),
    Case("flag-given-a-number", ["train", *TEXT, "task.data_files={ws}/short.txt", "task.eval_full=5"],
         ["task.eval_full=5", "true or false"]),
    Case("download-given-a-word", ["train", *TEXT, "task.data_files={ws}/short.txt", "task.download=maybe"],
         ["task.download='maybe'", "true or false"]),
    Case("count-given-true", ["train", *TEXT, "task.data_files={ws}/short.txt", "task.tokenizer=bpe",
                              "task.vocab_size=300", "task.bpe_train_bytes=true"],
         ["task.bpe_train_bytes=True", "positive integer"]),
    Case("data-files-given-a-number", ["train", *TEXT, "task.data_files=5"],
         ["task.data_files=5 is invalid", "a path, a glob or a list"]),
    Case("separator-given-a-number", ["train", *TEXT, "task.data_files={ws}/short.txt", "task.separator=5"],
         ["task.separator=5 is invalid", "must be text"]),
    Case("retrieval-without-data", ["train", *TINY_RUN, "task=lra_retrieval"],
         ["task lra_retrieval needs LRA's AAN document pairs", "task.data_path=FOLDER"]),
    Case("retrieval-malformed-line", ["train", *TINY_RUN, "task=lra_retrieval", "task.data_path={ws}/aan"],
         ["new_aan_pairs.train.tsv, line 2", "4 tab-separated fields", "expects 5"]),
    Case("d4rl-without-data", ["train", *TINY_RUN, "task=d4rl"],
         ["task d4rl needs a D4RL dataset", "task.data_path=FILE"]),
    Case("d4rl-unknown-env", ["train", *TINY_RUN, "task=d4rl", "task.data_path={ws}/hopper.pkl", "task.env=ant"],
         ["task.env='ant' is invalid", "halfcheetah, hopper, walker2d"]),
    Case("d4rl-wrong-file-type", ["train", *TINY_RUN, "task=d4rl", "task.data_path={ws}/short.txt"],
         ["unknown suffix '.txt'", ".hdf5", ".pkl"]),
    # ---- train: resuming -----------------------------------------------------------------------------------
    Case("resume-missing-checkpoint", ["train", *TINY, "trainer.resume={ws}/nope.pt"], ["nope.pt does not exist"]),
    Case("resume-other-model", ["train", *TINY, "model=minlstm", "trainer.resume={ckpt}"],
         ["different model config (model.name='mingru' there, 'minlstm' here)", "same model settings"]),
    Case("resume-other-task", ["train", *TEXT, "task.data_files={ws}/short.txt", "trainer.resume={ckpt}"],
         ["task.name='selective_copying' there, 'shakespeare' here", "same task settings"]),
    Case("resume-corrupt-checkpoint", ["train", *TINY, "trainer.resume={ws}/garbage.pt"],
         ["garbage.pt is not readable"]),
    Case("resume-finished-run", ["train", *TINY, "trainer.resume={ckpt}"],
         ["is at step 4", "trainer.max_steps=4", "nothing left to train"]),
    Case("resume-changed-optimiser", ["train", *TINY, "trainer.max_steps=8", "optim.lr=0.5",
                                      "trainer.resume={ckpt}"],
         ["different optim config (optim.lr=0.003 there, 0.5 here)", "same optim settings"]),
    # ---- eval ----------------------------------------------------------------------------------------------
    Case("eval-missing-checkpoint", ["eval", "checkpoint={ws}/nope.pt", "trainer.device=cpu"],
         ["nope.pt does not exist"]),
    Case("eval-truncated-checkpoint", ["eval", "checkpoint={ws}/truncated.pt", "trainer.device=cpu"],
         ["truncated.pt is not readable"]),
    Case("eval-foreign-checkpoint", ["eval", "checkpoint={ws}/foreign.pt", "trainer.device=cpu"],
         ["foreign.pt is not a minrnn checkpoint"]),
    Case("eval-checkpoint-without-model-config", ["eval", "checkpoint={ws}/no_model_config.pt", "trainer.device=cpu"],
         ["no_model_config.pt is damaged: its config has no model with a name"]),
    Case("generate-checkpoint-with-bad-vocabulary", ["generate", "checkpoint={ws}/bad_vocabulary.pt",
                                                     "trainer.device=cpu"],
         ["bad_vocabulary.pt is damaged: its vocabulary is a list, not a mapping"]),
    Case("resume-checkpoint-with-bad-step", ["train", *TINY, "trainer.resume={ws}/bad_step.pt"],
         ["bad_step.pt is damaged: its step is 'four', not a count of steps"]),
    Case("eval-no-latest-checkpoint", ["eval", "trainer.device=cpu"],
         ["checkpoint=latest", "/outputs;", "outputs_dir=DIR or MINRNN_OUTPUTS=DIR", "checkpoint=PATH"]),
    Case("eval-unknown-run-name", ["eval", "checkpoint=nope", "trainer.device=cpu"],
         ["checkpoint=nope is not a .pt file, a run folder or a run name", "/outputs/runs and ", "outputs_dir=DIR"]),
    Case("eval-empty-checkpoint", ["eval", "checkpoint=", "trainer.device=cpu"],
         ["checkpoint= is empty; give checkpoint=latest, a .pt file, a run folder or a run name"]),
    Case("eval-run-folder-without-checkpoint", ["eval", "checkpoint={ws}/a_folder", "trainer.device=cpu"],
         ["a_folder has no checkpoints/best.pt", "no checkpoint at all"]),
    Case("eval-config-file-as-checkpoint", ["eval", "checkpoint={ws}/trained/.hydra/config.yaml", "trainer.device=cpu"],
         ["config.yaml is not readable: damaged, truncated or not a PyTorch file (Weights only load failed);"]),
    Case("eval-unknown-key", ["eval", "foo=1"], ["unknown key 'foo'", "checkpoint"]),
    Case("eval-model-override", ["eval", "checkpoint={ckpt}", "+model=minlstm"],
         ["model=... is not taken here", "come from the checkpoint"]),
    Case("eval-model-group", ["eval", "checkpoint={ckpt}", "model=minlstm"],
         ["model=... is not taken here", "come from the checkpoint"]),
    Case("generate-task-override", ["generate", "checkpoint={ckpt}", "++task.seq_len=8"],
         ["task=... is not taken here", "come from the checkpoint"]),
    Case("eval-unknown-device", ["eval", "checkpoint={ckpt}", "trainer.device=tpu"], ["trainer.device='tpu'"]),
    # ---- generate ------------------------------------------------------------------------------------------
    Case("generate-from-non-text-model", ["generate", "checkpoint={ckpt}", "trainer.device=cpu"],
         ["selective_copying model", "generate needs a text model"]),
    Case("generate-zero-tokens", ["generate", "checkpoint={ckpt}", "max_new_tokens=0"],
         ["max_new_tokens=0", "integer from 1 to 1,000,000"]),
    Case("generate-too-many-tokens", ["generate", "checkpoint={ckpt}", "max_new_tokens=10000000000"],
         ["max_new_tokens=10000000000", "integer from 1 to 1,000,000"]),
    Case("generate-negative-temperature", ["generate", "checkpoint={ckpt}", "temperature=-1"],
         ["temperature=-1", ">= 0"]),
    Case("generate-zero-top-k", ["generate", "checkpoint={ckpt}", "top_k=0"], ["top_k=0", "integer >= 1"]),
    # ---- config --------------------------------------------------------------------------------------------
    Case("config-unknown-group-option", ["config", "task=nope"], ["unknown task 'nope'", "selective_copying"]),
    Case("config-unknown-key", ["config", "optim.foo=1"], ["'optim.foo'", "lr"]),
    Case("config-unknown-config-name", ["config", "--config-name", "nope"], ["'nope'"]),
    # ---- bench ---------------------------------------------------------------------------------------------
    Case("bench-zero-length", ["bench", "seq_len=0", "device=cpu"], ["seq_len=0", ">= 1"]),
    Case("bench-unknown-model", ["bench", "models=[nope]", "device=cpu"], ["'nope'", "mingru"]),
    Case("bench-unknown-key", ["bench", "foo=1"], ["unknown key 'foo'", "seq_len"]),
    Case("bench-model-instead-of-models", ["bench", "model=minlstm"], ["bench takes models=[...]", "mingru, minlstm"]),
    Case("bench-group-it-lacks", ["bench", "trainer=gpu"], ["bench has no trainer group", "minrnn bench --help"]),
    # ---- report --------------------------------------------------------------------------------------------
    Case("report-target-without-value", ["report", "{ws}/trained", "--out", "rep", "--target", "val_loss"],
         ["--target 'val_loss' is invalid", "METRIC=VALUE", "val_accuracy=0.95"]),
    Case("report-target-of-unknown-direction", ["report", "{ws}/trained", "--out", "rep", "--target", "lr=0.1"],
         ["'lr' is neither a loss", "an accuracy, score or return", "val_loss=1.6"]),
    Case("report-target-not-a-number", ["report", "{ws}/trained", "--out", "rep", "--target", "val_loss=abc"],
         ["--target 'val_loss=abc' is invalid", "'abc' is not a finite number"]),
    Case("report-target-accuracy-in-percent", ["report", "{ws}/trained", "--out", "rep", "--target",
                                               "val_accuracy=95"], ["'val_accuracy=95'", "fraction from 0 to 1"]),
    Case("report-target-negative-loss", ["report", "{ws}/trained", "--out", "rep", "--target", "val_loss=-1"],
         ["'val_loss=-1'", "never below 0"]),
    Case("report-out-is-a-file", ["report", "{ws}/trained", "--out", "{ws}/empty.txt"],
         ["--out ", "empty.txt is a file", "give a folder"]),
    Case("report-out-under-a-file", ["report", "{ws}/trained", "--out", "{ws}/empty.txt/report"],
         ["empty.txt/report: the folder cannot be made", "a part of the path is a file"]),
    # ---- W&B -----------------------------------------------------------------------------------------------
    Case("wandb-online-without-login-stop", ["train", *TINY, "logger=wandb", "logger.mode=online",
                                             "logger.on_error=stop"], ["logger.mode=online", "no W&B login",
                                                                       "logger.mode=offline"]),
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, str]:
    """Files the cases point at, and a finished tiny run (mingru on selective copying, 4 steps)."""
    ws = tmp_path_factory.mktemp("ws")
    (ws / "a_folder").mkdir()
    (ws / "empty.txt").write_bytes(b"")
    (ws / "random.bin").write_bytes(bytes(range(128, 256)) * 8)
    (ws / "nul.txt").write_bytes(b"abc\x00def" * 20)
    os.mkfifo(ws / "a_pipe")  # reading it would wait for a writer forever
    (ws / "late_latin1.txt").write_bytes(b"a" * 2_000_000 + "caf\u00e9".encode("latin-1"))  # past the first chunk
    (ws / "short.txt").write_text("to be or not to be " * 6)  # 114 characters: a 12-character validation split
    (ws / "rows.jsonl").write_text('{"text": "a row", "id": 1}\n{"text": "another", "id": 2}\n')
    (ws / "broken_tokenizer.json").write_text('{"model": ')
    (ws / "garbage.pt").write_bytes(b"this is not a checkpoint")
    (ws / "aan").mkdir()
    for split in ("train", "eval", "test"):
        (ws / "aan" / f"new_aan_pairs.{split}.tsv").write_text("1\tid1\tid2\ttext\tother\n0\tid1\tid2\tno text2\n")
    episode = {"observations": np.zeros((4, 11)), "actions": np.zeros((4, 3)), "rewards": np.zeros(4)}
    (ws / "hopper.pkl").write_bytes(pickle.dumps([episode]))
    torch.save({"weights": torch.zeros(2)}, ws / "foreign.pt")
    (ws / "sweep" / "0").mkdir(parents=True)  # a sweep of trainer.seed=1 alone, finished
    (ws / "sweep" / "0" / "results.json").write_text("{}\n")
    (ws / "sweep" / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: [trainer.seed=1]\n")
    result = invoke(["train", *TINY, f"hydra.run.dir={ws / 'trained'}"])
    assert result.exit_code == 0, result.stdout + result.stderr
    ckpt = ws / "trained" / "checkpoints" / "last.pt"
    data = ckpt.read_bytes()
    (ws / "truncated.pt").write_bytes(data[: len(data) // 2])
    for name, change in (("no_model_config", lambda p: p["config"].pop("model")),
                         ("bad_vocabulary", lambda p: p.update(vocabulary=["a", "b"])),
                         ("bad_step", lambda p: p.update(step="four"))):
        payload = torch.load(ckpt, weights_only=True)
        change(payload)
        torch.save(payload, ws / f"{name}.pt")
    return {"ws": str(ws), "ckpt": str(ckpt)}


@pytest.fixture
def no_wandb_login(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_mistake_gives_one_line_and_no_result(case, workspace, tmp_path, monkeypatch, no_wandb_login):
    if case.id == "cuda-without-cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    for name in case.unset:
        monkeypatch.delenv(name, raising=False)
    result = invoke([arg.format(**workspace) for arg in case.args])
    line = assert_one_line_error(result, case.exit_code)
    for fragment in case.expected:
        assert fragment in line, line
    assert not list(tmp_path.rglob("results.json")), "a failed command wrote a result"
    assert not list(tmp_path.rglob("*.pt")), "a failed command wrote a checkpoint"
    left = [path for path in (tmp_path / "outputs").rglob("*")] if (tmp_path / "outputs").exists() else []
    assert not [path for path in left if path.is_file()], f"a failed command left files: {left}"


def test_table_in_docs_lists_every_case():
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", (ROOT / "docs" / "BAD_INPUT.md").read_text(), re.MULTILINE)
    assert sorted(documented) == sorted(case.id for case in CASES)


def test_sweep_with_one_bad_job_runs_the_others_and_fails_at_the_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(["train", "-m", *TINY, "optim.lr=-1,0.003", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    line = assert_one_line_error(result)
    assert "1 of 2 jobs failed" in line and "optim.lr=-1" in line, line
    assert not (tmp_path / "sweep" / "0" / "results.json").exists()
    assert "optim.lr=-1 is invalid" in (tmp_path / "sweep" / "0" / "error.txt").read_text()
    assert (tmp_path / "sweep" / "1" / "results.json").is_file()  # the job after the failed one still ran
    summary = (tmp_path / "sweep" / "summary.csv").read_text().splitlines()
    assert summary[0].split(",")[:3] == ["job", "overrides", "status"]
    assert summary[1].startswith("0,optim.lr=-1,failed,") and "optim.lr=-1 is invalid" in summary[1]
    assert summary[2].startswith("1,optim.lr=0.003,ok,")


def test_wandb_online_without_login_goes_offline_in_one_line(tmp_path, monkeypatch, no_wandb_login):
    monkeypatch.chdir(tmp_path)
    result = invoke(["train", *TINY, "logger=wandb", "logger.mode=online", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.exit_code == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if "W&B cannot go online" in line]
    assert len(warnings) == 1 and "no W&B login" in warnings[0] and "wandb sync" in warnings[0]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert (tmp_path / "run" / "results.json").is_file()


@pytest.mark.parametrize("args", [
    ["train", *TINY, "trainer.foo=1"],  # Hydra's composition error
    ["train", *TINY, "optim.lr=-1"],  # a check inside the job
    ["eval", "checkpoint=missing.pt"],
    ["generate", "checkpoint=missing.pt"],
])
def test_no_traceback_reaches_stderr_of_the_real_command(args, tmp_path):
    result = subprocess.run([sys.executable, "-m", "minrnn_cli", *args], cwd=tmp_path, env=subprocess_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1, result.stderr
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert sorted(tmp_path.iterdir()) == []  # no run folder, nor the empty outputs/evals/ above one


def test_a_config_without_a_width_builds_with_the_default_one():
    """`~model.d_model` leaves the width to the constructor's default: the checks across options (all about the
    width) wait for the build instead of failing on the missing key (a KeyError traceback)."""
    from minrnn_cli.models import build_lm
    from minrnn_cli.training.model_setup import check_model_config

    check_model_config({"name": "transformer", "n_heads": 3})
    with pytest.raises(ValueError, match="n_heads=3 does not fit d_model=128"):
        build_lm("transformer", 5, n_heads=3)
