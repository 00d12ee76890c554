"""The torchrun job and its launcher, and the pitfall helpers (GPU parts skip on CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest
import torch

from compile_ckpt import bench, pitfalls
from compile_ckpt.distributed import launch
from compile_ckpt.env import run_process

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU")


def _workers() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if any("compile_ckpt.ddp_demo" in part for part in (p.info["cmdline"] or []))]


def test_ddp_demo_two_processes(tmp_path):
    r = launch("compile_ckpt.ddp_demo", ["--compile-backend", "eager", "--steps", "2"], nproc=2,
               timeout=300, out_json=tmp_path / "out.json")
    assert r["world_size"] == 2 and r["backend"] == "gloo"
    assert all(w["predictions_identical"] and w["saved_keys_clean"] for w in r["wrappings"].values())
    assert r["dcp"]["roundtrip_identical"] and r["dcp"]["converted_predictions_identical"]
    assert r["resume"]["reference"] == r["resume"]["resumed"]
    assert not _workers()  # no orphaned worker


def test_launcher_kills_the_whole_job_on_timeout(tmp_path):
    with pytest.raises(TimeoutError, match="all its processes were killed"):
        launch("compile_ckpt.ddp_demo", ["--steps", "50"], nproc=2, timeout=3, out_json=tmp_path / "o.json")
    assert not _workers()


def test_launcher_reports_failures(tmp_path):
    with pytest.raises(RuntimeError, match="exit code"):
        launch("compile_ckpt.ddp_demo", ["--no-such-flag"], nproc=2, timeout=120, out_json=tmp_path / "o.json")


def test_cudagraphs_skip_on_cpu_with_reason():
    r = pitfalls.cudagraph_pitfalls("cpu")
    assert r == {"skipped": True, "reason": pitfalls.CUDA_GRAPH_SKIP_REASON}


@needs_gpu
def test_cudagraph_fixes_on_gpu():
    r = pitfalls.cudagraph_pitfalls("cuda", reps=5)
    assert r["fixes"]["reduce-overhead + clone outputs"]["works"] is True


def test_use_reentrant_warning_is_shown():
    assert "use_reentrant" in pitfalls.use_reentrant_warning()


def test_committed_gpu_records_are_gpu_measurements():
    cg, folder = pitfalls.committed_gpu_record("cudagraphs")
    assert cg is not None and cg["skipped"] is False and "H200" in cg["device_name"]
    assert cg["fixes"]["reduce-overhead + clone outputs"]["works"] is True


@pytest.mark.parametrize("with_psutil", [True, False])
def test_run_process_kills_grandchildren_on_timeout(monkeypatch, tmp_path, with_psutil):
    """With psutil the whole tree is killed; without it (a bare GPU image) the session's group."""
    if not with_psutil:
        monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    marker = tmp_path / "pid"
    with pytest.raises(TimeoutError, match="did not finish in 2s"):
        run_process(["bash", "-c", f"sleep 300 & echo $! > {marker}; wait"], timeout=2)
    monkeypatch.undo()
    pid = int(marker.read_text())

    def gone() -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 10  # SIGKILL is delivered asynchronously
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gone()
    code, out = run_process([sys.executable, "-c", "print('hi'); raise SystemExit(3)"], timeout=60)
    assert (code, out) == (3, "hi\n")


def test_gpu_script_runs_end_to_end_on_cpu(tmp_path):
    """scripts/gpu_benchmark.sh with the cpu-smoke profile: the path the GPU run takes."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["bash", str(root / "scripts/gpu_benchmark.sh"), "cpu-smoke", str(tmp_path / "r")],
                          capture_output=True, text=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "r"
    for name in ("ceilings.json", "bench.csv", "cold/bench.json", "warm/bench.json", "cudagraphs.json",
                 "activation_checkpointing.json", "run.log", "nvidia-smi.txt"):
        assert (out / name).exists(), name
    phases = json.loads((out / "phases.json").read_text())
    assert list(phases) == ["ceilings", "bench", "cudagraphs", "activation_checkpointing"]
    assert {v["status"] for v in phases.values()} == {"ok"}
    table, env, _ = bench.load_results(out)  # the layout notebook 05 reads from results/<gpu>-<date>/
    assert set(table["run"]) == {"cold", "warm"} and env["complete"] is True


def test_gpu_script_phases_and_budget(tmp_path):
    """--phases picks phases in order; a phase that the budget leaves no time for is skipped,
    recorded in phases.json, and the exit code says the run is not complete."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(root / "scripts/gpu_run.py"), "--profile", "cpu-smoke",
                           "--out", str(tmp_path), "--phases", "ceilings,bench", "--budget-s", "10"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    phases = json.loads((tmp_path / "phases.json").read_text())
    assert phases["ceilings"]["status"] == "ok"
    assert phases["bench"]["status"] == "skipped" and "of the budget left" in phases["bench"]["why"]
    assert (tmp_path / "ceilings.json").exists() and not (tmp_path / "bench.json").exists()
    bad = subprocess.run([sys.executable, str(root / "scripts/gpu_run.py"), "--out", str(tmp_path),
                          "--phases", "ceilings,warp"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown phase(s) ['warp']" in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the live run is shown instead")
def test_cudagraph_results_fall_back_to_committed_gpu_run():
    here, shown, source = pitfalls.cudagraph_results("cpu")
    assert here["skipped"] is True
    assert shown is not None and shown["skipped"] is False and source.startswith("results/")
    assert "NVIDIA" in source
