"""The torchrun job and its launcher, and the pitfall helpers (GPU parts skip on CPU)."""

from __future__ import annotations

import subprocess

import psutil
import pytest
import torch

from compile_ckpt import pitfalls
from compile_ckpt.distributed import launch

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


def test_gpu_script_runs_end_to_end_on_cpu(tmp_path):
    """scripts/gpu_benchmark.sh with the cpu-smoke profile: the path the GPU run takes."""
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(["bash", str(root / "scripts/gpu_benchmark.sh"), "cpu-smoke", str(tmp_path / "r")],
                          capture_output=True, text=True, env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("ceilings.json", "bench/bench.csv", "cudagraphs.json", "activation_checkpointing.json"):
        assert (tmp_path / "r" / name).exists(), name


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the live run is shown instead")
def test_cudagraph_results_fall_back_to_committed_gpu_run():
    here, shown, source = pitfalls.cudagraph_results("cpu")
    assert here["skipped"] is True
    assert shown is not None and shown["skipped"] is False and source.startswith("results/")
    assert "NVIDIA" in source
