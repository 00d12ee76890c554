"""Unsafe and broken files: every one gives a clear CheckpointError naming the path, a
malicious pickle never runs, a killed writer never leaves a torn checkpoint, and damage is
found where the formats' own readers find it."""

from __future__ import annotations

import os
import pickle
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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
    with pytest.raises(CheckpointFormatError, match="a pickle that torch.save did not write"):
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


@pytest.mark.parametrize(
    "case",
    ["missing", "directory", "dcp_directory", "empty", "truncated", "random", "bad_safetensors"],
)
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
        save_checkpoint(path, model, extra={"writer": seed, "i": i})
""")


@pytest.mark.slow
def test_killed_writer_never_leaves_a_torn_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    save_checkpoint(path, torch.nn.Linear(2, 2), extra={"writer": -1, "i": 0})
    rng = random.Random(1)
    kills = 0
    for round_ in range(8):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(round_)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for _ in range(3):
            time.sleep(rng.uniform(0.01, 0.25))
            os.kill(proc.pid, signal.SIGSTOP)  # freeze mid-write, check, continue
            obj = read_checkpoint(path)
            assert obj["writer"] in (-1, *range(round_ + 1))
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


# ------------------------------------------------------------- writes never destroy
def test_a_symlink_is_written_through(tmp_path, small_model):
    real = save_checkpoint(tmp_path / "ckpt_100.pt", small_model(0))
    (tmp_path / "latest.pt").symlink_to("ckpt_100.pt")
    save_checkpoint(tmp_path / "latest.pt", small_model(1))
    assert (tmp_path / "latest.pt").is_symlink()
    assert torch.equal(
        read_checkpoint(real)["model_state_dict"]["head.0.weight"], small_model(1).head[0].weight
    )


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_what_is_not_a_regular_file_is_refused_and_left_alone(tmp_path, small_model, kind):
    from compile_ckpt import CheckpointWriteError

    path = tmp_path / "target.pt"
    path.mkdir() if kind == "directory" else os.mkfifo(path)
    with pytest.raises(
        CheckpointWriteError, match=f"is a {'directory' if kind == 'directory' else 'FIFO'}"
    ):
        save_checkpoint(path, small_model())
    assert path.is_dir() if kind == "directory" else stat.S_ISFIFO(path.stat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["target.pt"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_modes_are_what_torch_save_gives_and_kept_on_overwrite(tmp_path, small_model, suffix):
    old = os.umask(0o022)
    try:
        new = save_checkpoint(tmp_path / f"new{suffix}", small_model())
        torch.save({}, tmp_path / "plain.pt")
        assert stat.S_IMODE(new.stat().st_mode) == stat.S_IMODE(
            (tmp_path / "plain.pt").stat().st_mode) == 0o644  # what torch.save gives
        os.chmod(new, 0o640)
        save_checkpoint(new, small_model(1))
        assert stat.S_IMODE(new.stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_a_save_deletes_no_file_it_did_not_create(tmp_path, small_model):
    """A killed save's temporary file, or another writer's, stays: this library never guesses
    whose a file is. Nothing reads it; deleting it is the user's call."""
    others = [tmp_path / ".c.pt.0123456789ab.tmp", tmp_path / ".c.pt.zzz.tmp"]
    for f in others:
        f.write_bytes(b"partial")
    save_checkpoint(tmp_path / "c.pt", small_model())
    assert sorted(tmp_path.iterdir()) == sorted([tmp_path / "c.pt", *others])


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, small_model, monkeypatch):
    from compile_ckpt import CheckpointWriteError

    target = tmp_path / "c.pt"
    save_checkpoint(target, small_model(0))
    before = target.read_bytes()

    def full(obj, f, *a, **k):  # what torch.save raises when the device fills up mid-write
        Path(f).write_bytes(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointWriteError, match="could not be written.*unchanged"):
        save_checkpoint(target, small_model(1))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_really_full_disk(tmp_path, small_model):
    """The same on a real 64 KiB tmpfs, where this machine lets us mount one."""
    from compile_ckpt import CheckpointWriteError

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True
    ).returncode:
        pytest.skip(
            "mounting a tmpfs is not permitted here; test_a_full_disk_leaves_the_old_file "
            "covers the path"
        )
    try:
        save_checkpoint(mnt / "c.pt", torch.nn.Linear(2, 2))
        before = (mnt / "c.pt").read_bytes()
        with pytest.raises(CheckpointWriteError, match="could not be written"):
            save_checkpoint(mnt / "c.pt", torch.nn.Linear(300, 300))
        assert (mnt / "c.pt").read_bytes() == before and [p.name for p in mnt.iterdir()] == ["c.pt"]
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# ------------------------------------------------------------------- honest errors
def test_an_unusable_map_location_is_not_called_corruption(tmp_path, small_model):
    from compile_ckpt import CheckpointDeviceError

    path = save_checkpoint(tmp_path / "c.pt", small_model())
    if not torch.cuda.is_available():
        with pytest.raises(CheckpointDeviceError, match="no CUDA GPU"):
            load_checkpoint(path, small_model(), map_location="cuda")
    with pytest.raises(CheckpointDeviceError, match="not a device"):
        read_checkpoint(path, map_location="gpu0")


def test_a_damaged_safetensors_header_is_corruption(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"w": torch.ones(4)}, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:-4])  # the header promises bytes the file does not have
    with pytest.raises(CorruptCheckpointError, match="not a readable safetensors file"):
        read_checkpoint(path)


# ------------------------------------------------ damage: what the formats' readers find
@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4
    ),
    suffix=st.sampled_from([".pt", ".safetensors"]),
)
def test_random_damage_is_a_named_error_or_a_load(tmp_path_factory, flips, suffix):
    """Flip bytes anywhere: the load raises a CheckpointError (never another exception, never a
    crash), or it loads, with no checksum of ours to say whether a tensor's bytes changed: that
    is torch's and safetensors' behaviour too (docs/library.md, "What is checked")."""
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
    path = save_checkpoint(tmp_path_factory.mktemp("c") / f"c{suffix}", model)
    data = bytearray(path.read_bytes())
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    path.write_bytes(bytes(data))
    target = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
    try:
        report = load_checkpoint(path, target)
    except CheckpointError as exc:
        assert str(path) in str(exc)
        return
    assert report.ok
