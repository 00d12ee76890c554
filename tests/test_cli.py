"""The compile-ckpt command: inspect, clean, exit codes, --json."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from compile_ckpt.cli import main
from conftest import compiled


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "compile_ckpt", *args], capture_output=True, text=True)


def test_inspect_reports_wrapper_segments(tmp_path, small_model, capsys):
    path = tmp_path / "seed.pt"
    m = small_model()
    m.cnn_layers = compiled(m.cnn_layers)
    torch.save({"model_state_dict": compiled(m).state_dict(), "optimizer": {"state": {}, "param_groups": []}}, path)
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["tensors"] == len(small_model().state_dict())
    assert info["wrapper_segments"]["_orig_mod"]["at_depths"] == [0, 2]
    assert info["optimizer_state"] is True and info["dtypes"] == {"float32": info["tensors"]}


def test_clean_dry_run_then_write(tmp_path, small_model, capsys):
    src = tmp_path / "seed.pt"
    out = tmp_path / "clean.pt"
    torch.save({"model_state_dict": compiled(small_model()).state_dict(), "epoch": 4}, src)
    assert main(["clean", str(src), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "_orig_mod.head.0.weight -> head.0.weight" in text and not out.exists()
    assert main(["clean", str(src), str(out)]) == 0
    obj = torch.load(out, weights_only=True)
    assert obj["epoch"] == 4
    small_model(1).load_state_dict(obj["model_state_dict"])  # plain PyTorch now loads it


def test_exit_codes_via_python_m(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"")
    r = run("inspect", str(bad), "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["error"] == "CorruptCheckpointError"
    r = run("inspect", str(tmp_path / "missing.pt"))
    assert r.returncode == 1 and "missing.pt" in r.stderr and "Traceback" not in r.stderr
    assert run("frobnicate").returncode == 2
    assert run("clean", str(bad)).returncode == 2  # OUT missing without --dry-run


def test_bench_writes_tables_and_reports_a_cut_short_run(tmp_path):
    ok = run("bench", "--profile", "cpu-smoke", "--device", "cpu", "--out", str(tmp_path / "b"))
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "default" in ok.stdout and (tmp_path / "b" / "bench.csv").exists()
    short = run("bench", "--profile", "cpu-smoke", "--device", "cpu", "--cold-warm", "--budget-s", "1",
                "--out", str(tmp_path / "c"))
    assert short.returncode == 1
    assert "incomplete: cold run stopped after" in short.stderr
    assert "incomplete: warm run not started" in short.stderr
