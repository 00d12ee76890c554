"""From measured rows to results: the pooled table, the verdict, the environment record and
the files of a results folder."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ...atomic import atomic_write
from ..env import device_name, versions
from .profiles import EAGER, WORKLOAD_LABELS, Profile
from .timing import speedup_interval

#: The original write-up's claim: without compile, pretraining is 15-25% slower.
CLAIM = (1.15, 1.25)


def pooled_table(rows: list[dict[str, Any]], ceilings: dict[str, float]) -> pd.DataFrame:
    """One table. Per route: its first step (the compile latency). Per (variant, dtype, mode):
    one steady-state speedup, the median of the paired per-repeat ratios pooled over the routes
    that ran the same compiled code, with its interval. Step time, throughput and MFU derive
    from one eager step time (the median over every process) divided by that speedup, so a
    process that ran slow as a whole moves neither; break-even steps follow from them. Each row
    also keeps its own process's eager median and its speedup within that process
    (``process_*``): processes differ as a whole, so ratios are only ever taken within one."""
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    out = []
    for (variant, dtype, mode), g in table.groupby(["variant", "dtype", "mode"], sort=False):
        same = table[(table["variant"] == variant) & (table["dtype"] == dtype)]
        eager_s = statistics.median(t for ts in same["eager_times_s"] for t in ts)
        s, lo, hi = (
            (1, 1, 1)
            if mode == EAGER
            else speedup_interval(
                [t for ts in g["eager_times_s"] for t in ts], [t for ts in g["times_s"] for t in ts]
            )
        )
        step_s = eager_s / s
        ceiling = ceilings.get(f"{dtype}_matmul_tflops") or ceilings.get("float32_matmul_tflops")
        for _, r in g.iterrows():
            own = r["median_ms"] / 1e3
            be = (
                math.ceil((r["first_step_s"] - step_s) / (eager_s - step_s))
                if mode != EAGER and s > 1
                else None
            )
            unit = "tokens_per_s" if pd.notna(r.get("tokens_per_s")) else "samples_per_s"
            flops = r["achieved_tflops"] * own / step_s
            within = (
                (1, 1, 1) if mode == EAGER else speedup_interval(r["eager_times_s"], r["times_s"])
            )
            out.append(
                {
                    **r.drop(["eager_times_s", "times_s"]).to_dict(),
                    "speedup": s,
                    "ci_low": lo,
                    "ci_high": hi,
                    "pooled_step_ms": step_s * 1e3,
                    "process_eager_ms": statistics.median(r["eager_times_s"]) * 1e3,
                    "process_speedup": within[0],
                    "process_ci_low": within[1],
                    "process_ci_high": within[2],
                    "breakeven_steps": be,
                    unit: r[unit] * own / step_s,
                    "achieved_tflops": flops,
                    "mfu": flops / ceiling if ceiling else None,
                }
            )
    return pd.DataFrame(out)


def _digits(lo: float, hi: float) -> int:
    return 3 if "1.00" in (f"{lo:.2f}", f"{hi:.2f}") else 2  # 1.003 is not 1.0: say so


def interval(lo: float, hi: float) -> str:
    """``1.17-1.23``, with a third digit where two would round a bound to 1.00."""
    d = _digits(lo, hi)
    return f"{lo:.{d}f}-{hi:.{d}f}"


def compare(s: float, lo: float, hi: float, than: str = "eager") -> str:
    """``1.20x (95% interval 1.17-1.23) faster than eager``; "no measurable difference from
    eager" when the interval covers 1.0."""
    ci = f"{s:.{_digits(lo, hi)}f}x (95% interval {interval(lo, hi)})"
    if lo <= 1.0 <= hi:
        return f"{ci}: no measurable difference from {than}"
    return f"{ci} {'faster' if s > 1 else 'slower'} than {than}"


def verdict(table: pd.DataFrame, claim: tuple[float, float] = CLAIM) -> list[str]:
    """One sentence per compiled mode on the write-up's claim (compile is 1.15-1.25x faster),
    with the interval; "no measurable difference" when the interval covers 1.0. A ``where``
    column, if present, starts each sentence (this run, a committed record)."""
    lines = []
    claimed = f"the claimed {claim[0]:.2f}-{claim[1]:.2f}x"
    keys = [k for k in ("where", "workload", "variant", "dtype", "mode") if k in table.columns]
    first = table.drop_duplicates(keys)
    for _, r in first[first["mode"] != EAGER].iterrows():
        name = WORKLOAD_LABELS.get(r["workload"], r["workload"])
        variant = "" if r["variant"] == "-" else " " + r["variant"]
        where = f"{r['where']}: " if "where" in r.index else ""
        what = f"{where}{name}{variant} {r['dtype']} {r['mode']}"
        said = compare(r["speedup"], r["ci_low"], r["ci_high"])
        if r["ci_low"] <= 1.0 <= r["ci_high"]:
            lines.append(f"{what}: {said}; {claimed} is not seen here.")
            continue
        place = (
            "within"
            if claim[0] <= r["ci_low"] and r["ci_high"] <= claim[1]
            else "below"
            if r["ci_high"] < claim[0]
            else "above"
            if r["ci_low"] > claim[1]
            else "overlapping"
        )
        lines.append(f"{what}: {said}; {place} {claimed}.")
    return lines


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader compares, rounded."""
    cols = [
        "workload",
        "variant",
        "dtype",
        "mode",
        "route",
        "first_step_s",
        "median_ms",
        "speedup",
        "ci_low",
        "ci_high",
        "breakeven_steps",
        "samples_per_s",
        "tokens_per_s",
        "mfu",
        "loss_agrees",
        "graph_breaks",
        "recompiles",
    ]
    return table[[c for c in cols if c in table.columns]].round(3)


def _nvidia_smi() -> str:
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    query = "driver_version,clocks.sm,clocks.mem,clocks.max.sm,power.draw,temperature.gpu"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {type(exc).__name__}"
    return out.stdout.strip() or out.stderr.strip()


def environment(device: torch.device, profile: Profile) -> dict[str, Any]:
    """Where, when and how the numbers were measured."""
    env = {
        "measured_at_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **versions(),
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "host": platform.node(),
        "profile": dataclasses.asdict(profile),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            capability=f"{props.major}.{props.minor}",
            nvidia_smi=_nvidia_smi(),
            device_memory_gib=round(props.total_memory / 2**30, 1),
        )
    return env


def write_results(
    out: Path, table: pd.DataFrame, env: dict[str, Any], steps: dict[str, Any]
) -> None:
    """``bench.csv``, ``step_times.json`` and ``bench.json`` (written last: it marks
    completion)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "bench.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(out / "step_times.json", lambda p: p.write_text(json.dumps(steps)))
    record = {"environment": env, "rows": json.loads(table.to_json(orient="records"))}
    atomic_write(out / "bench.json", lambda p: p.write_text(json.dumps(record, indent=1)))


def load_results(folder: str | Path) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """The table, environment and step times of a folder :func:`write_results` wrote."""
    folder = Path(folder)
    data = json.loads((folder / "bench.json").read_text())
    steps_file = folder / "step_times.json"
    steps = json.loads(steps_file.read_text()) if steps_file.exists() else {}
    return pd.DataFrame(data["rows"]), data["environment"], steps
