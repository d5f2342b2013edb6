"""scripts/gpu_check.sh without a GPU: its dry run (the plan, and the line saying why it stops), its refusal
to run for real, its budget, and, with a stand-in interpreter that reports one GPU, how it runs the steps,
records them and writes the summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"
STEPS = ["env", "deps", "triton_tests", "triton_bench", "triton_bench_tf32", "bench", "train", "ddp"]
BUDGET_S, GRACE_S = 8 * 60, 3
no_gpu_here = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")

# Stands in for python on a one-GPU machine: the probe and the summary writer (the two scripts read from
# stdin) run on the real interpreter, the probe's answer edited to one GPU with triton and pytest, and
# FAKE_MISSING the missing modules; every step's command "passes" at once, except one naming FAKE_FAIL.
FAKE_PYTHON = """#!/usr/bin/env bash
if [ "$1" = - ]; then
    "$REAL_PYTHON" "$@" | sed -e 's/^cuda=.*/cuda=1/' -e 's/^gpus=.*/gpus=1/' \\
        -e 's/^gpu_name=.*/gpu_name=Fake H200/' -e 's/^triton=.*/triton=present 3.9/' \\
        -e 's/^pytest=.*/pytest=present/' -e "s/^missing=.*/missing=$FAKE_MISSING/"
    exit "${PIPESTATUS[0]}"
fi
echo "fake run: $*"
if [ -n "$FAKE_FAIL" ]; then case "$*" in *"$FAKE_FAIL"*) exit 1 ;; esac; fi
exit 0
"""


def run_script(*args: str, python: str = sys.executable, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": python, "REAL_PYTHON": sys.executable, **env}
    environment.pop("MINRNN_WHEELS", None)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=environment,
                          timeout=120)


def plan_lines(stdout: str) -> dict[str, tuple[int, str]]:
    """step -> (timeout in s, command) from the printed plan."""
    found = {}
    for line in stdout.splitlines():
        match = re.match(r"^  (\w+)\s+(\d+) s  (.*)$", line)
        if match:
            found[match[1]] = (int(match[2]), match[3])
    return found


@no_gpu_here
def test_the_dry_run_prints_the_plan_and_why_it_stops(tmp_path):
    done = run_script("--dry-run", "--out", str(tmp_path / "check"))
    assert done.returncode == 0, done.stdout + done.stderr
    plan = plan_lines(done.stdout)
    assert list(plan) == [*STEPS, "total"]
    assert "tests/test_triton_scan.py" in plan["triton_tests"][1]
    assert "--tf32" in plan["triton_bench_tf32"][1] and "--tf32" not in plan["triton_bench"][1]
    bench = plan["bench"][1]
    assert "-m minrnn_cli.benchmarking" in bench and "seq_len=[64,128,256,512,1024,2048,4096]" in bench
    assert "batch_size=64" in bench and "d_model=128" in bench and "device=cuda" in bench
    assert "models=[mingru,minlstm,gru,gru_loop,lstm,lstm_loop" in bench
    assert "trainer=gpu" in plan["train"][1] and "trainer.max_steps=300" in plan["train"][1]
    assert "--nproc_per_node=2" in plan["ddp"][1]
    assert "would skip: needs 2 GPUs, found 0" in done.stdout
    assert "mamba-ssm:" in done.stdout
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("gpu_check: stops here: no CUDA GPU") and "torch.cuda.is_available() is false" in last
    assert not (tmp_path / "check").exists()  # nothing run, nothing written


@no_gpu_here
def test_a_real_run_without_a_gpu_is_refused(tmp_path):
    done = run_script("--out", str(tmp_path / "check"))
    assert done.returncode == 3
    assert "stops here: no CUDA GPU" in done.stdout and "nothing was run" in done.stdout
    assert not (tmp_path / "check").exists()


def test_the_timeouts_fit_the_8_minute_budget_and_match_the_header(tmp_path):
    done = run_script("--dry-run", "--out", str(tmp_path / "check"))
    plan = plan_lines(done.stdout)
    timeouts = {step: plan[step][0] for step in STEPS}
    assert sum(timeouts.values()) == plan["total"][0]
    assert sum(timeouts.values()) + GRACE_S * len(STEPS) < BUDGET_S
    header = SCRIPT.read_text().split("\nset -uo pipefail", 1)[0]
    for step, seconds in timeouts.items():
        assert re.search(rf"^#   {step}\s+{seconds} s  ", header, re.MULTILINE), step


def test_bad_arguments_exit_2():
    done = run_script("--frobnicate")
    assert done.returncode == 2 and "unknown argument '--frobnicate'" in done.stderr


@pytest.fixture
def fake_python(tmp_path) -> str:
    path = tmp_path / "python"
    path.write_text(FAKE_PYTHON)
    path.chmod(0o755)
    return str(path)


def test_with_a_gpu_every_step_is_run_recorded_and_summarised(tmp_path, fake_python):
    out = tmp_path / "check"
    done = run_script("--out", str(out), python=fake_python, FAKE_MISSING="", FAKE_FAIL="minrnn_cli.benchmarking")
    assert done.returncode == 1, done.stdout + done.stderr  # the bench failed
    summary = json.loads((out / "summary.json").read_text())
    status = {step["step"]: step["status"] for step in summary["steps"]}
    assert status == {"env": "ok", "deps": "skipped", "triton_tests": "ok", "triton_bench": "ok",
                      "triton_bench_tf32": "ok", "bench": "failed", "train": "ok", "ddp": "skipped"}
    assert summary["failed"] == ["bench"] and summary["skipped"] == ["deps", "ddp"]
    notes = {step["step"]: step["note"] for step in summary["steps"]}
    assert notes["ddp"] == "needs 2 GPUs, found 1" and notes["deps"] == "nothing missing"
    assert notes["bench"] == "exit 1 (see bench.log)"
    assert summary["env"]["gpu_name"] == "Fake H200" and "mamba_ssm" in summary["env"]
    for step in STEPS:
        assert (out / f"{step}.log").is_file(), step
    assert "fake run: -m minrnn_cli train trainer=gpu" in (out / "train.log").read_text()
    markdown = (out / "summary.md").read_text()
    assert "1 failed, 2 skipped" in markdown and "| bench | failed |" in markdown and "| ddp | skipped |" in markdown


def test_missing_modules_are_installed_from_the_wheel_folder_or_their_steps_skipped(tmp_path, fake_python):
    out, wheels = tmp_path / "check", tmp_path / "wheels"
    wheels.mkdir()
    done = run_script("--out", str(out), "--wheels", str(wheels), python=fake_python,
                      FAKE_MISSING="hydra omegaconf datasets", FAKE_FAIL="")
    assert done.returncode == 0, done.stdout + done.stderr  # skips are not failures
    steps = {step["step"]: step for step in json.loads((out / "summary.json").read_text())["steps"]}
    assert steps["deps"]["status"] == "ok"
    assert f"--find-links {wheels} hydra-core omegaconf datasets" in steps["deps"]["command"]
    # the stand-in installs nothing, so the probe after it still finds them missing
    for step in ("train", "ddp"):
        assert steps[step]["status"] == "skipped" and steps[step]["note"] == "missing hydra omegaconf datasets"
    assert steps["bench"]["status"] == "ok" and steps["triton_tests"]["status"] == "ok"

    dry = run_script("--dry-run", python=fake_python, FAKE_MISSING="datasets mambapy", FAKE_FAIL="")
    assert "would skip: no wheel folder (--wheels DIR or MINRNN_WHEELS) for: datasets mambapy" in dry.stdout
    assert "bench leaves mamba out: mambapy is missing" in dry.stdout
    assert "lstm_loop] " in plan_lines(dry.stdout)["bench"][1]  # no mamba in models
    assert dry.stdout.strip().endswith("gpu_check: dry run, nothing was run") and dry.returncode == 0
