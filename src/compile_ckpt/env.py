"""The machine: device resolution, versions, and what this torch does on compile."""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("compile_ckpt")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` takes CUDA when present, else CPU; an explicit CUDA device that this
    machine does not have raises a RuntimeError that says so."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device={str(device)!r} was asked for, but this machine has no CUDA GPU "
                f"(torch {torch.__version__}, cuda build: {torch.version.cuda}). "
                "Use device='auto' or 'cpu'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(f"device={str(device)!r}: only {torch.cuda.device_count()} GPU(s)")
    return dev


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on CPU): call before reading a host clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def versions() -> dict[str, str]:
    """Python, torch and notebook-stack versions (missing packages say so)."""
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda_build": str(torch.version.cuda), "platform": platform.platform()}
    for pkg in ("numpy", "pandas", "matplotlib", "tqdm", "ipywidgets", "ipykernel",
                "jupyterlab", "papermill", "safetensors", "triton"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def device_info(device: torch.device) -> dict[str, Any]:
    """Name, threads and (on GPU) memory and capability of ``device``."""
    info: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", sms=props.multi_processor_count)
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def cxx_compiler_check() -> dict[str, Any]:
    """Whether the C++ compiler that inductor uses on CPU exists and builds a file."""
    from torch._inductor import config as inductor_config  # the compiler inductor will call

    cxx = inductor_config.cpp.cxx
    name = cxx[-1] if isinstance(cxx, tuple) else cxx
    name = name or "g++"
    found = shutil.which(name) or shutil.which("g++") or shutil.which("c++")
    result: dict[str, Any] = {"compiler": found, "works": False, "detail": ""}
    if not found:
        result["detail"] = f"no C++ compiler on PATH (looked for {name!r}, g++, c++)"
        return result
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "check.cpp"
        src.write_text("int main() { return 0; }\n")
        proc = subprocess.run([found, str(src), "-o", str(Path(tmp) / "check")],
                              capture_output=True, text=True, timeout=120)
        result["works"] = proc.returncode == 0
        result["detail"] = proc.stderr.strip()[:500] or "compiled a test program"
    return result


def compile_adds_prefix() -> bool:
    """Whether this torch's ``torch.compile(m).state_dict()`` keys start with ``_orig_mod.``
    (a later PyTorch may stop adding it). Compiling is lazy, so this costs no compile."""
    m = torch.nn.Linear(2, 2)
    return any(k.startswith("_orig_mod.") for k in torch.compile(m).state_dict())


def kill_process_tree(pid: int) -> None:
    """Kill a process and every descendant, wherever their sessions are.

    Uses psutil when it is installed; without it (a bare GPU image), kills the process group
    that ``pid`` leads, which covers everything of a process started with
    ``start_new_session=True`` that did not start a session of its own.
    """
    try:
        import psutil
    except ImportError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        return
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def run_process(cmd: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Run ``cmd`` in a session of its own and return ``(exit code, output)``.

    Output goes to a temporary file, not a pipe (a stray grandchild could hold a pipe open
    forever). On timeout the whole process tree is killed and ``TimeoutError`` is raised with
    the output's tail; either way nothing the command started outlives this call.
    """
    with tempfile.TemporaryFile("w+") as logfile:
        proc = subprocess.Popen(list(cmd), stdout=logfile, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env=dict(env) if env is not None else None)
        try:
            proc.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            kill_process_tree(proc.pid)
            logfile.seek(0)
            raise TimeoutError(f"{' '.join(cmd[:4])} ... did not finish in {timeout:.0f}s; all its processes "
                               f"were killed.\n{logfile.read()[-3000:]}") from None
        finally:
            kill_process_tree(proc.pid)
        logfile.seek(0)
        return proc.returncode, logfile.read()
