"""README.md's example commands, run as written (plus tiny settings so each takes seconds) from a folder that
is not the repository, so the README stays true: its "Commands" block, and the layout its "Outputs" tree shows."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from cli_faults import subprocess_env
from conftest import TINY_SHAKESPEARE, TINY_TRAINER

README = Path(__file__).resolve().parents[1] / "README.md"
# Appended to each command's own overrides (a later override wins), so every example runs in seconds.
TINY = {
    "train": [*TINY_SHAKESPEARE, *TINY_TRAINER, "trainer.max_steps=4"],
    "eval": ["trainer.device=cpu"],
    "generate": ["trainer.device=cpu", "max_new_tokens=20"],
    "prepare": [],
    "config": [],
    "bench": ["seq_len=[8]", "batch_size=2", "d_model=8", "threads=1", "device=cpu", "inference=false",
              "memory=false", "plot=false", "repeats=1", "min_repeats=1", "warmup=0"],
    "report": [],
}


def section(heading: str) -> str:
    """README's text from `heading` to the next heading of the same or a higher level."""
    text = README.read_text()
    level = heading.split(" ", 1)[0]
    start = text.index(f"\n{heading}\n")
    ends = [m.start() for m in re.finditer(rf"\n#{{1,{len(level)}}} ", text) if m.start() > start]
    return text[start:ends[0] if ends else len(text)]


def code_blocks(text: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)


def example_commands() -> list[list[str]]:
    """The `minrnn ...` lines of the "Commands" block, comments dropped."""
    (block,) = [block for block in code_blocks(section("### Commands")) if "minrnn " in block]
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.startswith("minrnn ")]


def test_every_readme_command_runs_from_another_folder(tmp_path):
    commands = example_commands()
    assert {command[1] for command in commands} == set(TINY)  # train, eval, generate, prepare, config, bench, report
    for command in commands:
        name = command[1]
        if any("<run>" in word for word in command):
            runs = sorted((tmp_path / "outputs" / "runs").iterdir())
            command = [word.replace("<run>", runs[-1].name) for word in command]
        done = subprocess.run([sys.executable, "-m", "minrnn_cli", *command[1:], *TINY[name]], cwd=tmp_path,
                              env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"

    # the folders README's "Outputs" tree shows, as those commands left them (a sweep aside: none ran)
    (tree,) = [block for block in code_blocks(section("### Outputs")) if block.startswith("outputs/")]
    shown = re.findall(r"^  (\w+)/", tree, re.MULTILINE)
    assert {"runs", "evals", "samples", "bench", "multirun", "report"} <= set(shown)
    made = {path.name for path in (tmp_path / "outputs").iterdir()}
    assert made == set(shown) - {"multirun"}, (made, shown)
    for kind in ("runs", "evals", "samples", "bench"):
        for folder in (tmp_path / "outputs" / kind).iterdir():
            assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d-\d{6}", folder.name), folder
