"""Processes never outlive their owner: the bounded subprocess runner and the torchrun
launcher kill the whole tree on timeout, error, SIGTERM, SIGHUP and normal return (checked
by PID), found with psutil (the one process-tree path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from compile_ckpt.workshop.distributed import launch
from compile_ckpt.workshop.env import run_process

# A command whose child starts a grandchild in a session of its own (as torchrun's workers are),
# writes both PIDs, and waits.
TREE = textwrap.dedent("""
    import subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                  start_new_session=True)
    open(sys.argv[1], "w").write(f"{grandchild.pid}")
    time.sleep(600)
""")


def _gone(pids: list[int], within: float = 15.0) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        alive = [
            p
            for p in pids
            if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
        ]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def test_an_owner_killed_outright_leaves_nothing_running(tmp_path):
    """SIGKILL runs no handler: the psutil watchdog kills the command's tree."""
    marker = tmp_path / "pid"
    owner_code = ("import sys; from compile_ckpt.workshop.env import run_process; "
                  f"run_process([sys.executable, '-c', {TREE!r}, {str(marker)!r}], timeout=600)")
    owner = subprocess.Popen([sys.executable, "-c", owner_code])
    deadline = time.time() + 60
    while not marker.exists() or not marker.read_text():
        assert time.time() < deadline and owner.poll() is None
        time.sleep(0.1)
    command = [c.pid for c in psutil.Process(owner.pid).children()
               if str(marker) in " ".join(c.cmdline())]
    owner.kill()
    owner.wait()
    assert command and _gone([*command, int(marker.read_text())])


def test_timeout_kills_the_tree(tmp_path):
    marker = tmp_path / "pid"
    with pytest.raises(TimeoutError, match="did not finish in 2s"):
        run_process([sys.executable, "-c", TREE, str(marker)], timeout=2)
    assert _gone([int(marker.read_text())])


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_owner_kills_the_tree(tmp_path, sig):
    """The owner (a notebook kernel, a terminal session) gets SIGTERM or SIGHUP while it waits:
    the whole tree goes with it."""
    marker = tmp_path / "pid"
    owner = textwrap.dedent(f"""
        import sys
        from compile_ckpt.workshop.env import run_process
        run_process([sys.executable, "-c", {TREE!r}, {str(marker)!r}], timeout=600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", owner])
    deadline = time.time() + 60
    while not marker.exists() or not marker.read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    child = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    grandchild = int(marker.read_text())
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == -sig  # it still ends the owner, as it would have
    assert _gone([*child, grandchild])


@pytest.mark.slow
def test_launcher_kills_the_whole_job_on_timeout(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        "import argparse, time\nargparse.ArgumentParser().add_argument('--out')\ntime.sleep(600)\n"
    )
    with pytest.raises(TimeoutError, match="all its processes were killed"):
        launch(script, nproc=2, timeout=8, out_json=tmp_path / "o.json")
    assert not [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(script) in " ".join(p.info["cmdline"] or [])
    ]


@pytest.mark.slow
def test_launcher_returns_the_jobs_json_and_reports_failures(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent("""
        import argparse, json, os
        ap = argparse.ArgumentParser(); ap.add_argument("--out")
        ap.add_argument("--fail", action="store_true")
        args = ap.parse_args()
        if args.fail:
            raise SystemExit(3)
        if os.environ["RANK"] == "0":
            json.dump({"world": int(os.environ["WORLD_SIZE"])}, open(args.out, "w"))
    """)
    )
    assert launch(script, nproc=2, timeout=120, out_json=tmp_path / "o.json")["world"] == 2
    with pytest.raises(RuntimeError, match="exit code"):
        launch(script, ["--fail"], nproc=2, timeout=120, out_json=tmp_path / "o.json")
    assert os.environ.get("OMP_NUM_THREADS") != "1"  # the job's environment, not the caller's
