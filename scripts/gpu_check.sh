#!/usr/bin/env bash
# The one-shot GPU check: on one H100/H200, in under 8 minutes, everything that needs a GPU, into one folder.
#
#   scripts/gpu_check.sh [--dry-run] [--out DIR] [--wheels DIR]
#
# Steps, each under its own `timeout` (then 3 s to die), each writing DIR/<step>.log:
#
#   step               timeout  what
#   env                   30 s  probe: python, torch, CUDA and GPUs, triton, pytest, the modules each step needs, mamba-ssm
#   deps                  25 s  pip install --no-index --find-links WHEELS of the missing modules (only if some are)
#   triton_tests          90 s  pytest tests/test_triton_scan.py tests/test_triton_compile.py (compiled on the GPU)
#   triton_bench          35 s  scripts/bench_triton_scan.py: kernels vs copy bandwidth, layers vs cuDNN, TF32 off
#   triton_bench_tf32     25 s  the same with --tf32 (Triton's cache is warm by then)
#   bench                120 s  python -m minrnn_cli.benchmarking, the paper's grid: T 64..4096, B 64, D 128, 7 models,
#                               10 repeats, budget_s=2 (minGRU/minLSTM and their loop baselines are never skipped)
#   train                100 s  python -m minrnn_cli train trainer=gpu (bf16 + compile), 300 steps of Shakespeare
#   ddp                   25 s  torchrun, 2 processes, 2 steps (only with 2 or more GPUs)
#   total                450 s  + 8 x 3 s grace = 474 s at the very worst, under the 480 s budget
#
# Then DIR/summary.md and DIR/summary.json: each step, ok / failed / skipped (a skip is listed, not a
# failure), its seconds, and the key figures that are cheap to read off. Exit: 0 when nothing failed, 1 when
# a step failed, 2 on bad arguments, 3 without a CUDA GPU (nothing run). `--dry-run` (and any run on a
# machine without CUDA) prints the plan: each step, its command, its timeout, and whether it would run.
#
# The GPU machine has torch, triton, pytest, rich, matplotlib and typer, but not hydra-core, omegaconf,
# datasets or mambapy, and no network. The bench and the Triton steps need torch only; `train` and `ddp`
# need hydra, omegaconf and datasets (logger=none: wandb is never imported); `mamba` in the bench needs
# mambapy (mamba-ssm's kernel is used when it is there; it is not built here). Bring them as wheels, built
# on a machine with network into a folder that travels with the working tree:
#
#   echo /.whl/ >> .git/info/exclude
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl hydra-core==1.3.8 omegaconf==2.3.1 datasets==5.2.0 dill==0.4.1 \
#     multiprocess==0.70.19 mambapy==1.2.0
#   python -m pip wheel --no-deps -w .whl antlr4-python3-runtime==4.9.3   # hydra's parser: an sdist, pure Python
#   scripts/gpu_check.sh --wheels .whl          # or MINRNN_WHEELS=.whl scripts/gpu_check.sh
#
# (1.5 MB, all pure Python; the machine has their other needs. If deps.log names one more, download it too.)
#
# PYTHON picks the interpreter (default python3). Paths (--out, --wheels, the checkout) must not hold spaces.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
DRY_RUN=0
OUT=""
WHEELS=${MINRNN_WHEELS:-}

usage() { sed -n '2,3p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --out) OUT=${2:?--out needs a folder}; shift ;;
        --wheels) WHEELS=${2:?--wheels needs a folder}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
    shift
done
OUT=${OUT:-${MINRNN_OUTPUTS:-outputs}/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}  # minrnn's outputs folder
case $OUT in /*) ;; *) OUT=$PWD/$OUT ;; esac
case $WHEELS in /*|"") ;; *) WHEELS=$PWD/$WHEELS ;; esac
cd "$ROOT" || exit 2
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    WANDB_MODE=disabled

SEQ_LENS="64,128,256,512,1024,2048,4096"
TRAIN_MODULES=(hydra omegaconf datasets typer)
declare -A DIST=([hydra]=hydra-core [omegaconf]=omegaconf [datasets]=datasets [typer]=typer [mambapy]=mambapy)
STEPS="env deps triton_tests triton_bench triton_bench_tf32 bench train ddp"
declare -A LIMIT=([env]=30 [deps]=25 [triton_tests]=90 [triton_bench]=35 [triton_bench_tf32]=25 [bench]=120
                  [train]=100 [ddp]=25)

# --- env: one probe, KEY=VALUE lines -------------------------------------------------------------------------
probe() {
    timeout -k 3 "${LIMIT[env]}" "$PY" - "${TRAIN_MODULES[*]} mambapy" <<'EOF'
import importlib, importlib.util, platform, sys
print(f"python={platform.python_version()} ({sys.executable})")
try:
    import torch
    print(f"torch={torch.__version__}")
    cuda = torch.cuda.is_available()
    print(f"cuda={int(cuda)}")
    print(f"gpus={torch.cuda.device_count() if cuda else 0}")
    print(f"gpu_name={torch.cuda.get_device_name(0) if cuda else '-'}")
except Exception as error:  # no torch, or a broken one
    print(f"torch=missing ({type(error).__name__})")
    print("cuda=0")
    print("gpus=0")
for module in ("pytest", "xdist"):
    print(f"{module}={'present' if importlib.util.find_spec(module) else 'missing'}")
for module, name in (("triton", "triton"), ("mamba_ssm.ops.selective_scan_interface", "mamba_ssm")):
    try:
        imported = importlib.import_module(module)
        print(f"{name}=present {getattr(imported, '__version__', '')}".rstrip())
    except ImportError:
        print(f"{name}=missing")
    except Exception as error:  # there, but its import breaks (a CUDA extension built for another torch)
        print(f"{name}=broken ({type(error).__name__})")
missing = []
for module in sys.argv[1].split():
    try:
        importlib.import_module(module)
    except Exception:
        missing.append(module)
print("missing=" + " ".join(missing))
EOF
}

declare -A ENV=([cuda]=0 [gpus]=0 [missing]="" [triton]=missing [pytest]=missing [xdist]=missing [mamba_ssm]=missing)
read_probe() {  # fills ENV from the probe's output, the env log
    local key value
    while IFS='=' read -r key value; do
        [ -n "$key" ] && ENV[$key]=$value
    done < <(grep -E '^[a-z_]+=' "$1")
}

missing_of() {  # the missing modules among "$@"
    local module found=""
    for module in "$@"; do
        case " ${ENV[missing]} " in *" $module "*) found+="$module " ;; esac
    done
    echo "${found% }"
}

# --- the steps: their commands and, given the probe, why one would not run -------------------------------------
set_command() {  # CMD=(the step's command)
    local models=mingru,minlstm,gru,gru_loop,lstm,lstm_loop,mamba workers=() dists=()
    [ -n "$(missing_of mambapy)" ] && models=${models%,mamba}
    [ "${ENV[xdist]}" = present ] && workers=(-n 4)
    read -ra dists <<<"$(dists_missing)"
    case $1 in
        env) CMD=("$PY" - "(the probe above)") ;;
        deps) CMD=("$PY" -m pip install --no-index --find-links "${WHEELS:-WHEELS}" "${dists[@]}") ;;
        triton_tests) CMD=("$PY" -m pytest -q -p no:cacheprovider "${workers[@]}" tests/test_triton_scan.py
                           tests/test_triton_compile.py) ;;
        triton_bench) CMD=("$PY" scripts/bench_triton_scan.py) ;;
        triton_bench_tf32) CMD=("$PY" scripts/bench_triton_scan.py --tf32) ;;
        bench) CMD=("$PY" -m minrnn_cli.benchmarking "models=[$models]" "seq_len=[$SEQ_LENS]" batch_size=64
                    d_model=128 device=cuda repeats=10 warmup=2 min_repeats=3 budget_s=2 decode_tokens=16
                    "out=$OUT/bench") ;;
        train) CMD=("$PY" -m minrnn_cli train trainer=gpu trainer.max_steps=300 trainer.eval_every=300
                    trainer.log_every=50 logger=none "hydra.run.dir=$OUT/train_run") ;;
        ddp) CMD=("$PY" -m torch.distributed.run --standalone --nproc_per_node=2 -m minrnn_cli train trainer=gpu
                  trainer.compile=false trainer.max_steps=2 trainer.eval_every=2 trainer.log_every=1 logger=none
                  "hydra.run.dir=$OUT/ddp_run") ;;
    esac
}

command_of() {  # the step's command as one line
    set_command "$1"
    echo "${CMD[*]}"
}

dists_missing() {
    local module modules names=""
    read -ra modules <<<"$(missing_of "${TRAIN_MODULES[@]}" mambapy)"
    for module in "${modules[@]}"; do names+="${DIST[$module]} "; done
    echo "${names% }"
}

skip_reason() {  # empty when the step would run
    local missing
    case $1 in
        deps)
            if [ -z "$(dists_missing)" ]; then echo "nothing missing"
            elif [ -z "$WHEELS" ]; then echo "no wheel folder (--wheels DIR or MINRNN_WHEELS) for: $(dists_missing)"
            elif [ ! -d "$WHEELS" ]; then echo "wheel folder $WHEELS does not exist"
            fi ;;
        triton_tests)
            missing=$(for m in triton pytest; do [[ ${ENV[$m]} == present* ]] || printf '%s ' "$m"; done)
            [ -n "$missing" ] && echo "missing ${missing% }" ;;
        triton_bench|triton_bench_tf32)
            [[ ${ENV[triton]} == present* ]] || echo "missing triton" ;;
        train|ddp)
            missing=$(missing_of "${TRAIN_MODULES[@]}")
            if [ -n "$missing" ]; then echo "missing $missing"
            elif [ "$1" = ddp ] && [ "${ENV[gpus]}" -lt 2 ]; then echo "needs 2 GPUs, found ${ENV[gpus]}"
            fi ;;
    esac
}

print_plan() {
    local step reason total=0
    echo "gpu_check plan (folder $OUT; timeouts add up to under 8 minutes):"
    for step in $STEPS; do
        total=$((total + LIMIT[$step]))
        reason=$(skip_reason "$step")
        printf '  %-18s %4s s  %s\n' "$step" "${LIMIT[$step]}" "$(command_of "$step")"
        if [ -n "$reason" ]; then
            printf '  %-18s         would skip: %s\n' "" "$reason"
        fi
    done
    printf '  %-18s %4s s  (+ 3 s for each step to stop after its timeout)\n' "total" "$total"
    [ -z "$(missing_of mambapy)" ] || echo "  bench leaves mamba out: mambapy is missing"
    echo "  mamba-ssm: ${ENV[mamba_ssm]} (never built here; without it Mamba runs mambapy's PyTorch scan)"
}

# --- running and recording ----------------------------------------------------------------------------------
TSV=""
record() {  # step status seconds note
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${LIMIT[$1]}" "$4" "$(command_of "$1")" >>"$TSV"
    printf '%-18s %-8s %6s s  %s\n' "$1" "$2" "$3" "$4"
}

run_step() {  # step: runs its command under its timeout into <step>.log, unless it has a skip reason
    local step=$1 reason start rc seconds note=""
    reason=$(skip_reason "$step")
    if [ -n "$reason" ]; then
        echo "skipped: $reason" >"$OUT/$step.log"
        record "$step" skipped 0 "$reason"
        return
    fi
    set_command "$step"
    start=$(date +%s%N)
    timeout -k 3 "${LIMIT[$step]}" "${CMD[@]}" >"$OUT/$step.log" 2>&1
    rc=$?
    seconds=$(awk -v ns=$(( $(date +%s%N) - start )) 'BEGIN { printf "%.1f", ns / 1e9 }')
    if [ "$step" = bench ] && [ -n "$(missing_of mambapy)" ]; then
        note="mamba left out: mambapy is missing; "
    fi
    if [ "$rc" -eq 0 ]; then
        record "$step" ok "$seconds" "${note%; }"
    else
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            note+="timed out after ${LIMIT[$step]} s"
        else
            note+="exit $rc"
        fi
        record "$step" failed "$seconds" "$note (see $step.log)"
    fi
}

write_summary() {
    "$PY" - "$OUT" <<'EOF'
import json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
env = dict(line.split("=", 1) for line in (out / "env.log").read_text().splitlines() if re.match(r"^[a-z_]+=", line))


def figures(step: str) -> dict:
    """Key figures, where cheap to read; {} when not there."""
    log = (out / f"{step}.log").read_text(errors="replace") if (out / f"{step}.log").exists() else ""
    found = {}
    if step == "triton_tests":
        lines = [line for line in log.splitlines() if re.search(r"\d+ (passed|failed)", line)]
        found = {"pytest": lines[-1].strip("= ")} if lines else {}
    elif step.startswith("triton_bench"):
        for line in log.splitlines():
            if line.startswith("measured copy bandwidth"):
                found["copy bandwidth"] = line.rsplit(":", 1)[-1].strip()
            elif line.startswith("| minGRU (triton) |"):
                ms, vs_gru, vs_loop = [cell.strip() for cell in line.strip("| ").split("|")][1:4]
                found["minGRU (triton) layer"] = f"{ms} ms, {vs_gru} vs nn.GRU, {vs_loop} vs the loop"
    elif step == "bench" and (out / "bench" / "bench.json").exists():
        found["bench.json"] = str(out / "bench" / "bench.json")
        for row in json.loads((out / "bench" / "bench.json").read_text())["rows"]:
            if row["model"] in ("mingru", "minlstm") and row["seq_len"] in (512, 4096):
                cells = [f"{label} {row[key]:.3g}" for label, key in (
                    ("step ms", "train_step_ms"), ("x floor", "x_floor"), ("x fused", "train_step_speedup_vs_fused"),
                    ("x loop", "train_step_speedup_vs_loop")) if row[key] is not None]
                found[f"{row['model']} T={row['seq_len']}"] = ", ".join(cells)
    elif step in ("train", "ddp") and (out / f"{step}_run" / "results.json").exists():
        results = json.loads((out / f"{step}_run" / "results.json").read_text())
        found = {key: results.get(key) for key in ("steps", "val_loss", "wall_time_s", "world_size")}
    return found


steps = []
for line in (out / "steps.tsv").read_text().splitlines():
    name, status, seconds, timeout, note, command = line.split("\t")
    steps.append({"step": name, "status": status, "seconds": float(seconds), "timeout_s": int(timeout),
                  "note": note, "command": command, "log": f"{name}.log", "figures": figures(name)})
summary = {"env": env, "failed": [s["step"] for s in steps if s["status"] == "failed"],
           "skipped": [s["step"] for s in steps if s["status"] == "skipped"],
           "seconds": round(sum(s["seconds"] for s in steps), 1), "steps": steps}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
lines = [f"# GPU check: {env.get('gpu_name', '?')} x {env.get('gpus', '?')}, torch {env.get('torch', '?')}, "
         f"triton {env.get('triton', '?')}, mamba-ssm {env.get('mamba_ssm', '?')}", "",
         f"{len(summary['failed'])} failed, {len(summary['skipped'])} skipped, {summary['seconds']} s in all.", "",
         "| step | status | seconds | timeout | note | key figures |", "|---|---|---|---|---|---|"]
for s in steps:
    key = "; ".join(f"{k}: {v}" for k, v in s["figures"].items()).replace("|", "/")
    lines.append(f"| {s['step']} | {s['status']} | {s['seconds']} | {s['timeout_s']} | {s['note']} | {key} |")
(out / "summary.md").write_text("\n".join(lines) + "\n")
EOF
}

# --- main ---------------------------------------------------------------------------------------------------
PROBE_LOG=$(mktemp)
trap 'rm -f "$PROBE_LOG"' EXIT
PROBE_START=$SECONDS
probe >"$PROBE_LOG" 2>&1
PROBE_RC=$?
PROBE_SECONDS=$((SECONDS - PROBE_START))
read_probe "$PROBE_LOG"
sed 's/^/  /' "$PROBE_LOG"
print_plan

if [ "${ENV[cuda]}" != 1 ]; then
    if [ "$PROBE_RC" -eq 124 ] || [ "$PROBE_RC" -eq 137 ]; then why="the probe timed out after ${LIMIT[env]} s"
    elif [ -z "${ENV[python]:-}" ]; then why="'$PY' did not run (set PYTHON)"
    elif [[ ${ENV[torch]:-missing} == missing* ]]; then why="torch is missing"
    else why="torch.cuda.is_available() is false on this machine"
    fi
    echo "gpu_check: stops here: no CUDA GPU ($why); nothing was run"
    [ "$DRY_RUN" = 1 ] && exit 0
    exit 3
fi
if [ "$DRY_RUN" = 1 ]; then
    echo "gpu_check: dry run, nothing was run"
    exit 0
fi

mkdir -p "$OUT"
TSV=$OUT/steps.tsv
: >"$TSV"
cp "$PROBE_LOG" "$OUT/env.log"
record env ok "$PROBE_SECONDS" "${ENV[gpu_name]:-?} x ${ENV[gpus]}, mamba-ssm ${ENV[mamba_ssm]}"
run_step deps
if [ "$(skip_reason deps)" = "" ]; then  # installed (or tried): probe again for what is still missing
    probe >"$OUT/env.log" 2>&1
    read_probe "$OUT/env.log"
fi
for step in triton_tests triton_bench triton_bench_tf32 bench train ddp; do
    run_step "$step"
done
write_summary || echo "gpu_check: could not write the summary" >&2
echo "summary: $OUT/summary.md"
if grep -q $'\tfailed\t' "$TSV"; then
    exit 1
fi
exit 0
