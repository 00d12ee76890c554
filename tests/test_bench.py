"""The benchmark harness on cpu-smoke (structure and sanity, never a speed threshold),
and the plots on the committed GPU table."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib
import pytest

from compile_ckpt import bench, plots

matplotlib.use("agg")
RESULTS = sorted(Path(__file__).resolve().parents[1].glob("results/*/bench.json"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return bench.run_cold_warm("cpu-smoke", out, device="cpu"), out


def test_table_structure_and_sanity(smoke):
    (table, env, steps), out = smoke
    assert set(table["cache"]) == {"n/a", "cold", "warm"}
    assert (out / "bench.csv").exists() and (out / "bench.json").exists()
    assert env["profile"] == "cpu-smoke" and env["torch"] and env["threads"] >= 1
    assert (table["median_ms"] > 0).all() and (table["p25_ms"] <= table["p75_ms"]).all()
    assert set(table["run"]) == {"cold", "warm"}
    cold = table[(table["cache"] == "cold")].iloc[0]
    eager = table[(table["mode"] == "eager") & (table["run"] == "cold")].iloc[0]
    assert cold["speedup"] == pytest.approx(eager["median_ms"] / cold["median_ms"])
    assert cold["median_ms"] == pytest.approx(statistics.median(steps["float32/default"]) * 1e3)
    assert table["loss_agrees"].all()
    assert (table["graph_breaks"] == 0).all() and (table["timing_recompiles"] == 0).all()
    warm = table[(table["cache"] == "warm")].iloc[0]
    assert warm["compile_latency_s"] < cold["compile_latency_s"]  # the cache did something
    assert len(steps["float32/eager"]) == bench.PROFILES["cpu-smoke"].repeats
    assert env["complete"] is True and env["incomplete"] == []


def _bench_children() -> list:
    import psutil

    return [p for p in psutil.Process().children(recursive=True)
            if "compile_ckpt.bench" in " ".join(p.cmdline())]


def test_cold_warm_out_of_budget_is_recorded_and_leaves_nothing_running(tmp_path):
    """A cold run that cannot finish in its budget is killed with every process it started,
    and the record says so instead of raising; the warm run is not started."""
    table, env, steps = bench.run_cold_warm("cpu-smoke", tmp_path, device="cpu", budget_s=1.0)
    assert table.empty and steps == {}
    assert env["complete"] is False
    assert env["incomplete"][0].startswith("cold run stopped after") and "dtypes finished: none" in env["incomplete"][0]
    assert env["incomplete"][1] == "warm run not started: the cold run did not complete"
    assert not (tmp_path / "warm").exists()
    assert _bench_children() == []


def test_cold_run_cut_short_keeps_its_finished_dtypes(tmp_path, monkeypatch):
    """The cold process finished float32, wrote it, and was killed during bf16: the merged
    table keeps float32 and says what is missing. (The process is faked; the real kill is
    tested above.)"""
    import pandas as pd

    def fake_run_process(cmd, *, timeout, env):
        out = Path(cmd[cmd.index("--out") + 1])
        rows = pd.DataFrame([{"dtype": "float32", "mode": m, "cache": c, "median_ms": 1.0}
                             for m, c in (("eager", "n/a"), ("default", "cold"))])
        bench.write_results(out, rows, {"dtypes_done": ["float32"], "complete": False}, {"float32/eager": [1e-3]})
        raise TimeoutError("killed")

    monkeypatch.setattr(bench, "run_process", fake_run_process)
    table, env, steps = bench.run_cold_warm("cpu-smoke", tmp_path, device="cpu", budget_s=30)
    assert list(table["run"]) == ["cold", "cold"] and list(table["dtype"]) == ["float32", "float32"]
    assert "dtypes finished: ['float32']" in env["incomplete"][0] and env["complete"] is False
    assert steps == {"float32/eager": [1e-3]}
    saved, saved_env, _ = bench.load_results(tmp_path)
    assert len(saved) == 2 and saved_env["incomplete"] == env["incomplete"]


def test_run_profile_reports_each_finished_dtype(tmp_path):
    """on_partial sees every dtype as it finishes, so a run stopped part-way keeps them."""
    import dataclasses

    prof = dataclasses.replace(bench.PROFILES["cpu-smoke"], name="two-dtypes", modes=("eager",),
                               dtypes=("float32", "bf16"))
    seen = []

    def keep(table, env, steps):
        seen.append((len(table), env["dtypes_done"], env["complete"], sorted(steps)))
        bench.write_results(tmp_path, table, env, steps)

    table, env, _ = bench.run_profile(prof, device="cpu", progress=False, on_partial=keep)
    assert seen == [(1, ["float32"], False, ["float32/eager"])]
    partial, partial_env, _ = bench.load_results(tmp_path)  # what a killed run would leave
    assert list(partial["dtype"]) == ["float32"] and partial_env["complete"] is False
    assert len(table) == 2 and env["complete"] is True and env["dtypes_done"] == ["float32", "bf16"]


def test_resolve_profile():
    import torch

    assert bench.resolve_profile("auto", torch.device("cpu")).name == "laptop"
    assert bench.resolve_profile("auto", torch.device("cuda")).name == "gpu"
    with pytest.raises(ValueError, match="unknown profile"):
        bench.resolve_profile("huge", torch.device("cpu"))


@pytest.mark.skipif(not RESULTS, reason="no committed results/*/bench.json")
def test_plots_on_committed_gpu_table(tmp_path):
    table, env, steps = bench.load_results(RESULTS[-1].parent)
    assert env["device"] == "cuda"
    fig = plots.plot_benchmark(table, steps, env)
    assert len(fig.axes) == 4
    fig.savefig(tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 10_000
