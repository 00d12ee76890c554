"""Unsafe and broken files: every one gives a clear CheckpointError naming the path, a
malicious pickle never runs, and a killed writer never leaves a torn checkpoint."""

from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from compile_ckpt import (
    CheckpointError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_torch_save_never_runs(tmp_path, small_model):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": small_model().state_dict(), "x": _Payload(str(marker))}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        load_checkpoint(path, small_model())
    assert not marker.exists()
    assert str(path) in str(err.value)
    assert "posix.system" in err.value.globals or "os.system" in str(err.value)
    assert "safe_globals" in str(err.value)


def test_malicious_raw_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"x": _Payload(str(marker))}))
    with pytest.raises(CheckpointFormatError, match="raw pickle"):
        read_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_needing_other_globals_names_them(tmp_path):
    import argparse

    path = tmp_path / "ns.pt"
    torch.save({"args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UnsafeCheckpointError, match="argparse.Namespace") as err:
        read_checkpoint(path)
    assert err.value.globals == ["argparse.Namespace"]
    with torch.serialization.safe_globals([argparse.Namespace]):  # allowed on purpose, it loads
        assert torch.load(path, weights_only=True)["args"].lr == 0.1


@pytest.mark.parametrize("case", ["missing", "directory", "dcp_directory", "empty", "truncated",
                                  "random", "bad_safetensors"])
def test_bad_files_raise_clear_errors(tmp_path, small_model, case):
    good = tmp_path / "good.pt"
    torch.save(small_model().state_dict(), good)
    data = good.read_bytes()
    path = tmp_path / f"{case}.pt"
    expected: type[CheckpointError] = CorruptCheckpointError
    if case == "missing":
        expected = CheckpointNotFoundError
    elif case in ("directory", "dcp_directory"):
        path.mkdir()
        if case == "dcp_directory":
            (path / ".metadata").write_bytes(b"x")
        expected = CheckpointNotFoundError
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif case == "random":
        path.write_bytes(random.Random(0).randbytes(4096))
    elif case == "bad_safetensors":
        path = tmp_path / "bad.safetensors"
        path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(expected) as err:
        load_checkpoint(path, small_model())
    assert str(path) in str(err.value)
    if case == "dcp_directory":
        assert "dcp_to_torch_save" in str(err.value)
    assert "Traceback" not in str(err.value)


_WRITER = textwrap.dedent("""
    import sys, torch
    from torch import nn
    from compile_ckpt import save_checkpoint
    path, seed = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(seed)
    model = nn.Sequential(*[nn.Linear(256, 256) for _ in range(24)])  # ~6 MB
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        save_checkpoint(path, model, metadata={"writer": seed, "i": i})
""")


def test_killed_writer_never_leaves_a_torn_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    save_checkpoint(path, torch.nn.Linear(2, 2), metadata={"writer": -1, "i": 0})
    rng = random.Random(1)
    kills = 0
    for round_ in range(8):
        proc = subprocess.Popen([sys.executable, str(script), str(path), str(round_)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for _ in range(3):
            time.sleep(rng.uniform(0.01, 0.25))
            os.kill(proc.pid, signal.SIGSTOP)  # freeze mid-write, check, continue
            obj = read_checkpoint(path)
            assert obj["metadata"]["writer"] in (-1, *range(round_ + 1))
            os.kill(proc.pid, signal.SIGCONT)
        time.sleep(rng.uniform(0.0, 0.2))
        proc.kill()
        proc.wait()
        kills += 1
        obj = read_checkpoint(path)  # never torn: the old file or a complete new one
        assert "model_state_dict" in obj
    assert kills == 8
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".ckpt.pt.")]
    assert all(p.endswith(".tmp") for p in leftovers)  # only temp files, never the target
