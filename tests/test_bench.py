"""The benchmark harness: statistics, pooling, verdicts, a route cut short by its budget
(structure and sanity, never a speed threshold), and the committed GPU table."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from compile_ckpt.workshop import bench
from conftest import ROOT


def test_speedup_interval_is_a_median_of_paired_ratios_with_a_bootstrap_interval():
    eager = [2.0, 2.2, 1.8, 2.0, 2.1, 1.9, 2.0]
    s, lo, hi = bench.speedup_interval(eager, [1.0] * 7)
    assert s == pytest.approx(2.0) and lo <= s <= hi and lo >= 1.8 and hi <= 2.2
    assert bench.speedup_interval(eager, [1.0] * 7) == (s, lo, hi)  # deterministic
    noisy = bench.speedup_interval([1.0, 1.2, 0.8, 1.1, 0.9], [1.0] * 5)
    assert noisy[1] <= 1.0 <= noisy[2]


def _rows(ratio_per_route: dict[str, list[float]]) -> list[dict]:
    rows = []
    for route, ratios in ratio_per_route.items():
        eager = [0.01] * len(ratios)
        for mode, times in (("eager", eager), ("default", [0.01 / r for r in ratios])):
            rows.append(
                {
                    "workload": "gpt",
                    "profile": "t",
                    "route": route,
                    "variant": "manual",
                    "dtype": "float32",
                    "mode": mode,
                    "first_step_s": 0.02 if mode == "eager" else {"cold": 5.0, "warm": 1.0}[route],
                    "median_ms": 1e3 * sorted(times)[len(times) // 2],
                    "achieved_tflops": 0.01,
                    "tokens_per_s": 1.0,
                    "eager_times_s": eager,
                    "times_s": times,
                }
            )
    return rows


def test_pool_compares_the_same_code_once_and_each_route_its_first_step():
    table = bench.pooled_table(
        _rows({"cold": [2.0, 2.0, 2.0], "warm": [2.0, 2.0, 2.0]}), {"float32_matmul_tflops": 0.1}
    )
    compiled = table[table["mode"] == "default"]
    assert list(compiled["route"]) == ["cold", "warm"]
    assert set(compiled["speedup"]) == {2.0} and set(compiled["ci_low"]) == {2.0}
    # break-even: (first step - compiled step) / (eager step - compiled step)
    assert list(compiled["breakeven_steps"]) == [999, 199]
    assert list(compiled["mfu"]) == pytest.approx([0.1, 0.1])


def test_each_row_keeps_its_own_process_ratio_and_a_slow_process_moves_no_speedup():
    rows = _rows({"cold": [2.0, 2.0, 2.0], "warm": [3.0, 3.0, 3.0]})
    for row in rows:  # the warm process runs 4x slower as a whole, eager and compiled alike
        if row["route"] == "warm":
            row["eager_times_s"] = [4 * t for t in row["eager_times_s"]]
            row["times_s"] = [4 * t for t in row["times_s"]]
            row["median_ms"] *= 4
    table = bench.pooled_table(rows, {"float32_matmul_tflops": 0.1})
    compiled = table[table["mode"] == "default"].set_index("route")
    assert list(compiled["process_speedup"]) == pytest.approx([2.0, 3.0])
    assert list(compiled["process_eager_ms"]) == pytest.approx([10.0, 40.0])
    assert (compiled["process_ci_low"] <= compiled["process_speedup"]).all()
    assert set(compiled["speedup"]) == {2.5}  # pooled over both processes' ratios
    assert len(set(table[table["mode"] == "eager"]["process_speedup"])) == 1


def test_compare_says_faster_slower_or_no_measurable_difference():
    assert bench.compare(1.2, 1.1, 1.3) == "1.20x (95% interval 1.10-1.30) faster than eager"
    assert bench.compare(0.8, 0.7, 0.9, than="X").endswith("slower than X")
    assert "no measurable difference from eager" in bench.compare(1.05, 0.98, 1.1)
    assert "1.003-" in bench.compare(1.05, 1.003, 1.1)  # not "1.00": it does not cover 1


def test_verdict_says_no_measurable_difference_when_the_interval_covers_one():
    rows = pd.DataFrame(
        [
            {
                "workload": "seed",
                "variant": "-",
                "dtype": "float32",
                "mode": "default",
                "speedup": 1.02,
                "ci_low": 0.97,
                "ci_high": 1.06,
            },
            {
                "workload": "gpt",
                "variant": "manual",
                "dtype": "bf16",
                "mode": "default",
                "speedup": 1.2,
                "ci_low": 1.17,
                "ci_high": 1.23,
            },
            {
                "workload": "gpt",
                "variant": "sdpa",
                "dtype": "bf16",
                "mode": "default",
                "speedup": 1.05,
                "ci_low": 1.03,
                "ci_high": 1.08,
            },
        ]
    )
    lines = bench.verdict(rows)
    assert "no measurable difference" in lines[0] and "0.97-1.06" in lines[0]
    assert bench.verdict(rows.assign(where="an H200"))[1].startswith("an H200: GPT manual bf16")
    assert "within the claimed 1.15-1.25x" in lines[1]
    assert "below the claimed" in lines[2] and "faster" in lines[2]


def test_profiles_resolve_by_workload_and_device():
    assert bench.resolve_profile("gpt", "auto", torch.device("cpu")).name == "laptop"
    assert bench.resolve_profile("seed", "auto", torch.device("cuda")).name == "gpu"
    gpu = bench.PROFILES[("gpt", "gpu")]
    assert (gpu.model.n_layer, gpu.model.d_model, gpu.model.seq_len) == (
        12,
        768,
        1024,
    ) and gpu.variants == ("manual", "sdpa")
    with pytest.raises(ValueError, match="unknown profile"):
        bench.resolve_profile("gpt", "huge", torch.device("cpu"))


@pytest.mark.slow
def test_a_route_cut_short_is_recorded_and_leaves_nothing_running(tmp_path):
    import psutil

    table, env = bench.run_routes("gpt", "cpu-smoke", tmp_path, device="cpu", budget_s=1.0)
    assert table.empty and env["complete"] is False
    cold, warm, mega, regional = env["incomplete"]
    assert cold.startswith("cold route stopped after") and regional.startswith(
        "regional route stopped after"
    )
    assert warm.startswith("warm route not started") and mega.startswith(
        "mega-cache route not started"
    )
    assert not [
        p for p in psutil.Process().children(recursive=True) if "bench" in " ".join(p.cmdline())
    ]
    assert not list(tmp_path.glob("route-*.json"))


def test_committed_gpu_tables_load_with_intervals():
    folders = sorted(p.parent for p in (ROOT / "results").glob("*/bench.json"))
    assert folders, "results/ ships at least one GPU run"
    table, env, _ = bench.load_results(folders[-1])
    assert env["device"] == "cuda" and {"speedup", "ci_low", "ci_high", "route"} <= set(
        table.columns
    )
    compiled = table[table["mode"] != "eager"]
    assert (
        (compiled["ci_low"] <= compiled["speedup"]) & (compiled["speedup"] <= compiled["ci_high"])
    ).all()


def test_adamw_is_fused_where_the_device_has_it_else_plain(monkeypatch):
    from compile_ckpt.workshop.bench.profiles import adamw

    model = torch.nn.Linear(2, 2)
    assert adamw(model).defaults["fused"] is True  # CPU and CUDA have the fused kernel
    real = torch.optim.AdamW

    def no_fused_kernel(params, **kw):  # what torch raises for a device without it
        if kw.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be on supported devices")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", no_fused_kernel)
    assert not adamw(model).defaults["fused"]  # before: the harness crashed here


def test_nvidia_smi_missing_or_hanging_is_said_not_raised(monkeypatch):
    import subprocess

    from compile_ckpt.workshop.bench import results

    monkeypatch.setattr(results.shutil, "which", lambda name: None)
    assert results._nvidia_smi() == "nvidia-smi not found"
    monkeypatch.setattr(results.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def hangs(*a, **k):
        raise subprocess.TimeoutExpired("nvidia-smi", k["timeout"])

    monkeypatch.setattr(results.subprocess, "run", hangs)
    assert results._nvidia_smi() == "nvidia-smi failed: TimeoutExpired"


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "compile_ckpt.workshop.bench", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_the_bench_command_in_process_cut_short_and_refusing_bad_options(tmp_path):
    ok = _bench(
        "--workload",
        "seed",
        "--profile",
        "cpu-smoke",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "b"),
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "default" in ok.stdout and "95% interval" in ok.stdout
    assert (tmp_path / "b" / "bench.csv").exists()
    short = _bench(
        "--workload",
        "gpt",
        "--profile",
        "cpu-smoke",
        "--cold-warm",
        "--budget-s",
        "1",
        "--out",
        str(tmp_path / "c"),
    )
    assert short.returncode == 1 and "incomplete: cold route stopped after" in short.stderr
    assert (
        json.loads((tmp_path / "c" / "bench.json").read_text())["environment"]["complete"] is False
    )
    bad = _bench("--profile", "huge", "--out", str(tmp_path / "d"))
    assert bad.returncode == 2 and "cpu-smoke" in bad.stderr and "Traceback" not in bad.stderr
    if not torch.cuda.is_available():
        gpu = _bench("--device", "cuda", "--out", str(tmp_path / "d"))
        assert gpu.returncode == 2 and "no CUDA GPU" in gpu.stderr
        assert len(gpu.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_notebook_05_stops_at_once_on_a_parameter_out_of_range(tmp_path):
    from compile_ckpt.workshop.runner import run_notebook

    notebook = ROOT / "notebooks" / "05_benchmark_compiled_vs_eager.ipynb"
    run = run_notebook(
        notebook,
        tmp_path / "05.ipynb",
        {"model_repeats": 1},
        raise_on_error=False,
        workdir=tmp_path / "work",
        timeout=300,
    )
    assert run.status == "failed"
    assert "model_repeats=1" in run.error and "5-500" in run.error, run.error[-500:]
    cells = json.loads((tmp_path / "05.ipynb").read_text())["cells"]
    printed = [o.get("text", "") for c in cells for o in c.get("outputs", [])]
    assert not any("ms/step" in "".join(t) for t in printed)  # stopped before measuring
