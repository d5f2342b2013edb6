"""`python -m minrnn_cli.benchmarking key=value ...`: the bench without Hydra, for torch-only machines.

    python -m minrnn_cli.benchmarking seq_len=[512,4096] models=[mingru,gru,gru_loop] batch_size=64
    python -m minrnn_cli.benchmarking seq_len=512 device=cuda out=outputs/bench/gpu

Keys are those of `minrnn bench`'s config (BenchConfig) plus `out` (default <outputs>/bench/<timestamp>, where
<outputs> is $MINRNN_OUTPUTS, else ./outputs, as for `minrnn bench`).
Values: integers, numbers, true/false, null, words, and flat lists in brackets.
"""

from __future__ import annotations

import datetime
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from minrnn_cli.benchmarking.config import BenchConfig
from minrnn_cli.paths import output_folder

USAGE = __doc__


def parse_value(text: str) -> object:
    text = text.strip()
    if text.startswith("[") or text.endswith("]"):
        if not (text.startswith("[") and text.endswith("]")):
            raise ValueError(f"unbalanced list {text!r}; write lists as [a,b,c]")
        inner = text[1:-1].strip()
        return [parse_value(item) for item in inner.split(",")] if inner else []
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "none"):
        return None
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    return text.strip("'\"")


def parse_args(args: list[str]) -> tuple[dict[str, object], Path | None]:
    """key=value arguments -> (settings, out dir or None); ValueError names the bad argument."""
    settings: dict[str, object] = {}
    out_dir = None
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            allowed = ", ".join([f.name for f in fields(BenchConfig)] + ["out"])
            raise ValueError(f"expected key=value, got {arg!r}; keys: {allowed}")
        if key == "out":
            out_dir = Path(value)
        else:
            settings[key] = parse_value(value)
    return settings, out_dir


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in argv):
        print(USAGE)
        return
    try:
        settings, out_dir = parse_args(argv)
        config = BenchConfig.from_mapping(settings)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")  # as conf/hydra/default.yaml's
        from minrnn_cli.benchmarking.run import run_bench

        run_bench(config, out_dir or Path(output_folder(None, "bench")) / stamp,
                  command="python -m minrnn_cli.benchmarking " + shlex.join(argv))
    except ValueError as error:
        raise SystemExit(f"minrnn bench: {error}") from None


if __name__ == "__main__":
    main()
