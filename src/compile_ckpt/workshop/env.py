"""The machine and its processes: device resolution, versions, where the shipped results and
solutions are, and a bounded subprocess runner whose children never outlive it."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import psutil
import torch


def device_problem(device: str | torch.device) -> str | None:
    """Why ``device`` cannot be used here, or None; ``ValueError`` if it names no device."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{str(device)!r} is not a device ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        return (f"{str(device)!r} was asked for, but this machine has no CUDA GPU (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'})")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        return f"{str(device)!r} was asked for; this machine has {torch.cuda.device_count()} GPU(s)"
    return None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` takes CUDA when present, else CPU; a device this machine does not have
    raises a RuntimeError that says so."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(device)  # raises ValueError for a name that is no device
    if problem:
        raise RuntimeError(f"device={problem}. Use device='auto' or 'cpu'.")
    return torch.device(device)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on CPU): call before reading a host clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def versions() -> dict[str, str]:
    """Python, torch (and which build: CPU or CUDA) and the notebook stack's versions."""
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "torch_build": f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only",
           "platform": platform.platform()}
    for pkg in ("numpy", "pandas", "matplotlib", "tqdm", "ipywidgets", "ipykernel", "jupyterlab",
                "papermill", "safetensors", "triton"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


class CompilerCheck(NamedTuple):
    """What :func:`cxx_compiler_check` found: the compiler (its path, or the name tried), whether
    it compiled a test program, and what happened, in words."""

    compiler: str | None
    works: bool
    detail: str


def _first_line(proc: subprocess.CompletedProcess[str]) -> str:
    message = (proc.stderr or proc.stdout or "").strip().splitlines()
    return f"exit status {proc.returncode}: " + (message[0][:200] if message else "no message")


def cxx_compiler_check(timeout: float = 120.0) -> CompilerCheck:
    """The C++ compiler TorchInductor would use on a CPU, found as Inductor finds it (the first
    of ``torch._inductor.config.cpp.cxx`` -- ``$CXX``, else ``g++`` -- that answers
    ``--version``), and whether it compiles a one-line program."""
    from torch._inductor import config as inductor_config

    cxx = inductor_config.cpp.cxx
    names = [c for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if c]
    tried, last = [], names[-1] if names else None
    for name in names:
        path = shutil.which(name)
        last = path or name
        if path is None:
            tried.append(f"{name}: not found")
            continue
        proc = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:  # Inductor rejects a compiler that fails here
            tried.append(f"{path} --version failed ({_first_line(proc)})")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "check.cpp").write_text("int main() { return 0; }\n")
            proc = subprocess.run([path, "check.cpp", "-o", "check"], cwd=tmp,
                                  capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            return CompilerCheck(path, False, f"compiling a test program failed "
                                              f"({_first_line(proc)})")
        return CompilerCheck(path, True, "compiled a test program")
    return CompilerCheck(last, False,
                         "; ".join(tried) or "torch._inductor.config.cpp.cxx names no compiler")


def shipped(kind: str) -> Path:
    """Where the committed GPU ``results`` or the exercise ``solutions`` are: the folder named by
    ``$COMPILE_CKPT_RESULTS`` / ``$COMPILE_CKPT_SOLUTIONS``, else the copy installed with the
    package (a wheel ships both), else the repository this package is running from."""
    if kind not in ("results", "solutions"):
        raise ValueError(f"kind must be 'results' or 'solutions', not {kind!r}")
    if os.environ.get(f"COMPILE_CKPT_{kind.upper()}"):
        return Path(os.environ[f"COMPILE_CKPT_{kind.upper()}"])
    with contextlib.suppress(ModuleNotFoundError):
        spec = importlib.util.find_spec(f"compile_ckpt.workshop.shipped.{kind}")
        if spec is not None and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0])
    repo = Path(__file__).resolve().parents[3]
    return repo / ("results" if kind == "results" else "notebooks/solutions")


def kill_process_tree(pid: int) -> None:
    """Kill a process and every descendant, wherever their sessions are (torchrun puts its
    workers in sessions of their own), then whatever is left in the group ``pid`` leads."""
    procs = []
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(procs, timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@contextlib.contextmanager
def kill_tree_on_signals(pid: int) -> Iterator[None]:
    """While inside: SIGTERM or SIGHUP to this process first kill ``pid``'s whole tree, then do
    what they did before (by default, end this process). Main thread only; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        kill_process_tree(pid)
        signal.signal(signum, previous[signum])
        if callable(previous[signum]):
            previous[signum](signum, frame)
        elif previous[signum] == signal.SIG_DFL:
            os.kill(os.getpid(), signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


#: A watchdog process (psutil only, so it starts in a fraction of a second): when the owner ends
#: while the command still runs -- killed outright, where no handler runs -- it kills the
#: command's whole tree; it ends on its own when the command does.
_WATCHDOG = """
import contextlib, os, signal, sys, time
import psutil
def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


owner_pid, command_pid = int(sys.argv[1]), int(sys.argv[2])
if not alive(command_pid):
    sys.exit(0)
command = psutil.Process(command_pid)
while alive(owner_pid):  # an owner gone before this started counts as gone
    if not command.is_running() or command.status() == psutil.STATUS_ZOMBIE:
        sys.exit(0)
    time.sleep(0.5)
with contextlib.suppress(psutil.Error):
    procs = [*command.children(recursive=True), command]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
with contextlib.suppress(OSError):
    os.killpg(command.pid, signal.SIGKILL)
"""


def _watch(pid: int) -> subprocess.Popen[bytes]:
    """Start the watchdog of ``pid`` for this process (see ``_WATCHDOG``)."""
    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(pid)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def run_process(cmd: Sequence[str], *, timeout: float, env: Mapping[str, str] | None = None
                ) -> tuple[int, str]:
    """Run ``cmd`` in a session of its own and return ``(exit code, output)``.

    Output goes to a temporary file, not a pipe (a stray grandchild could hold a pipe open
    forever). Nothing the command started outlives this call: its whole tree is killed on
    timeout (then ``TimeoutError`` with the output's tail), on an exception, on SIGTERM or
    SIGHUP to this process, and on return; if this process is killed outright, a watchdog
    process kills the command's tree.
    """
    with tempfile.TemporaryFile("w+") as logfile:
        proc = subprocess.Popen(list(cmd), stdout=logfile, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env=dict(env) if env is not None else None)
        watchdog = _watch(proc.pid)
        try:
            with kill_tree_on_signals(proc.pid):
                proc.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            kill_process_tree(proc.pid)
            logfile.seek(0)
            raise TimeoutError(f"{' '.join(cmd[:4])} ... did not finish in {timeout:.0f}s; all "
                               f"its processes were killed.\n{logfile.read()[-3000:]}") from None
        finally:
            kill_process_tree(proc.pid)
            watchdog.kill()
            watchdog.wait()
        logfile.seek(0)
        return proc.returncode, logfile.read()
