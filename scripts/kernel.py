"""One Jupyter kernel per checkout: ``make kernel`` and ``make clean-kernel`` call this.

``python scripts/kernel.py install`` registers the kernel ``compile-ckpt`` *inside this
environment* (``ipykernel install --sys-prefix``): JupyterLab and papermill started from this
checkout's ``.venv`` find it, and another checkout's kernel never replaces it. Its display name
carries the checkout's folder, ``Python (compile-ckpt: <folder>)``. A ``compile-ckpt`` kernel in
the user's Jupyter folder (what earlier versions installed, shared by every checkout, and found
*before* this environment's) is removed, with a line saying which Python it ran.
``python scripts/kernel.py remove`` removes this environment's kernel. Standard library and
jupyter_client only; ``--prefix`` and ``$JUPYTER_DATA_DIR`` let the tests use scratch folders.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

NAME = "compile-ckpt"
ROOT = Path(__file__).resolve().parent.parent


def user_kernel_dir() -> Path:
    """Where a ``--user`` install puts the kernel (``$JUPYTER_DATA_DIR`` honoured)."""
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "kernels" / NAME


def kernel_dir(prefix: str) -> Path:
    return Path(prefix) / "share" / "jupyter" / "kernels" / NAME


def remove_shared_user_kernel() -> None:
    """Remove the user-level kernel an earlier ``make kernel`` installed for every checkout."""
    shared = user_kernel_dir()
    if not (shared / "kernel.json").is_file():
        return
    try:
        python = json.loads((shared / "kernel.json").read_text())["argv"][0]
    except (OSError, ValueError, KeyError, IndexError):
        python = "unreadable kernel.json"
    shutil.rmtree(shared)
    print(f"removed the user-level kernel '{NAME}' ({shared}, which ran {python}): every "
          "checkout now has its own, inside its .venv")


def install(prefix: str) -> int:
    """Register this interpreter as ``compile-ckpt`` under ``prefix``; drop the shared one."""
    display = f"Python ({NAME}: {ROOT.name})"
    done = subprocess.run(
        [sys.executable, "-m", "ipykernel", "install", "--prefix", prefix, "--name", NAME,
         "--display-name", display],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        print(f"kernel: ipykernel install failed: {done.stderr.strip()[-500:]}", file=sys.stderr)
        return 1
    remove_shared_user_kernel()
    print(f"Jupyter kernel '{display}' -> {sys.executable} (in {kernel_dir(prefix)})")
    return 0


def remove(prefix: str) -> int:
    """Remove the kernel registered under ``prefix``, if there is one."""
    spec = kernel_dir(prefix)
    if spec.is_dir():
        shutil.rmtree(spec)
        print(f"removed the Jupyter kernel '{NAME}' of this checkout ({spec})")
    else:
        print(f"no Jupyter kernel '{NAME}' in {spec.parent}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("install", "remove"))
    ap.add_argument("--prefix", default=sys.prefix, help="environment prefix (default: this one)")
    args = ap.parse_args(argv)
    return install(args.prefix) if args.action == "install" else remove(args.prefix)


if __name__ == "__main__":
    raise SystemExit(main())
