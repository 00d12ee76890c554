"""Say which torch build pip is about to install, before the download starts.

``make install`` runs this first: ``python scripts/torch_build.py [pip options]``. It asks pip
to resolve requirements.txt's torch pin with the same options (``--dry-run``: wheel metadata
only, no download) and prints the build (CPU or CUDA), where it comes from, its size and how to
choose the CPU build instead. Standard library only. It stops the install (exit 2) only when
the package index cannot be reached, in one line, before pip's own retries would print a
warning per download; if pip cannot resolve for another reason, it says so and pip's own
install reports the cause.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CPU_INDEX = 'PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"'
#: What pip prints when it cannot connect (refused, proxy, DNS, timeout).
UNREACHABLE = re.compile(r"NewConnectionError|ProxyError|ConnectTimeout|Connection refused|"
                         r"Name or service not known|Temporary failure in name resolution|"
                         r"Network is unreachable|Read timed out")
#: Measured on this project's Linux machine with torch 2.13.0 (the README's table shows them).
MEASURED = {"CPU": "754 MB installed; the whole .venv 1.8 GB",
            "CUDA": "3.9 GB installed with NVIDIA's libraries; the whole .venv 5.6 GB"}


def torch_pin() -> str:
    """``torch==X.Y.Z`` as requirements.txt pins it."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.split("#")[0].strip().startswith("torch=="):
            return line.split("#")[0].strip()
    raise SystemExit("requirements.txt pins no torch")


class Unreachable(Exception):
    """pip could not connect to a package index; the message says which and why."""


def indexes(pip_args: list[str]) -> list[str]:
    """The index URLs named in ``pip_args`` (``--index-url``/``-i``, ``--extra-index-url``)."""
    found = []
    for i, arg in enumerate(pip_args):
        for flag in ("--index-url", "-i", "--extra-index-url"):
            if arg == flag and i + 1 < len(pip_args):
                found.append(pip_args[i + 1])
            elif arg.startswith(flag + "="):
                found.append(arg.split("=", 1)[1])
    return found


def resolve(pip_args: list[str]) -> dict | None:
    """pip's installation report for the torch pin alone; ``{}`` when it is installed already,
    None when pip could not resolve it (no such build); :class:`Unreachable` when pip could
    not connect."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--quiet",
               "--disable-pip-version-check", "--retries", "1", "--timeout", "15", "--report",
               str(report), *pip_args, torch_pin()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0 and UNREACHABLE.search(done.stderr):
            why = UNREACHABLE.search(done.stderr).group(0)
            where = ", ".join(indexes(pip_args)) or "the index pip is configured with"
            raise Unreachable(f"{where}: {why}")
        if done.returncode != 0 or not report.exists():
            return None
        install = json.loads(report.read_text()).get("install", [])
        return install[0] if install else {}


def size_of(url: str) -> int | None:
    """Bytes of the wheel at ``url`` (a local file, or an HTTP HEAD), None if unknown."""
    if url.startswith("file://"):
        path = Path(urllib.request.url2pathname(url.removeprefix("file://")))
        return path.stat().st_size if path.exists() else None
    try:
        request = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.headers["Content-Length"])
    except (OSError, ValueError, TypeError, KeyError):
        return None


def megabytes(size: int) -> str:
    """``527 MB``; ``0.003 MB`` for something small."""
    return f"{size / 1e6:,.0f} MB" if size >= 1e6 else f"{size / 1e6:.3f} MB"


def cuda_of(version: str, requires: list[str]) -> tuple[str | None, list[str]]:
    """The CUDA version a torch wheel is built for (None: a CPU build) and the NVIDIA/CUDA
    packages it pulls in, from its version's local label or its requirements."""
    names = [re.split(r"[\[=<>; ]", r)[0] for r in requires
             if r.startswith(("nvidia-", "cuda-")) and "extra ==" not in r]
    label = re.search(r"\+cu(\d+)(\d)$", version)
    toolkit = next((re.search(r"==(\d+\.\d+)", r) for r in requires
                    if r.startswith("cuda-toolkit")), None)
    suffix = next((re.search(r"-cu(\d+)$", n) for n in names if re.search(r"-cu\d+$", n)), None)
    if label:
        return f"{label.group(1)}.{label.group(2)}", names
    if toolkit or suffix:
        return (toolkit or suffix).group(1), names
    return None, names


def describe(item: dict) -> list[str]:
    """The lines to print for one resolved torch wheel."""
    meta, url = item["metadata"], item["download_info"]["url"]
    cuda, pulled = cuda_of(meta["version"], meta.get("requires_dist", []))
    build = "CUDA" if cuda else "CPU"
    size = size_of(url)
    lines = [f"torch: pip will install torch {meta['version']}, the "
             + (f"CUDA {cuda} build" if cuda else "CPU build")
             + (f", with NVIDIA's libraries ({', '.join(pulled)})" if pulled else ""),
             f"  from {url}" + (f" ({megabytes(size)})" if size else ""),
             f"  measured on Linux: {MEASURED[build]}"]
    if cuda:
        lines += ["  Every notebook runs on a CPU. For the CPU build, interrupt (Ctrl-C) and run:",
                  f"    make run {CPU_INDEX}"]
    return lines


def main(pip_args: list[str]) -> int:
    try:
        item = resolve(pip_args)
    except Unreachable as err:
        print(f"torch: cannot reach the package index ({err}); nothing was installed. Check the "
              "network or the proxy (HTTPS_PROXY; `pip config list` shows pip's settings), or "
              "PIP_ARGS.", file=sys.stderr)
        return 2
    if item is None:
        lines = [f"torch: pip could not resolve {torch_pin()} with PIP_ARGS={' '.join(pip_args)!r}"
                 " (no network, or no such build); the install below says why."]
    elif not item:
        lines = [f"torch: {torch_pin()} is installed in this environment already (no download)."]
    else:
        lines = describe(item)
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
