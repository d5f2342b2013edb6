"""Corpus preparation and a training start on a generated text file (issue 16's targets).

    python scripts/bench_corpus.py --size-mb 1024 [--folder DIR] [--num-proc 2] [--vocab-size 8192]

Writes DIR/corpus.txt (--size-mb MB of lines of words, 1 in 50 words non-ASCII, the same bytes for the same
size), then times, each in a fresh process with an empty corpus cache (DIR/cache, its own HF datasets cache
DIR/hf): byte, char and BPE preparation (`minrnn prepare task=text task.data_files=DIR/corpus.txt ...`;
BPE trained with --vocab-size ids, --num-proc workers: encode_batch's threads for a text file), and a
training start that reuses the byte corpus (`minrnn train ... trainer.max_steps=1`, the default model; also
timed from inside: the CLI's imports, then the run's own work up to its first step).

Each row: seconds, CPU seconds (user + system, with the processes it waited for: on a busy machine, the work
that was this stage's own), MB/s of the file, the peak RSS of the process and the processes it waited for
(os.wait4's ru_maxrss) and the load average before and after; one JSON line each and a table at the end.
Run it on an idle machine (OMP_NUM_THREADS=1 is set for the children); --only byte char bpe picks stages.

Targets (issue 16): byte >= 100 MB/s, char >= 20 MB/s, BPE >= 3 MB/s with num_proc=2, peak RSS <= 1.5 GB
while preparing; training on the prepared corpus <= 1.2 GB peak RSS and the first step within 3 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORDS = 5000
# A training start timed from inside: the CLI's imports, then the run's own work up to the first step's log line
# (logging.Logger.callHandlers is wrapped, as Hydra replaces the root logger's handlers).
TIMED_TRAIN = """
import atexit, json, logging, sys, time
started = time.time()
from minrnn_cli.cli import main
imported = time.time()
first = []
call = logging.Logger.callHandlers
def watch(self, record):
    if not first and record.getMessage().startswith("step 1/"):
        first.append(time.time())
    return call(self, record)
logging.Logger.callHandlers = watch
atexit.register(lambda: print("TIMED " + json.dumps({"cli_imports_s": round(imported - started, 2),
      "run_to_first_step_s": round(first[0] - imported, 2) if first else None}), flush=True))
sys.argv = ["minrnn", *sys.argv[1:]]
main()
"""
LINE_WORDS = (4, 18)


def write_corpus(path: Path, size: int) -> None:
    """`size` bytes of lines of words (a fixed seed: the same file for the same size)."""
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 10))) for _ in range(WORDS)]
    vocab += [word + "é" for word in vocab[:WORDS // 50]] + ["naïve", "über", "日本語"]
    written = 0
    with path.open("w", encoding="utf-8") as handle:
        while written < size:
            lines = [" ".join(rng.choices(vocab, k=rng.randint(*LINE_WORDS))) + "\n" for _ in range(10_000)]
            block = "".join(lines).encode("utf-8")[: size - written]
            text = block.decode("utf-8", errors="ignore")  # a cut inside a character: drop its bytes
            handle.write(text)
            written += len(text.encode("utf-8"))


def measured(command: list[str], env: dict) -> dict:
    """Run `command`; its wall seconds and peak RSS (MB, with the processes it waited for)."""
    load = os.getloadavg()[0]
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}\n{output[-3000:]}")
    timed = [json.loads(line[6:]) for line in output.splitlines() if line.startswith("TIMED ")]
    return {**(timed[0] if timed else {}), "seconds": round(seconds, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, required=True, help="size of the generated text file (MB)")
    parser.add_argument("--folder", type=Path, default=Path("corpus-bench"), help="where the file and caches go")
    parser.add_argument("--num-proc", type=int, default=2, help="task.num_proc for BPE")
    parser.add_argument("--vocab-size", type=int, default=8192, help="task.vocab_size of the trained BPE")
    parser.add_argument("--bpe-train-bytes", default=None,
                        help="task.bpe_train_bytes (the BPE's training sample; default: the task's, 100 MB; null: all)")
    parser.add_argument("--only", nargs="+", choices=["byte", "char", "bpe"], default=["byte", "char", "bpe"],
                        help="the tokenizers to time (byte includes the training start)")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    corpus = args.folder / "corpus.txt"
    size = int(args.size_mb * 1e6)
    if not corpus.is_file() or corpus.stat().st_size != size:
        print(f"writing {corpus} ({size / 1e6:.0f} MB)", flush=True)
        write_corpus(corpus, size)
    size = corpus.stat().st_size
    minrnn = [sys.executable, "-m", "minrnn_cli"]
    base = [f"task.data_files={corpus.resolve()}"]
    rows = []
    # the compiled CPU kernels built once, outside the timings, as any machine has them after its first run
    subprocess.run([sys.executable, "-c", "from minrnn_cli.scans.fused import cpu; cpu.available()"], check=True,
                   env={**os.environ, "MINRNN_CACHE_DIR": str(args.folder / "cache")})
    for name, overrides in (("byte", ["task.tokenizer=byte"]), ("char", ["task.tokenizer=char"]),
                            ("bpe", ["task.tokenizer=bpe", f"task.vocab_size={args.vocab_size}",
                                     f"task.num_proc={args.num_proc}"] +
                             ([f"task.bpe_train_bytes={args.bpe_train_bytes}"] if args.bpe_train_bytes else []))):
        if name not in args.only:
            continue
        # nothing prepared, nothing of HF datasets' text builder cached; the compiled CPU kernels (cache/kernels)
        # are kept, as on any machine after its first run: the training start times the corpus, not a compile
        for cache in ("cache/corpora", "hf"):
            shutil.rmtree(args.folder / cache, ignore_errors=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MINRNN_CACHE_DIR": str(args.folder / "cache"),
               "HF_DATASETS_CACHE": str(args.folder / "hf"), "HF_HUB_OFFLINE": "1"}
        row = {"stage": f"prepare {name}", **measured([*minrnn, "prepare", "task=text", *base, *overrides], env)}
        row["mb_per_s"] = round(size / 1e6 / row["seconds"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if name == "byte":  # a training start that reuses this corpus
            train = [sys.executable, "-c", TIMED_TRAIN, "train", "task=text", *base, *overrides,
                     "trainer.max_steps=1", "task.eval_batches=1",
                     "task.sample_chars=0", "logger=none", "trainer.device=cpu",
                     f"hydra.run.dir={args.folder / 'run'}"]
            shutil.rmtree(args.folder / "run", ignore_errors=True)
            start = {"stage": "train 1 step (cache reused)", **measured(train, env)}
            rows.append(start)
            print(json.dumps(start), flush=True)
    print(f"\n{size / 1e6:.0f} MB file, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    print(f"{'stage':<30} {'seconds':>9} {'CPU s':>8} {'MB/s':>8} {'peak RSS MB':>12} {'load (1 min avg)':>17}")
    for row in rows:
        print(f"{row['stage']:<30} {row['seconds']:>9.2f} {row['cpu_s']:>8.2f} "
              f"{row.get('mb_per_s', float('nan')):>8.2f} "
              f"{row['peak_rss_mb']:>12.1f} {row['load_before']:>8.2f}->{row['load_after']:.2f}")
        if "run_to_first_step_s" in row:
            print(f"  of which the CLI's imports {row['cli_imports_s']:.2f} s, then the run's own work to its first "
                  f"step {row['run_to_first_step_s']} s")


if __name__ == "__main__":
    main()
