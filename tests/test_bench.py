"""`minrnn bench`'s harness on a tiny grid: files, columns, budget marks, bad input. No timing asserted."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch
from rich.console import Console
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from minrnn_cli.benchmarking import BenchConfig, run_bench
from minrnn_cli.benchmarking.__main__ import main, parse_args, parse_value
from minrnn_cli.benchmarking.budget import Budget, headline_models
from minrnn_cli.benchmarking.memory import peak_bytes
from minrnn_cli.benchmarking.report import COLUMNS
from minrnn_cli.benchmarking.timing import time_interleaved
from minrnn_cli.benchmarking.workload import Floor, MixerStack, Workload, floor_flops, make_inputs, projection_weights

TINY = dict(models=["mingru", "gru", "gru_loop"], seq_len=[8, 16], batch_size=2, d_model=8, warmup=0,
            repeats=1, min_repeats=1, decode_tokens=2)


def _quiet() -> Console:
    return Console(file=open("/dev/null", "w"), width=200)  # noqa: SIM115


# Runs the bench as `python -m minrnn_cli.benchmarking` would, with hydra, omegaconf, wandb, datasets and
# typer made unimportable (None in sys.modules), as on a machine that has torch, rich and matplotlib only.
TORCH_ONLY_RUN = """
import runpy, sys
for name in ("hydra", "omegaconf", "wandb", "datasets", "typer"):
    sys.modules[name] = None
sys.argv = ["minrnn_cli.benchmarking", *sys.argv[1:]]
runpy.run_module("minrnn_cli.benchmarking", run_name="__main__")
"""


def _arg(key: str, value: object) -> str:
    text = "[" + ",".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
    return f"{key}={text}"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    args = [_arg(key, value) for key, value in TINY.items()] + [f"out={out}", "threads=1"]
    done = subprocess.run([sys.executable, "-c", TORCH_ONLY_RUN, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, out


def test_tiny_grid_writes_csv_json_markdown_and_png(tiny_run):
    _, out = tiny_run
    with (out / "bench.csv").open() as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == COLUMNS
    assert [(r["model"], r["seq_len"]) for r in rows] == [
        (model, str(length)) for length in (8, 16) for model in ("mingru", "gru", "gru_loop")
    ]
    assert all(r["train_step_status"] == "ok" and float(r["train_step_ms"]) > 0 for r in rows)
    assert all(float(r["peak_memory_mib"]) > 0 for r in rows)
    assert all(r["floor_status"] == "ok" and float(r["floor_ms"]) > 0 and float(r["floor_gflop"]) > 0 for r in rows)
    assert all(float(r["x_floor"]) == pytest.approx(float(r["train_step_ms"]) / float(r["floor_ms"])) for r in rows)
    mingru = rows[0]
    for column in ("train_step_speedup_vs_fused", "train_step_speedup_vs_loop", "memory_vs_fused",
                   "memory_vs_loop", "prefill_speedup_vs_loop", "decode_token_speedup_vs_fused"):
        assert float(mingru[column]) > 0
    assert rows[1]["train_step_speedup_vs_fused"] == ""  # baselines get no speedup of their own

    assert all(r["device"] == "cpu" and r["threads"] == "1" and r["torch"] == torch.__version__ and r["hardware"]
               and r["dtype"] == "float32" and r["batch_size"] == "2" and r["d_model"] == "8" for r in rows)

    document = json.loads((out / "bench.json").read_text())
    machine = document["meta"]["machine"]
    for key in ("cpu", "device", "torch", "torch_threads"):
        assert machine[key]
    assert machine["torch_threads"] == 1
    assert document["meta"]["process_settings"]["torch_threads"] == 1
    assert document["rows"][0]["x_floor"] > 0
    assert document["meta"]["config"]["dtype"] == "float32"
    assert "profiler" in document["meta"]["memory_method"]
    assert len(document["rows"]) == 6
    assert (out / "bench.png").read_bytes()[:4] == b"\x89PNG"
    assert "| T | model | step ms | min-max | floor ms | x floor |" in (out / "bench.md").read_text()


def test_budget_skips_and_marks_cells(tmp_path):
    config = BenchConfig.from_mapping({**TINY, "models": ["gru_loop"], "seq_len": [8], "budget_s": 1e-9,
                                       "plot": False})
    result = run_bench(config, tmp_path, command="test", console=_quiet())
    row = result.rows()[0]
    assert row["train_step_status"] == row["prefill_status"] == row["decode_token_status"] == "skipped"
    assert row["train_step_ms"] is None and row["peak_memory_mib"] is None
    assert "budget" in row["notes"] and "memory: not measured" in row["notes"]


def test_budget_extrapolates_from_shorter_lengths_and_cuts_repeats():
    budget = Budget(budget_s=10.0, warmup=1, repeats=10, min_repeats=2)
    assert budget.before("gru_loop", "train_step", 64) is None  # nothing known yet: probe it
    budget.record("gru_loop", "train_step", 64, 1.0)
    assert budget.before("gru_loop", "train_step", 128) is None  # ~2 s x 4 calls fits in 10 s
    skip = budget.before("gru_loop", "train_step", 256)  # ~4 s x 4 calls does not
    assert skip is not None and skip.repeats == 0 and "budget" in skip.note
    plan = budget.after_probe(1.5)  # 8.5 s left: 5 calls, one of them warm-up
    assert plan.repeats == 4 and "cut" in plan.note
    assert budget.after_probe(4.0).repeats == 0
    assert budget.fits_once("gru_loop", "train_step", 512)  # ~8 s: one call (a memory measurement) fits
    assert not budget.fits_once("gru_loop", "train_step", 1024)


def test_memory_limit_skips_cells_predicted_over_it():
    budget = Budget(budget_s=10.0, warmup=0, repeats=1, min_repeats=1, max_memory_bytes=3 * 2**30)
    assert budget.memory_skip("mamba", 256) is None  # nothing known yet
    budget.record("mamba", "peak_bytes", 256, 1 * 2**30)
    assert budget.memory_skip("mamba", 512) is None  # ~2 GiB
    note = budget.memory_skip("mamba", 1024)  # ~4 GiB
    assert note is not None and "memory limit" in note


def test_cpu_peak_memory_counts_the_largest_live_set():
    def fn():
        big = torch.empty(1_000_000)  # 4 MB
        del big
        small = torch.empty(250_000)  # 1 MB
        return small.sum()

    peak = peak_bytes(fn, torch.device("cpu"), resident_bytes=123)
    assert 4_000_123 <= peak < 4_000_123 + 500_000


def test_interleaved_timing_reports_median_min_max_and_keeps_errors_apart():
    order = []

    def fails():
        raise RuntimeError("out of memory")

    calls = {"a": lambda: order.append("a"), "b": lambda: order.append("b"), "bad": fails}
    timed = time_interleaved(calls, {"a": 3, "b": 2, "bad": 3}, torch.device("cpu"), warmup=1)
    assert order == ["a", "b", "a", "b", "a", "b", "a"]  # warm-up a, b; then rounds a, b | a, b | a
    assert timed["a"].repeats == 3 and timed["b"].repeats == 2
    assert 0 < timed["a"].min_s <= timed["a"].median_s <= timed["a"].max_s
    assert isinstance(timed["bad"], RuntimeError)


def test_key_value_parser():
    assert parse_value("[64, 128]") == [64, 128]
    assert parse_value("[mingru,gru]") == ["mingru", "gru"]
    assert parse_value("true") is True and parse_value("null") is None and parse_value("0.5") == 0.5
    settings, out = parse_args(["seq_len=512", "models=[mingru]", "out=/tmp/x"])
    assert settings == {"seq_len": 512, "models": ["mingru"]} and str(out) == "/tmp/x"
    assert BenchConfig.from_mapping(settings).seq_len == [512]


@pytest.mark.parametrize(
    ("arg", "named"),
    [
        ("models=[mingru,nope]", "'nope'"),
        ("seq_len=0", "seq_len=0"),
        ("dtype=float8", "'float8'"),
        ("device=tpu", "'tpu'"),
        ("batchsize=2", "'batchsize'"),
        ("seq_len=[1,2", "unbalanced"),
        ("repeats=many", "'many'"),
        ("512", "key=value"),
    ],
)
def test_bad_input_is_one_line_naming_the_value(arg, named, capsys):
    with pytest.raises(SystemExit) as raised:
        main([arg])
    message = str(raised.value.code)
    assert named in message and "\n" not in message
    assert message.startswith("minrnn bench: ")


def test_unknown_choice_lists_the_allowed_values():
    with pytest.raises(ValueError, match="allowed: .*mingru.*gru_loop"):
        BenchConfig.from_mapping({"models": ["minrnn"]})
    with pytest.raises(ValueError, match="allowed: float32, bfloat16"):
        BenchConfig.from_mapping({"dtype": "fp8"})


def test_the_bench_config_hydra_composes_is_the_dataclass():
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from minrnn_cli.hydra_app.launch import register_configs
    from minrnn_cli.paths import config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose(config_name="bench", overrides=["seq_len=[8]"])
    settings = OmegaConf.to_container(cfg)
    assert settings.pop("outputs_dir") == "${oc.env:MINRNN_OUTPUTS,outputs}"  # where it writes, as every command
    assert BenchConfig.from_mapping(settings) == BenchConfig(seq_len=[8])
    assert set(settings) == set(asdict(BenchConfig()))


def test_bench_job_rejects_bad_settings_in_one_line(capsys):
    from omegaconf import OmegaConf

    from minrnn_cli.hydra_app.jobs import bench_job

    with pytest.raises(SystemExit) as raised:
        bench_job(OmegaConf.create({"seq_len": [512], "models": ["lstm", "transformr"]}))
    assert raised.value.code != 0
    err = capsys.readouterr().err.strip()
    assert "'transformr'" in err and "allowed:" in err and len(err.splitlines()) == 1


def test_the_torch_only_run_prints_the_tables(tiny_run):
    stdout, _ = tiny_run
    assert "Training step (forward + loss + backward)" in stdout and "Inference: parallel prefill" in stdout
    assert "floor ms" in stdout and "x floor" in stdout
    settings_line = "process settings: torch_threads=1, allocator="
    assert settings_line in stdout and stdout.index(settings_line) < stdout.index(" T=8 ")  # before any cell
    assert "cpu_cell_kernels=" in stdout and "(the same for every model in this run)" in stdout


class _Matmuls(TorchDispatchMode):
    """Records the operand shapes of every matrix product below autograd (a bias operand left out)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in ("mm", "addmm", "bmm"):
            operands = [a for a in args if torch.is_tensor(a)][-2:]
            self.shapes.append(tuple(tuple(a.shape) for a in operands))
        return func(*args, **(kwargs or {}))


def test_the_floor_of_a_linear_only_model_is_those_linears_forward_and_backward():
    """Shape-level: the floor runs the very matmuls a model of nn.Linear layers runs in a training step (its
    input needing a gradient, as inside a network), and nothing else."""
    model = nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4, bias=False), nn.Linear(4, 8))
    x = torch.randn(3, 5, 8, requires_grad=True)
    with _Matmuls() as layers:
        y = model(x)
        y.backward(torch.randn_like(y))
    floor = Floor(model, tokens=3 * 5)
    with _Matmuls() as floors:
        floor()

    def products(shapes):  # (m x k) @ (k x n) as (k, m, n) up to transposition: C^T = B^T A^T is the same work
        return sorted((a[1], *sorted((a[0], b[1]))) for a, b in shapes)

    assert len(floors.shapes) == 9 and products(floors.shapes) == products(layers.shapes)
    assert floor_flops(model, 15) == sum(2 * a[0] * a[1] * b[1] for a, b in floors.shapes)


def test_the_floor_takes_every_weight_matrix_and_nothing_else():
    def names(model):
        return [name.split(".", 2)[-1] for name, _ in projection_weights(MixerStack(model, 8, 1, "auto"))]

    assert names("mingru") == ["to_hidden.weight"]
    assert names("gru") == ["rnn.weight_ih_l0", "rnn.weight_hh_l0"]
    assert names("lstm_loop") == ["weight_ih_l0", "weight_hh_l0"]
    assert names("transformer") == ["qkv.weight", "out.weight"]
    # Mamba: its four projections; not A_log (the state matrix), D, the conv kernel or the biases
    assert names("mamba") == ["block.in_proj.weight", "block.x_proj.weight", "block.dt_proj.weight",
                              "block.out_proj.weight"]


def test_the_headline_pair_is_measured_with_min_repeats_whatever_the_budget(tmp_path):
    """On a budget nothing fits, minGRU and the loop GRU are still measured (min_repeats), their floors too;
    the fused GRU is skipped, and its note names the key that raises the budget."""
    config = BenchConfig.from_mapping({**TINY, "seq_len": [8, 16], "budget_s": 1e-9, "repeats": 4,
                                       "min_repeats": 2, "plot": False})
    result = run_bench(config, tmp_path, command="test", console=_quiet())
    for row in result.rows():
        if row["model"] in ("mingru", "gru_loop"):
            for kind in ("train_step", "prefill", "decode_token", "floor"):
                assert row[f"{kind}_status"] == "ok" and row[f"{kind}_repeats"] == 2, (row["model"], kind)
            assert "measured with min_repeats=2" in row["notes"]
            assert row["peak_memory_mib"] > 0
        else:
            assert row["train_step_status"] == row["prefill_status"] == row["decode_token_status"] == "skipped"
            assert row["notes"].count("budget_s=1e-09") == 3 and "raise budget_s" in row["notes"]
    assert all(row["train_step_speedup_vs_loop"] > 0 for row in result.rows() if row["model"] == "mingru")


def test_the_headline_pairs_are_those_with_both_sides_in_the_grid():
    assert headline_models(["mingru", "gru", "gru_loop", "minlstm"]) == {"mingru", "gru_loop"}
    assert headline_models(["mingru", "minlstm", "gru_loop", "lstm_loop"]) == {"mingru", "gru_loop", "minlstm",
                                                                              "lstm_loop"}
    assert headline_models(["gru_loop"]) == set()
    budget = Budget(budget_s=10.0, warmup=0, repeats=1, min_repeats=1, max_memory_bytes=2**30,
                    protected=frozenset({"mingru"}))
    budget.record("mingru", "peak_bytes", 8, 2**30)
    note = budget.memory_skip("mingru", 16)  # the memory limit still applies to the pair, and says so
    assert note is not None and "max_memory_gib" in note and "headline pair too" in note


def test_a_first_length_too_long_for_the_budget_is_predicted_and_skipped_not_run(tmp_path):
    """No shorter length to extrapolate from: a 64-token calibration call predicts T=200000 and skips it."""
    config = BenchConfig.from_mapping({**TINY, "models": ["gru_loop"], "seq_len": [200_000], "budget_s": 0.5,
                                       "batch_size": 1, "d_model": 4, "memory": False, "plot": False})
    result = run_bench(config, tmp_path, command="test", console=_quiet())
    row = result.rows()[0]
    assert row["train_step_status"] == row["prefill_status"] == "skipped"
    assert "predicted" in row["notes"]
    assert row["decode_token_status"] == "ok" and "zero state" in row["notes"]  # per token, T does not matter


def test_decoding_starts_from_the_untimed_prefill_state_and_runs_only_steps():
    x, target = make_inputs(2, 6, 4, torch.float32, torch.device("cpu"), seed=0)
    workload = Workload("mingru", x, target, depth=2, scan_backend="auto", optimizer_step=False, decode_tokens=3)
    workload.prepare_decode(from_prefill=True)
    with torch.no_grad():
        _, expected = workload.model(workload.x)
    assert all(torch.allclose(a, b) for a, b in zip(workload._decode_start, expected, strict=True))

    def no_parallel_call(*args, **kwargs):
        raise AssertionError("decode ran the parallel forward")

    workload.model.forward = no_parallel_call
    workload.decode()


def test_multirun_sweeps_lengths_through_hydra(tmp_path):
    args = ["-m", "seq_len=4,8", "models=[mingru]", "batch_size=1", "d_model=4", "warmup=0", "repeats=1",
            "min_repeats=1", "inference=false", "memory=false", "plot=false", f"hydra.sweep.dir={tmp_path}"]
    done = subprocess.run([sys.executable, "-m", "minrnn_cli", "bench", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    lengths = [json.loads((tmp_path / str(job) / "bench.json").read_text())["rows"][0]["seq_len"] for job in (0, 1)]
    assert lengths == [4, 8]
