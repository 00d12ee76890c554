"""The install's own promises: PIP_ARGS are never ignored silently (an existing .venv installed
under other PIP_ARGS stops make before it does nothing, saying how to start over), and an index
that cannot be reached is said once, before pip's own retries."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT


def make(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["make", "-n", "-C", str(folder), *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_other_pip_args_for_an_existing_venv_stop_with_how_to_start_over(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for name in ("requirements.txt", "requirements-dev.txt", "pyproject.toml"):
        (tmp_path / name).write_text("")
    time.sleep(0.01)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".pip-args").write_text("--extra-index-url file:///mirror\n")
    (tmp_path / ".venv" / ".installed").write_text("")
    other = make(tmp_path, "lint", "PIP_ARGS=--extra-index-url https://download.pytorch.org/whl/cpu")
    assert other.returncode != 0
    assert "make clean-venv" in other.stderr and "file:///mirror" in other.stderr
    assert make(tmp_path, "lint", "PIP_ARGS=--extra-index-url file:///mirror").returncode == 0
    assert make(tmp_path, "lint").returncode == 0  # no PIP_ARGS: the .venv as it is
    assert make(tmp_path, "clean-venv", "PIP_ARGS=--anything").returncode == 0


def test_an_unreachable_index_is_said_once_and_stops_the_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no find-links, no mirror: only the index below
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "torch_build.py"),
         "--index-url", "http://127.0.0.1:9/simple", "--ignore-installed"],  # torch is here
        capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:9" in lines[0] and "cannot reach" in lines[0]
