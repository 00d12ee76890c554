"""One fresh process per route, within a budget: what a new training job pays to compile.

``cold`` starts from a new Inductor cache, ``warm`` from the cold run's, ``mega-cache`` from a
new cache primed with ``torch.compiler.load_cache_artifacts`` (bytes the cold run saved) and
``regional`` (gpt) compiles each transformer block instead of the whole model. On a CPU the
first compile in an empty cache also probes the CPU's vector instructions (seconds, once per
cache directory): the cold route times that probe apart (``cpu_probe_s``) and the other new
caches start from its result, so each first step is the model's compile alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from ...atomic import atomic_write
from ..env import resolve_device, run_process
from .profiles import EAGER, ROUTES, Profile, resolve_profile
from .results import environment, pooled_table, summarize, verdict, write_results
from .timing import measure, measure_ceilings

#: Where the cold route leaves a cache holding only Inductor's probe of this CPU.
CPU_PROBE = "cpu-probe-cache"


def run_routes(
    workload: str,
    profile: str,
    out: str | Path,
    *,
    device: str = "auto",
    budget_s: float = 3600,
    routes: tuple[str, ...] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Each route in a fresh process, within ``budget_s`` seconds in all; write and return the
    pooled table and the environment. A route that overruns is killed with everything it
    started; ``env["incomplete"]`` says what is missing and why, and the table keeps what
    finished. Temporary caches are removed."""
    out, dev = Path(out), resolve_device(device)
    prof = resolve_profile(workload, profile, dev)
    routes = routes or ROUTES[workload]
    caches = {
        name: Path(tempfile.mkdtemp(prefix=f"inductor-{name}-")) for name in ("shared", "fresh")
    }
    deadline, rows, steps, incomplete = time.monotonic() + budget_s, [], {}, []
    try:
        ceilings = measure_ceilings(dev)
        for route in tqdm(
            routes, desc=f"{workload} {prof.name}: one process per route", unit="route"
        ):
            cold_done = any(r["route"] == "cold" for r in rows)
            if route in ("warm", "mega-cache") and "cold" in routes and not cold_done:
                incomplete.append(
                    f"{route} route not started: it needs what the cold route "
                    "leaves, and that did not complete"
                )
                continue
            part, why = _run_route(route, prof, dev, caches, deadline - time.monotonic())
            incomplete += [why] if why else []
            rows += part.get("rows", [])
            steps.update({f"{route}/{k}": v for k, v in part.get("steps", {}).items()})
    finally:
        for folder in caches.values():
            shutil.rmtree(folder, ignore_errors=True)
    table = pooled_table(rows, ceilings)
    env = {
        **environment(dev, prof),
        "ceilings": ceilings,
        "routes": list(routes),
        "complete": not incomplete,
        "incomplete": incomplete,
    }
    write_results(out, table, env, steps)
    return table, env


def _run_route(
    route: str, prof: Profile, dev: torch.device, caches: dict[str, Path], left: float
) -> tuple[dict[str, Any], str]:
    """One route in a fresh process; its result and, if it did not finish, why."""
    fresh = caches["fresh"]
    cache = caches["shared"] if route in ("cold", "warm") else Path(tempfile.mkdtemp(dir=fresh))
    if route not in ("cold", "warm") and (fresh / CPU_PROBE).is_dir():  # the machine's probe
        shutil.copytree(fresh / CPU_PROBE, cache, dirs_exist_ok=True)
    result = fresh / f"route-{route}.json"  # temporary, like the mega-cache bytes
    cmd = [
        sys.executable,
        "-m",
        "compile_ckpt.workshop.bench",
        "--worker",
        route,
        "--workload",
        prof.workload,
        "--profile",
        prof.name,
        "--device",
        str(dev),
        "--out",
        str(result),
        "--artifacts",
        str(fresh / "mega-cache.bin"),
    ]
    env = {
        **os.environ,
        "TORCHINDUCTOR_CACHE_DIR": str(cache),
        "TRITON_CACHE_DIR": str(cache / "triton"),
    }
    t0 = time.monotonic()
    try:
        code, output = run_process(cmd, timeout=left, env=env)
    except TimeoutError:
        return {}, (
            f"{route} route stopped after {time.monotonic() - t0:.0f}s (budget "
            f"{left:.0f}s): compiling took longer than the time left"
        )
    if code != 0:
        raise RuntimeError(f"benchmark {route} route failed (exit {code}):\n{output[-3000:]}")
    return json.loads(result.read_text()), ""


def _probe_cpu(keep: Path) -> float:
    """Seconds Inductor takes to probe this CPU's vector instructions (a test program per
    instruction set, once per cache directory); a copy of that cache goes to ``keep``."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    t0 = time.perf_counter()
    pick_vec_isa()
    seconds = time.perf_counter() - t0
    shutil.copytree(cache_dir(), keep, dirs_exist_ok=True)
    return seconds


def _compiled_libraries() -> set[str]:
    """The shared libraries (C++ kernels, Triton launchers) in this process's Inductor cache."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return {str(p) for p in Path(cache_dir()).rglob("*.so")}


def worker(
    route: str, workload: str, profile: str, device: str, result: Path, artifacts: Path
) -> None:
    """Inside a route's fresh process: measure, save or load the mega-cache, write JSON."""
    dev = resolve_device(device)
    prof = resolve_profile(workload, profile, dev)
    if route == "mega-cache":
        info = torch.compiler.load_cache_artifacts(artifacts.read_bytes())
        kinds = {kind: len(keys) for kind, keys in (info.artifacts if info else {}).items()}
        print(f"mega-cache: loaded {artifacts.stat().st_size:,} bytes, artifacts by kind: {kinds}")
    probe_s = (
        _probe_cpu(artifacts.parent / CPU_PROBE) if route == "cold" and dev.type == "cpu" else 0.0
    )
    libraries = _compiled_libraries()
    rows, steps = measure(prof, route, dev)
    built = len(_compiled_libraries() - libraries)  # what this process compiled (g++ or Triton)
    rows = [
        {
            **r,
            "libraries_built": built if r["mode"] != EAGER else 0,
            "cpu_probe_s": probe_s if r["mode"] != EAGER else 0.0,
        }
        for r in rows
    ]
    if route == "cold" and "mega-cache" in ROUTES[workload]:
        saved = torch.compiler.save_cache_artifacts()
        if saved is not None:
            atomic_write(artifacts, lambda p: p.write_bytes(saved[0]))
    atomic_write(result, lambda p: p.write_text(json.dumps({"rows": rows, "steps": steps})))


def cli(args: argparse.Namespace) -> int:
    """Measure, print the table and the verdict; exit 1 if cut short."""
    out = Path(args.out)
    if args.cold_warm:
        table, env = run_routes(
            args.workload, args.profile, out, device=args.device, budget_s=args.budget_s
        )
    else:
        dev = resolve_device(args.device)
        prof = resolve_profile(args.workload, args.profile, dev)
        rows, steps = measure(prof, "in-process", dev, progress=True)
        env = {**environment(dev, prof), "ceilings": measure_ceilings(dev), "incomplete": []}
        table = pooled_table(rows, env["ceilings"])
        write_results(out, table, env, steps)
    if not table.empty:
        print(summarize(table).to_string(index=False))
        print("\n".join(verdict(table)))
    for why in env.get("incomplete", []):
        print(f"{PROG}: incomplete: {why}", file=sys.stderr)
    print(f"tables in {out}")
    return 1 if env.get("incomplete") else 0


PROG = "python -m compile_ckpt.workshop.bench"


def main(argv: list[str] | None = None) -> int:
    """Eager against compiled pretraining steps (``--worker``: one route's fresh process)."""
    ap = argparse.ArgumentParser(prog=PROG, description=main.__doc__)
    ap.add_argument("--workload", default="seed", choices=list(ROUTES))
    ap.add_argument(
        "--profile",
        default="auto",
        help="auto, or a profile of the workload (cpu-smoke, laptop, gpu, ...)",
    )
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument(
        "--cold-warm",
        action="store_true",
        help="fresh processes: cold, warm (and for gpt mega-cache, regional) compile latency",
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=3600,
        help="with --cold-warm: seconds for all runs; what finished is kept (exit 1 if cut short)",
    )
    ap.add_argument(
        "--worker", choices=["cold", "warm", "mega-cache", "regional"], help=argparse.SUPPRESS
    )
    ap.add_argument("--artifacts", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a.worker, a.workload, a.profile, a.device, a.out, a.artifacts)
        return 0
    try:
        resolve_device(a.device)
        if a.profile != "auto":
            resolve_profile(a.workload, a.profile, torch.device("cpu"))
    except (RuntimeError, ValueError) as exc:
        ap.exit(2, f"{PROG}: error: {' '.join(str(exc).split())}\n")
    return cli(a)
