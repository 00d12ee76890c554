"""The machine: device resolution, versions, and what this torch does on compile."""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import shutil
import subprocess
import tempfile
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
