"""One Jupyter kernel per checkout (scripts/kernel.py, which `make kernel` and `make
clean-kernel` run): installed inside the environment, never shared through the user's Jupyter
folder, and removable; the shared kernel earlier versions installed is removed, saying so."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "kernel.py"


def kernel(action: str, prefix: Path, user: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "JUPYTER_DATA_DIR": str(user)}
    return subprocess.run([sys.executable, str(SCRIPT), action, "--prefix", str(prefix)],
                          capture_output=True, text=True, env=env, timeout=120)


def spec(prefix: Path) -> Path:
    return prefix / "share" / "jupyter" / "kernels" / "compile-ckpt" / "kernel.json"


def test_each_checkout_gets_its_own_kernel_and_the_shared_one_goes(tmp_path):
    user = tmp_path / "user-jupyter"
    shared = user / "kernels" / "compile-ckpt"
    shared.mkdir(parents=True)
    (shared / "kernel.json").write_text(json.dumps(
        {"argv": ["/elsewhere/checkout/.venv/bin/python", "-m", "ipykernel_launcher"],
         "display_name": "Python (compile-ckpt)", "language": "python"}))
    first, second = tmp_path / "checkout-a-venv", tmp_path / "checkout-b-venv"

    done = kernel("install", first, user)
    assert done.returncode == 0, done.stderr
    assert not shared.exists() and "/elsewhere/checkout/.venv/bin/python" in done.stdout
    assert kernel("install", second, user).returncode == 0
    for prefix in (first, second):
        installed = json.loads(spec(prefix).read_text())
        assert installed["argv"][0] == sys.executable
        assert ROOT.name in installed["display_name"]
    assert not (user / "kernels").exists() or not any((user / "kernels").iterdir())

    assert kernel("remove", first, user).returncode == 0
    assert not spec(first).exists() and spec(second).exists()  # the other checkout keeps its own
    again = kernel("remove", first, user)
    assert again.returncode == 0 and "no Jupyter kernel" in again.stdout
