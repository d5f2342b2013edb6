"""A reader that goes away (`minrnn train ... | head -1`) and a closing step that fails must not cost a
finished run its results: results.json is written before anything optional, and writes to a broken pipe
are dropped instead of failing the run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_SHAKESPEARE, TINY_TRAINER, only_run_dir, run_ok

MINRNN = shutil.which("minrnn") or str(Path(sys.executable).with_name("minrnn"))


def test_a_run_piped_into_head_finishes_and_writes_its_results(tmp_path):
    command = " ".join([MINRNN, "train", *TINY_SHAKESPEARE, *TINY_TRAINER])
    done = subprocess.run(["bash", "-c", f"{command} | head -1; echo \"exit=${{PIPESTATUS[0]}}\" >&2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "COLUMNS": "120"})
    assert "exit=0" in done.stderr, done.stderr[-2000:]
    assert "Logging error" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert len(done.stdout.splitlines()) == 1
    run_dir = only_run_dir(tmp_path)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["steps"] == 6 and (run_dir / "checkpoints" / "best.pt").is_file()


def test_a_failing_closing_sample_is_a_warning_and_the_results_stay(tmp_path, monkeypatch):
    from minrnn_cli.training import runs

    def broken_sample(*args, **kwargs):
        raise RuntimeError("the sampler broke")

    monkeypatch.setattr(runs, "closing_sample", broken_sample)
    result = run_ok(tmp_path, "train", *TINY_SHAKESPEARE, *TINY_TRAINER)
    assert "the closing text sample failed (RuntimeError: the sampler broke)" in result.stdout + result.stderr
    results = json.loads((only_run_dir(tmp_path) / "results.json").read_text())
    assert results["steps"] == 6 and "val_loss" in results and "sample" not in results


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_surviving_stream_drops_writes_after_a_broken_pipe(stream, tmp_path):
    code = ("import os, sys; from minrnn_cli.streams import survive_closed_pipes; survive_closed_pipes(); "
            f"r, w = os.pipe(); os.dup2(w, sys.{stream}.fileno()); os.close(r); "
            f"[sys.{stream}.write('x' * 1000 + '\\n') or sys.{stream}.flush() for _ in range(200)]; "
            "open('done', 'w').write('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "done").read_text() == "ok"
