"""The GPU run, end to end on a CPU with the smoke sizes: phases in order, each written when it
ends, the committable layout, and notebook 06 run as plain Python (as on a GPU image)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, not_installed

#: What a GPU image lacks (no Jupyter stack); the GPU run must not need any of it.
NOT_ON_A_GPU_IMAGE = (
    "matplotlib",
    "IPython",
    "ipykernel",
    "ipywidgets",
    "jupyter_client",
    "nbclient",
    "nbconvert",
    "nbformat",
    "papermill",
)


def _bare_image(folder):
    """A PYTHONPATH entry that makes every process of the run look like a bare GPU image (the
    Jupyter stack missing) and that holds a decoy ``compile_ckpt``: an inherited PYTHONPATH
    must not shadow the checkout's own package (before, it did in every phase's process)."""
    (folder / "compile_ckpt").mkdir(parents=True)
    (folder / "compile_ckpt" / "__init__.py").write_text("raise ImportError('decoy on PYTHONPATH')")
    (folder / "sitecustomize.py").write_text(not_installed(NOT_ON_A_GPU_IMAGE))
    return {**os.environ, "PYTHONPATH": str(folder)}


@pytest.mark.slow
def test_gpu_script_on_cpu_smoke(tmp_path):
    out = tmp_path / "results"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "gpu_run.py"),
        "--device",
        "cpu",
        "--smoke",
        "--out",
        str(out),
        "--phases",
        "ceilings,notebook06,seed",
    ]
    r = subprocess.run(
        cmd, capture_output=True, text=True, timeout=900, env=_bare_image(tmp_path / "image")
    )
    phases = json.loads((out / "phases.json").read_text())
    assert r.returncode == 0, (phases, r.stdout[-3000:], r.stderr[-3000:])
    assert list(phases) == ["ceilings", "notebook06", "seed"] and all(
        p["status"] == "ok" for p in phases.values()
    )
    ceilings = json.loads((out / "ceilings.json").read_text())
    assert ceilings["float32_matmul_tflops"] > 0 and ceilings["versions"]["torch"]
    seed = json.loads((out / "seed" / "bench.json").read_text())
    assert {row["route"] for row in seed["rows"]} == {"cold", "warm"}
    assert seed["environment"]["complete"]
    # the harness measured everything it reports, sanely (never a speed threshold)
    for row in seed["rows"]:
        assert (
            row["median_ms"] > 0
            and row["samples_per_s"] > 0
            and 0 < row["mfu"] < 1
            and row["loss_agrees"]
        )
        assert (
            row["graph_breaks"] == 0
            and row["recompiles"] == 0
            and row["ci_low"] <= row["speedup"] <= row["ci_high"]
        )
    assert (
        len(json.loads((out / "seed" / "step_times.json").read_text())["cold/float32/eager"]) == 4
    )
    ac = json.loads((out / "activation_checkpointing.json").read_text())
    assert {(row["mode"], row["checkpointing"]) for row in ac["rows"]} == {
        ("eager", False),
        ("eager", True),
        ("compiled", False),
        ("compiled", True),
    }
    assert not (
        out / "cudagraphs.json"
    ).exists()  # a CPU run never replaces the GPU's CUDA-graph record
    # reduce-overhead with checkpointing (pytorch#154306) is GPU-only: skipped, said why, no file
    records = json.loads((out / "notebook06" / "records.json").read_text())
    skipped = records["ac_reduce_overhead"]
    assert skipped["ran_here"] is False and "GPU" in skipped["why_not"]
    assert not skipped["variants"] and not (out / "ac_reduce_overhead.json").exists()


def _gpu_run_module():
    spec = importlib.util.spec_from_file_location("gpu_run", ROOT / "scripts" / "gpu_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebook06_files_come_from_gpu_measurements_only():
    files = _gpu_run_module().notebook06_files
    variant = {"works": False, "ms": None, "error": "RuntimeError: ...", "cuda_graphs": 1}
    gpu = {
        "activation_checkpointing": {"rows": []},
        "cudagraphs_ran_here": True,
        "cudagraphs": {"variants": {"a": variant}},
        "ac_reduce_overhead": {"ran_here": True, "variants": {"b": variant}},
    }
    assert files(gpu) == {
        "activation_checkpointing.json": gpu["activation_checkpointing"],
        "cudagraphs.json": gpu["cudagraphs"],
        "ac_reduce_overhead.json": gpu["ac_reduce_overhead"],
    }
    cpu = {
        **gpu,
        "cudagraphs_ran_here": False,
        "ac_reduce_overhead": {"ran_here": False, "why_not": "no GPU", "variants": {}},
    }
    assert list(files(cpu)) == ["activation_checkpointing.json"]


def test_unknown_phase_is_a_usage_error(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gpu_run.py"),
            "--out",
            str(tmp_path),
            "--phases",
            "ceilings,nope",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "unknown phase(s) ['nope']" in r.stderr


def test_a_phase_without_enough_budget_is_skipped_and_said(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gpu_run.py"),
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
            "--phases",
            "gpt",
            "--budget-s",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    phases = json.loads((tmp_path / "phases.json").read_text())
    assert (
        r.returncode == 1
        and phases["gpt"]["status"] == "skipped"
        and "240s needed" in phases["gpt"]["why"]
    )
