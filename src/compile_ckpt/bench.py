"""Benchmark one pretraining step, eager against ``torch.compile``, the way PyTorch
measures itself: warm-up excluded, interleaved repeats, medians, compile latency from a
cold and a warm cache, break-even step, peak memory, dynamo counters, loss agreement.

``run_profile`` measures in this process. ``run_cold_warm`` starts two fresh processes on
one new inductor cache directory (the first compiles cold, the second warm) and merges
their tables. ``python -m compile_ckpt.bench`` and ``compile-ckpt bench`` are the CLI.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import atomic_write
from .env import resolve_device, run_process, synchronize, versions
from .model import ModelConfig, build_model

log = logging.getLogger("compile_ckpt")

EAGER = "eager"
#: Relative tolerance on per-step loss agreement between compiled and eager, by dtype.
LOSS_RTOL = {"float32": 1e-3, "bf16": 5e-2}


@dataclasses.dataclass(frozen=True)
class Profile:
    """What to measure: model size, batch, modes, dtypes and how many repeats."""

    name: str
    model: ModelConfig
    batch_size: int
    modes: tuple[str, ...]
    dtypes: tuple[str, ...]
    warmup_steps: int
    repeats: int
    steps_per_repeat: int
    n_batches: int = 8


_GPU_MODEL = ModelConfig(signal_channels=16, signal_length=1024, cnn_channels=(128, 256, 256, 256),
                         tabular_features=64, mlp_hidden=1024, head_hidden=2048, dropout=0.0)

PROFILES: dict[str, Profile] = {
    "cpu-smoke": Profile("cpu-smoke", ModelConfig(signal_length=32, cnn_channels=(8,), mlp_hidden=16,
                                                   head_hidden=16, dropout=0.0),
                         batch_size=16, modes=(EAGER, "default"), dtypes=("float32",),
                         warmup_steps=2, repeats=4, steps_per_repeat=2, n_batches=2),
    "laptop": Profile("laptop", ModelConfig(signal_length=128, cnn_channels=(32, 64), dropout=0.0),
                      batch_size=64, modes=(EAGER, "default"), dtypes=("float32",),
                      warmup_steps=3, repeats=15, steps_per_repeat=4),
    "gpu": Profile("gpu", _GPU_MODEL, batch_size=256, modes=(EAGER, "default", "reduce-overhead"),
                   dtypes=("float32", "bf16"), warmup_steps=5, repeats=30, steps_per_repeat=5),
    # Autotuning is measured on its own: on an H200 it spent over 9 minutes of a 15-minute
    # lease on the bf16 GEMMs of this model (2026-11-28), so it runs last, after the rest.
    "gpu-autotune": Profile("gpu-autotune", _GPU_MODEL, batch_size=256,
                            modes=(EAGER, "max-autotune-no-cudagraphs"), dtypes=("float32", "bf16"),
                            warmup_steps=5, repeats=30, steps_per_repeat=5),
}


def resolve_profile(name: str, device: torch.device) -> Profile:
    """``auto`` is ``gpu`` on CUDA and ``laptop`` otherwise (``gpu-autotune`` adds
    ``max-autotune-no-cudagraphs`` when asked for by name)."""
    if name == "auto":
        name = "gpu" if device.type == "cuda" else "laptop"
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {['auto', *PROFILES]}")
    return PROFILES[name]


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux: the process's peak so far.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Runner:
    """One model + optimizer, trained step by step in one mode and dtype."""

    def __init__(self, profile: Profile, mode: str, dtype: str, device: torch.device,
                 batches: list[tuple[torch.Tensor, ...]]) -> None:
        self.mode, self.dtype, self.device, self.batches = mode, dtype, device, batches
        self.model = build_model(profile.model, seed=0).to(device).train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.fn = self.model if mode == EAGER else torch.compile(self.model, mode=mode)
        self.i = 0

    def step(self) -> torch.Tensor:
        signal, tab, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            loss = nn.functional.mse_loss(self.fn(signal, tab).float(), y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


def _dynamo_snapshot() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {"unique_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


def step_flops(profile: Profile, device: torch.device, batch: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one eager training step (forward + backward), counted by PyTorch."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(profile.model, seed=0).to(device).train()
    with FlopCounterMode(display=False) as counter:
        loss = nn.functional.mse_loss(model(batch[0], batch[1]), batch[2])
        loss.backward()
    return int(counter.get_total_flops())


PartialCallback = Callable[[pd.DataFrame, dict[str, Any], dict[str, list[float]]], None]


def run_profile(profile: str | Profile = "auto", *, device: str | torch.device = "auto",
                cache: str = "unknown", progress: bool = True, seed: int = 0,
                on_partial: PartialCallback | None = None,
                ) -> tuple[pd.DataFrame, dict[str, Any], dict[str, list[float]]]:
    """Measure every (dtype, mode) of ``profile`` in this process.

    Returns the tidy table (one row per dtype and mode), the environment record, and the
    per-step times in seconds keyed ``"<dtype>/<mode>"`` (for distributions and
    cumulative-time plots). ``on_partial(table, env, step_times)`` is called after each
    dtype with everything measured so far (``env["dtypes_done"]`` says which), so a run that
    is stopped part-way still leaves its finished dtypes behind.
    """
    dev = resolve_device(device)
    prof = profile if isinstance(profile, Profile) else resolve_profile(profile, dev)
    if dev.type == "cpu" and "bf16" in prof.dtypes:
        log.warning("bf16 autocast on CPU is measured, but says little about GPU behaviour")
    g = torch.Generator().manual_seed(seed)
    c = prof.model
    batches = [tuple(t.to(dev) for t in (
        torch.randn(prof.batch_size, c.signal_channels, c.signal_length, generator=g),
        torch.randn(prof.batch_size, c.tabular_features, generator=g),
        torch.randn(prof.batch_size, generator=g))) for _ in range(prof.n_batches)]
    flops = step_flops(prof, dev, batches[0])
    rows: list[dict[str, Any]] = []
    step_times: dict[str, list[float]] = {}
    total = len(prof.dtypes) * (len(prof.modes) * (prof.warmup_steps + prof.repeats * prof.steps_per_repeat))
    bar = tqdm(total=total, desc=f"bench {prof.name} ({dev.type})", unit="step", disable=not progress)
    from torch._dynamo.utils import counters

    for n_done, dtype in enumerate(prof.dtypes, start=1):
        # One reset per dtype: resetting between modes would drop the compiled code of the
        # modes already warmed up, and the timing below would then recompile them.
        torch._dynamo.reset()
        runners: dict[str, _Runner] = {}
        warm: dict[str, dict[str, Any]] = {}
        for mode in prof.modes:  # warm-up (includes compilation), one mode at a time
            counters.clear()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(dev)
            r = runners[mode] = _Runner(prof, mode, dtype, dev, batches)
            losses, t_first = [], 0.0
            synchronize(dev)
            t0 = time.perf_counter()
            for i in range(prof.warmup_steps):
                losses.append(r.step())
                if i == 0:
                    synchronize(dev)
                    t_first = time.perf_counter() - t0
                    after_first = _dynamo_snapshot()
                bar.update()
            synchronize(dev)
            snap = _dynamo_snapshot()
            warm[mode] = {"warmup_s": time.perf_counter() - t0, "first_step_s": t_first,
                          "losses": [float(x) for x in losses], "peak_mem_mb": _peak_mem_mb(dev), **snap,
                          "recompiles": snap["unique_graphs"] - after_first["unique_graphs"]}
        times: dict[str, list[float]] = {m: [] for m in prof.modes}
        graphs_before_timing = _dynamo_snapshot()["unique_graphs"]
        for rep in range(prof.repeats):  # interleaved, rotating which mode goes first
            order = prof.modes[rep % len(prof.modes):] + prof.modes[:rep % len(prof.modes)]
            for mode in order:
                r = runners[mode]
                synchronize(dev)
                t0 = time.perf_counter()
                for _ in range(prof.steps_per_repeat):
                    r.step()
                synchronize(dev)
                times[mode].append((time.perf_counter() - t0) / prof.steps_per_repeat)
                bar.update(prof.steps_per_repeat)
        timing_recompiles = _dynamo_snapshot()["unique_graphs"] - graphs_before_timing
        eager_med = statistics.median(times[EAGER])
        eager_warm = warm[EAGER]["warmup_s"]
        for mode in prof.modes:
            med = statistics.median(times[mode])
            q = statistics.quantiles(times[mode], n=4) if len(times[mode]) > 1 else [med, med, med]
            compile_s = warm[mode]["warmup_s"] - eager_warm if mode != EAGER else 0.0
            saved = eager_med - med
            breakeven = math.ceil(compile_s / saved) if mode != EAGER and saved > 0 else None
            el, ml = warm[EAGER]["losses"], warm[mode]["losses"]
            loss_diff = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(el, ml, strict=True))
            rows.append({
                "profile": prof.name, "device": dev.type, "dtype": dtype, "mode": mode,
                "cache": cache if mode != EAGER else "n/a", "batch": prof.batch_size,
                "repeats": prof.repeats, "steps_per_repeat": prof.steps_per_repeat,
                "median_ms": med * 1e3, "p25_ms": q[0] * 1e3, "p75_ms": q[2] * 1e3,
                "min_ms": min(times[mode]) * 1e3, "speedup": eager_med / med,
                "warmup_s": warm[mode]["warmup_s"], "first_step_s": warm[mode]["first_step_s"],
                "compile_latency_s": compile_s, "breakeven_steps": breakeven,
                "peak_mem_mb": warm[mode]["peak_mem_mb"], "graph_breaks": warm[mode]["graph_breaks"],
                "unique_graphs": warm[mode]["unique_graphs"], "recompiles": warm[mode]["recompiles"],
                "timing_recompiles": timing_recompiles,
                "loss_max_rel_diff": loss_diff, "loss_rtol": LOSS_RTOL.get(dtype, 1e-3),
                "loss_agrees": loss_diff <= LOSS_RTOL.get(dtype, 1e-3),
                "step_gflop": flops / 1e9, "achieved_tflops": flops / med / 1e12,
            })
            step_times[f"{dtype}/{mode}"] = times[mode]
        del runners
        if on_partial is not None and n_done < len(prof.dtypes):
            on_partial(pd.DataFrame(rows), {**environment(dev, prof, cache), "dtypes_done": list(prof.dtypes[:n_done]),
                                            "complete": False}, dict(step_times))
    bar.close()
    env = {**environment(dev, prof, cache), "dtypes_done": list(prof.dtypes), "complete": True}
    return pd.DataFrame(rows), env, step_times


def environment(device: torch.device, profile: Profile, cache: str) -> dict[str, Any]:
    """Where and how the numbers were measured."""
    v = versions()
    env: dict[str, Any] = {
        "measured_at_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(), "python": v["python"], "torch": v["torch"], "triton": v["triton"],
        "device": device.type, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "cache": cache, "profile": profile.name, "batch": profile.batch_size,
        "repeats": profile.repeats, "steps_per_repeat": profile.steps_per_repeat,
        "warmup_steps": profile.warmup_steps, "modes": list(profile.modes),
        "dtypes": list(profile.dtypes), "model": dataclasses.asdict(profile.model),
        "inductor_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR", ""),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, cuda=torch.version.cuda,
                   device_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=f"{props.major}.{props.minor}")
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.mem,"
                                  "clocks.max.sm,power.draw,temperature.gpu", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20)
            env["nvidia_smi"] = out.stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            env["nvidia_smi"] = f"unavailable: {exc}"
    else:
        env["device_name"] = platform.processor() or platform.machine()
    return env


def write_results(out_dir: str | Path, table: pd.DataFrame, env: dict[str, Any],
                  step_times: dict[str, list[float]]) -> dict[str, Path]:
    """``bench.csv``, ``bench.json`` (table + environment) and ``step_times.json``, each
    written atomically (a run killed mid-write leaves the previous, partial, version)."""
    out = Path(out_dir)
    paths = {"csv": out / "bench.csv", "json": out / "bench.json", "steps": out / "step_times.json"}
    record = {"environment": env, "rows": json.loads(table.to_json(orient="records"))}
    atomic_write(paths["csv"], lambda p: table.to_csv(p, index=False))
    atomic_write(paths["steps"], lambda p: p.write_text(json.dumps(step_times)))
    atomic_write(paths["json"], lambda p: p.write_text(json.dumps(record, indent=2)))  # last: it marks completion
    return paths


def load_results(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any], dict[str, list[float]]]:
    """Read a folder written by :func:`write_results` (or :func:`run_cold_warm`)."""
    path = Path(path)
    data = json.loads((path / "bench.json").read_text())
    steps_file = path / "step_times.json"
    steps = json.loads(steps_file.read_text()) if steps_file.exists() else {}
    return pd.DataFrame(data["rows"]), data["environment"], steps


def run_cold_warm(profile: str = "auto", out_dir: str | Path | None = None, *,
                  device: str = "auto", budget_s: float = 3600) -> tuple[pd.DataFrame, dict[str, Any],
                                                                       dict[str, list[float]]]:
    """Run the profile twice in fresh processes on one new inductor cache: cold, then warm.

    The merged table has a ``run`` column (``cold`` / ``warm``; each run has its own eager
    rows, so every speedup is measured side by side in one process); step times and the
    environment come from the cold run.

    Both runs together get ``budget_s`` seconds. A run that overruns is killed with every
    process it started; the dtypes it finished are kept, and ``env["incomplete"]`` says what
    is missing and why (a cold run that was stopped is itself a measurement: compiling took
    longer than the time it had). The warm run only starts after a complete cold run.
    """
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="bench-"))
    cache_dir = Path(tempfile.mkdtemp(prefix="inductor-cache-"))
    deadline = time.monotonic() + budget_s
    parts: list[tuple[str, pd.DataFrame, dict[str, Any], dict[str, list[float]]]] = []
    incomplete: list[str] = []
    for cache in tqdm(("cold", "warm"), desc=f"bench {profile}: fresh processes", unit="run"):
        if incomplete:
            incomplete.append(f"{cache} run not started: the cold run did not complete")
            break
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache_dir),
               "TRITON_CACHE_DIR": str(cache_dir / "triton")}
        cmd = [sys.executable, "-m", "compile_ckpt.bench", "--profile", profile, "--device", device,
               "--cache", cache, "--out", str(out / cache), "--no-progress"]
        log.info("bench: %s run: %s", cache, " ".join(cmd))
        (out / cache / "bench.json").unlink(missing_ok=True)  # never mistake an older run for this one
        left = deadline - time.monotonic()
        t0 = time.monotonic()
        try:
            code, output = run_process(cmd, timeout=left, env=env)
        except TimeoutError:
            code, output = None, ""
        if code not in (0, None):
            raise RuntimeError(f"benchmark {cache} run failed (exit {code}):\n{output[-3000:]}")
        finished = (out / cache / "bench.json").exists()
        if finished:
            table, run_env, steps = load_results(out / cache)
            parts.append((cache, table, run_env, steps))
        if code is None:
            done = parts[-1][2].get("dtypes_done", []) if finished else []
            incomplete.append(f"{cache} run stopped after {time.monotonic() - t0:.0f}s (budget {left:.0f}s), "
                              f"dtypes finished: {done or 'none'}")
            log.warning("bench: %s", incomplete[-1])
    summary = {"cache": "cold+warm", "complete": not incomplete, "incomplete": incomplete}
    if not parts:  # nothing finished: the environment record says where, ``incomplete`` says why
        dev = resolve_device(device)
        return pd.DataFrame(), {**environment(dev, resolve_profile(profile, dev), "cold"), **summary}, {}
    _, _, env, steps = parts[0]
    # Each run keeps its own eager rows: a speedup is only ever computed within one process.
    table = pd.concat([t.assign(run=c) for c, t, _, _ in parts], ignore_index=True)
    env = {**env, **summary}
    write_results(out, table, env, steps)
    return table, env, steps


def measure_ceilings(device: str | torch.device = "cuda") -> dict[str, float]:
    """The two ceilings: device-to-device copy bandwidth and a large bf16 matrix product."""
    dev = resolve_device(device)
    n_bytes = 2**31 if dev.type == "cuda" else 2**27
    src = torch.randn(n_bytes // 4, device=dev)
    dst = torch.empty_like(src)

    def timed(fn, reps: int) -> float:
        for _ in range(3):
            fn()
        synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        synchronize(dev)
        return (time.perf_counter() - t0) / reps

    copy_s = timed(lambda: dst.copy_(src), 10)
    n = 8192 if dev.type == "cuda" else 1024
    a = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    mm_s = timed(lambda: a @ b, 10)
    return {"copy_tb_per_s": 2 * n_bytes / copy_s / 1e12, "bf16_matmul_tflops": 2 * n**3 / mm_s / 1e12,
            "copy_bytes": n_bytes, "matmul_n": n}


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """One line per dtype and compiled mode: speedup, compile latency, break-even."""
    cols = ["run", "dtype", "mode", "cache", "median_ms", "speedup", "compile_latency_s", "breakeven_steps",
            "peak_mem_mb", "graph_breaks", "recompiles", "loss_agrees"]
    return table[[c for c in cols if c in table.columns]].reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    """Measure a profile in this process and write its table."""
    ap = argparse.ArgumentParser(prog="python -m compile_ckpt.bench", description=main.__doc__)
    ap.add_argument("--profile", default="auto", choices=["auto", *PROFILES])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache", default="unknown", help="label for the compile cache state")
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    table, env, steps = run_profile(args.profile, device=args.device, cache=args.cache,
                                    progress=not args.no_progress,
                                    on_partial=lambda *r: write_results(args.out, *r))
    write_results(args.out, table, env, steps)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(summarize(table).to_string(index=False))
    return 0


def committed_results(root: str | Path | None = None) -> list[Path]:
    """Folders under ``results/`` that hold a benchmark table, newest first.

    Looks in ``root``, else in ``./results``, ``../results`` and the repository's results
    folder next to ``src/``.
    """
    candidates = [Path(root)] if root else [Path.cwd() / "results", Path.cwd().parent / "results",
                                            Path(__file__).resolve().parents[2] / "results"]
    for base in candidates:
        found = sorted((p.parent for p in base.glob("*/bench.json")), reverse=True)
        if found:
            return found
    return []


def verdict(table: pd.DataFrame, claim: tuple[float, float] = (0.15, 0.25)) -> list[str]:
    """Sentences comparing each measured compiled mode with the seed's claim that eager
    pretraining is 15-25% slower (i.e. compile speeds steps up by 1.15-1.25x)."""
    lo, hi = claim
    lines = []
    for _, r in table[table["mode"] != EAGER].iterrows():
        gain = r["speedup"] - 1
        where = ("within" if lo <= gain <= hi else "below" if gain < lo else "above")
        pay = (f"pays back its {r['compile_latency_s']:.1f}s of compiling after {int(r['breakeven_steps'])} steps"
               if r["breakeven_steps"] is not None and not pd.isna(r["breakeven_steps"])
               else "never pays back its compile time")
        lines.append(f"{r['device']} {r['dtype']} {r['mode']} ({r['cache']} cache): steps {gain:+.0%} "
                     f"faster than eager, {where} the claimed {lo:.0%}-{hi:.0%}; {pay}.")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
