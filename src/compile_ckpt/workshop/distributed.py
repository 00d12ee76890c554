"""Process groups for single-process demos, and a bounded ``torchrun`` launcher that never
leaves workers behind."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch.distributed as dist

from .env import run_process


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def single_process_group() -> Iterator[None]:
    """Inside: a gloo process group of world size 1 (so DDP can wrap a model in one process),
    rendezvous through an in-memory store: no port, no environment variable. One that is
    already initialised is used as it is; one made here is destroyed on exit."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def launch(script: str | os.PathLike[str], args: Sequence[str] = (), *, nproc: int = 2,
           timeout: float = 600, out_json: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Run ``torchrun --nproc-per-node N script args`` on a free localhost port and return the
    JSON the job wrote to ``out_json`` (passed to it as ``--out``), plus ``wall_s``.

    ``script`` is a ``.py`` file, or a module name (run with ``-m``). The job's whole process
    tree is killed on timeout, on an error, and on SIGTERM/SIGHUP to the caller (see
    ``env.run_process``); a failed job raises with the tail of its log.
    """
    target = ["-m", str(script)] if not str(script).endswith(".py") else [str(script)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *target, *args]
    if out_json is not None:
        Path(out_json).unlink(missing_ok=True)  # never read an older run's result
        cmd += ["--out", str(out_json)]
    t0 = time.perf_counter()
    try:
        code, output = run_process(cmd, timeout=timeout,
                                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    except TimeoutError as exc:
        raise TimeoutError(f"{script}: {exc}") from None
    if code != 0:
        raise RuntimeError(f"{script} failed with exit code {code}:\n{output[-4000:]}")
    result: dict[str, Any] = json.loads(Path(out_json).read_text()) if out_json else {}
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result
