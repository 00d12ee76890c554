"""Benchmark pretraining steps, eager against ``torch.compile``, for the CLI, the GPU script
and notebook 05's larger runs.

The method is the one notebook 05 writes out in a few lines: synchronise before reading the
clock, warm up (compiling happens there; the first compiled step's time is the latency),
then interleave eager and compiled repeats, rotating which goes first, and take medians. A
speedup is the median of the paired per-repeat ratios ``eager / compiled``, with a bootstrap
95% interval; an interval that covers 1.0 means no measurable difference.

Two workloads: ``seed`` (the workshop's regression model, MSE) and ``gpt`` (a decoder-only
transformer, next-token loss, fused AdamW where the device has it, bf16 autocast on GPU). Each
measurement runs in a fresh process per *route*: ``cold`` (a new Inductor cache), ``warm``
(the cold run's cache: FX-graph and AOTAutograd hits), ``mega-cache`` (a new cache, primed with
``torch.compiler.load_cache_artifacts`` from what the cold run saved with
``save_cache_artifacts``) and, for ``gpt``, ``regional`` (a new cache; each transformer block
compiled with ``block.compile()`` instead of the whole model). On a CPU, the first compile in an
empty cache also probes the CPU's vector instructions (seconds of test compiles, once per cache
directory): the cold route times that probe apart (``cpu_probe_s``) before its first step, and
the other new caches start from its result, so each first step is the model's compile alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checkpoint import atomic_write
from .data import token_batches
from .env import device_name, resolve_device, run_process, synchronize, versions
from .gpt import GPTConfig, build_gpt, flops_per_token
from .model import ModelConfig, build_model

EAGER, REGIONAL = "eager", "regional"
#: Where the cold route leaves a cache holding only Inductor's probe of this CPU, for the other
#: fresh caches to start from: the probe is the machine's, once per cache directory, not the model's.
CPU_PROBE = "cpu-probe-cache"
ROUTES = {"seed": ("cold", "warm"), "gpt": ("cold", "warm", "mega-cache", "regional")}
#: Relative tolerance on per-step loss agreement between compiled and eager, by dtype.
LOSS_RTOL = {"float32": 1e-3, "bf16": 5e-2}
#: The original write-up's claim: without compile, pretraining is 15-25% slower.
CLAIM = (1.15, 1.25)
#: How a verdict names each workload ("seed" is the CLI's name for the write-up's model).
WORKLOAD_LABELS = {"seed": "workshop model", "gpt": "GPT"}


@dataclasses.dataclass(frozen=True)
class Profile:
    """What to measure: workload, model size, batch, modes, dtypes, variants and repeats."""

    name: str
    workload: str
    model: ModelConfig | GPTConfig
    batch_size: int
    modes: tuple[str, ...]
    dtypes: tuple[str, ...]
    warmup_steps: int
    repeats: int
    steps_per_repeat: int = 1
    variants: tuple[str, ...] = ("",)  # gpt: the attention variants


_SEED_GPU = ModelConfig(signal_channels=16, signal_length=1024, cnn_channels=(128, 256, 256, 256),
                        tabular_features=64, mlp_hidden=1024, head_hidden=2048, dropout=0.0)
_GPT2_SMALL = GPTConfig(vocab_size=50304, seq_len=1024, d_model=768, n_layer=12, n_head=12)
_DEFAULT, _GPU_MODES = (EAGER, "default"), (EAGER, "default", "reduce-overhead")
_BOTH = ("manual", "sdpa")
PROFILES: dict[tuple[str, str], Profile] = {(p.workload, p.name): p for p in (
    Profile("cpu-smoke", "seed", ModelConfig(signal_length=32, cnn_channels=(8,), mlp_hidden=16, head_hidden=16,
                                             dropout=0.0), 16, _DEFAULT, ("float32",), 2, 4, 2),
    Profile("laptop", "seed", ModelConfig(signal_length=128, cnn_channels=(32, 64), dropout=0.0), 64, _DEFAULT,
            ("float32",), 3, 15, 4),
    Profile("gpu", "seed", _SEED_GPU, 256, _GPU_MODES, ("float32", "bf16"), 5, 30, 5),
    # Autotuning spent over 9 minutes of a 15-minute H200 lease on this model (2026-11-28): last, alone.
    Profile("gpu-autotune", "seed", _SEED_GPU, 256, (EAGER, "max-autotune-no-cudagraphs"), ("float32", "bf16"),
            5, 30, 5),
    Profile("cpu-smoke", "gpt", GPTConfig(256, 32, 32, 2, 2), 4, _DEFAULT, ("float32",), 2, 4, 1, ("manual",)),
    Profile("laptop", "gpt", GPTConfig(256, 64, 64, 2, 2), 8, _DEFAULT, ("float32",), 2, 8, 1, ("manual",)),
    Profile("gpu", "gpt", _GPT2_SMALL, 16, _GPU_MODES, ("bf16",), 3, 20, 2, _BOTH),
)}


def profiles(workload: str) -> list[str]:
    """The profile names of a workload."""
    return [name for (w, name) in PROFILES if w == workload]


def resolve_profile(workload: str, name: str, device: torch.device) -> Profile:
    """``auto`` is ``gpu`` on CUDA and ``laptop`` otherwise."""
    name = ("gpu" if device.type == "cuda" else "laptop") if name == "auto" else name
    if (workload, name) not in PROFILES:
        raise ValueError(f"unknown profile {name!r} for workload {workload!r}; choose from {profiles(workload)}")
    return PROFILES[(workload, name)]


@dataclasses.dataclass
class Task:
    """One workload made concrete: how to build the model, the batches, one training step."""

    build: Callable[[], torch.nn.Module]
    batches: list[tuple[torch.Tensor, ...]]
    loss: Callable[[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]], torch.Tensor]
    items_per_step: int
    unit: str  # "tokens" (gpt) or "samples" (seed)
    flops_per_step: float


def make_task(profile: Profile, variant: str, device: torch.device) -> Task:
    """The model, data and loss of ``profile`` (``variant``: gpt attention) on ``device``."""
    b = profile.batch_size
    if profile.workload == "gpt":
        cfg = dataclasses.replace(profile.model, attention=variant)
        batches = token_batches(cfg.vocab_size, cfg.seq_len, b, 4, device=device)
        return Task(lambda: build_gpt(cfg).to(device), batches,
                    lambda fn, batch: F.cross_entropy(fn(batch[0]).float().flatten(0, 1), batch[1].flatten()),
                    b * cfg.seq_len, "tokens", flops_per_token(cfg) * b * cfg.seq_len)
    c, g = profile.model, torch.Generator().manual_seed(0)
    batches = [tuple(t.to(device) for t in (torch.randn(b, c.signal_channels, c.signal_length, generator=g),
                                            torch.randn(b, c.tabular_features, generator=g),
                                            torch.randn(b, generator=g))) for _ in range(4)]
    return Task(lambda: build_model(c).to(device), batches,
                lambda fn, batch: F.mse_loss(fn(batch[0], batch[1]).float(), batch[2]), b, "samples",
                _counted_flops(lambda: build_model(c).to(device), batches[0]))


def _counted_flops(build: Callable[[], torch.nn.Module], batch: tuple[torch.Tensor, ...]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = build()
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(model(batch[0], batch[1]), batch[2]).backward()
    return float(counter.get_total_flops())


class Runner:
    """One model and optimizer, trained step by step in one mode and dtype."""

    def __init__(self, task: Task, mode: str, dtype: str, device: torch.device) -> None:
        self.task, self.dtype, self.device, self.i = task, dtype, device, 0
        self.model = task.build().train()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, fused=True)  # fused: on CPU and CUDA
        if mode == REGIONAL:  # compile the repeated blocks in place, not the whole model
            for block in self.model.blocks:
                block.compile()
            self.fn = self.model
        else:
            self.fn = self.model if mode == EAGER else torch.compile(self.model, mode=mode)

    def step(self) -> torch.Tensor:
        batch = self.task.batches[self.i % len(self.task.batches)]
        self.i += 1
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            loss = self.task.loss(self.fn, batch)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


def _graphs() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {"unique_graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "cache_hits": int(counters["aot_autograd"]["autograd_cache_hit"]),  # compiled graphs found in a cache
            "cache_misses": int(counters["aot_autograd"]["autograd_cache_miss"])}


def warm_up(runner: Runner, steps: int) -> dict[str, Any]:
    """The first steps; the first one's time includes compiling."""
    from torch._dynamo.utils import counters

    counters.clear()
    if runner.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(runner.device)
    synchronize(runner.device)
    t0 = time.perf_counter()
    losses = [float(runner.step())]
    synchronize(runner.device)
    first, after_first = time.perf_counter() - t0, _graphs()
    losses += [float(runner.step()) for _ in range(steps - 1)]
    peak = torch.cuda.max_memory_allocated(runner.device) / 2**20 if runner.device.type == "cuda" else None
    return {"first_step_s": first, "losses": losses, "peak_mem_mb": peak, **_graphs(),
            "recompiles": _graphs()["unique_graphs"] - after_first["unique_graphs"]}


def interleave(runners: dict[str, Runner], repeats: int, steps: int, progress: bool = False) -> dict[str, list[float]]:
    """Seconds per step of each runner, ``repeats`` times, taking turns and rotating who goes first."""
    names, times = list(runners), {n: [] for n in runners}
    for r in tqdm(range(repeats), desc="interleaved repeats", disable=not progress, leave=False):
        for name in names[r % len(names):] + names[:r % len(names)]:
            synchronize(runners[name].device)
            t0 = time.perf_counter()
            for _ in range(steps):
                runners[name].step()
            synchronize(runners[name].device)
            times[name].append((time.perf_counter() - t0) / steps)
    return times


def speedup_interval(eager: list[float], compiled: list[float], n: int = 2000, seed: int = 0
                     ) -> tuple[float, float, float]:
    """Median of the paired per-repeat ratios eager/compiled, and its bootstrap 95% interval."""
    ratios = [e / c for e, c in zip(eager, compiled, strict=True)]
    rng = random.Random(seed)
    boot = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(n))
    return statistics.median(ratios), boot[int(0.025 * n)], boot[int(0.975 * n) - 1]


def use_tensor_cores(device: torch.device) -> None:
    """On a GPU, float32 matrix products and convolutions run on TF32 tensor cores."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True


def measure(profile: Profile, route: str, device: torch.device, progress: bool = False
            ) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Every variant, dtype and mode of ``profile`` in this process (``route`` labels it; the
    regional route measures eager against block-wise compilation). Rows and per-step times."""
    modes = (EAGER, REGIONAL) if route == REGIONAL else profile.modes
    use_tensor_cores(device)
    rows, step_times = [], {}
    for variant in profile.variants:
        task = make_task(profile, variant, device)
        for dtype in profile.dtypes:
            torch._dynamo.reset()
            runners = {m: Runner(task, m, dtype, device) for m in modes}
            warm = {m: warm_up(r, profile.warmup_steps) for m, r in runners.items()}
            times = interleave(runners, profile.repeats, profile.steps_per_repeat, progress)
            for m in modes:
                key = "/".join(x for x in (variant, dtype, m) if x)
                step_times[key] = times[m]
                rows.append(_row(profile, route, variant, dtype, m, task, warm, times))
            del runners
    return rows, step_times


def _row(p: Profile, route: str, variant: str, dtype: str, mode: str, task: Task, warm: dict[str, Any],
         times: dict[str, list[float]]) -> dict[str, Any]:
    med = statistics.median(times[mode])
    q = statistics.quantiles(times[mode], n=4) if len(times[mode]) > 1 else [med, med, med]
    diff = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(warm[EAGER]["losses"], warm[mode]["losses"],
                                                                strict=True))
    return {"workload": p.workload, "profile": p.name, "route": route, "variant": variant or "-", "dtype": dtype,
            "mode": mode, "first_step_s": warm[mode]["first_step_s"], "median_ms": med * 1e3, "p25_ms": q[0] * 1e3,
            "p75_ms": q[2] * 1e3, f"{task.unit}_per_s": task.items_per_step / med, "achieved_tflops":
            task.flops_per_step / med / 1e12, "loss_max_rel_diff": diff, "loss_rtol": LOSS_RTOL.get(dtype, 1e-3),
            "loss_agrees": diff <= LOSS_RTOL.get(dtype, 1e-3), "graph_breaks": warm[mode]["graph_breaks"],
            "recompiles": warm[mode]["recompiles"], "cache_hits": warm[mode]["cache_hits"],
            "cache_misses": warm[mode]["cache_misses"], "peak_mem_mb": warm[mode]["peak_mem_mb"],
            "eager_times_s": times[EAGER], "times_s": times[mode]}


def measure_ceilings(device: str | torch.device = "auto") -> dict[str, float]:
    """Device-to-device copy bandwidth and the bf16 and float32 matrix-product ceilings that MFU
    is measured against (float32 on TF32 tensor cores on a GPU, as the benchmark runs it)."""
    dev = resolve_device(device)
    use_tensor_cores(dev)
    n_bytes, n = (2**31, 8192) if dev.type == "cuda" else (2**26, 1024)
    src = torch.randn(n_bytes // 4, device=dev)
    dst = torch.empty_like(src)

    def timed(fn: Callable[[], Any], reps: int = 10) -> float:
        for _ in range(3):
            fn()
        synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        synchronize(dev)
        return (time.perf_counter() - t0) / reps

    out = {"copy_tb_per_s": 2 * n_bytes / timed(lambda: dst.copy_(src)) / 1e12, "matmul_n": n}
    for name, dtype in (("bf16", torch.bfloat16), ("float32", torch.float32)):
        a, b = (torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2))
        out[f"{name}_matmul_tflops"] = 2 * n**3 / timed(lambda: a @ b) / 1e12  # noqa: B023
    return out


def pool(rows: list[dict[str, Any]], ceilings: dict[str, float]) -> pd.DataFrame:
    """One table. Per route: its first step (the compile latency) and its own medians. Per
    (variant, dtype, mode): one steady-state comparison, the median of the paired per-repeat
    ratios pooled over the routes that ran the same compiled code (regional alone), with its
    interval. A step time, throughput and MFU are then derived from one eager step time (the
    median over every process) divided by that speedup, so a process that ran slow as a whole
    moves neither; break-even steps follow from them."""
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    out = []
    for (variant, dtype, mode), g in table.groupby(["variant", "dtype", "mode"], sort=False):
        same = table[(table["variant"] == variant) & (table["dtype"] == dtype)]
        eager_s = statistics.median(t for ts in same["eager_times_s"] for t in ts)
        eager = [t for ts in g["eager_times_s"] for t in ts]  # paired with this comparison's own steps
        s, lo, hi = speedup_interval(eager, [t for ts in g["times_s"] for t in ts]) if mode != EAGER else (1, 1, 1)
        step_s = eager_s / s
        ceiling = ceilings.get(f"{dtype}_matmul_tflops") or ceilings.get("float32_matmul_tflops")
        for _, r in g.iterrows():
            own = r["median_ms"] / 1e3
            be = math.ceil((r["first_step_s"] - step_s) / (eager_s - step_s)) if mode != EAGER and s > 1 else None
            unit = "tokens_per_s" if "tokens_per_s" in r and r["tokens_per_s"] == r["tokens_per_s"] else "samples_per_s"
            flops = r["achieved_tflops"] * own / step_s
            out.append({**r.drop(["eager_times_s", "times_s"]).to_dict(), "speedup": s, "ci_low": lo, "ci_high": hi,
                        "pooled_step_ms": step_s * 1e3, "breakeven_steps": be, unit: r[unit] * own / step_s,
                        "achieved_tflops": flops, "mfu": flops / ceiling if ceiling else None})
    return pd.DataFrame(out)


def verdict(table: pd.DataFrame, claim: tuple[float, float] = CLAIM) -> list[str]:
    """One sentence per compiled mode on the original write-up's claim (compile is 1.15-1.25x faster),
    carrying the interval; "no measurable difference" when the interval covers 1.0."""
    lines = []
    first = table.drop_duplicates(["workload", "variant", "dtype", "mode"])
    for _, r in first[first["mode"] != EAGER].iterrows():
        name = WORKLOAD_LABELS.get(r["workload"], r["workload"])
        what = f"{name}{'' if r['variant'] == '-' else ' ' + r['variant']} {r['dtype']} {r['mode']}"
        ci = f"{r['speedup']:.2f}x (95% interval {r['ci_low']:.2f}-{r['ci_high']:.2f})"
        if r["ci_low"] <= 1.0 <= r["ci_high"]:
            lines.append(f"{what}: {ci}: no measurable difference from eager; the claimed "
                         f"{claim[0]:.2f}-{claim[1]:.2f}x is not seen here.")
            continue
        where = ("within" if claim[0] <= r["ci_low"] and r["ci_high"] <= claim[1] else
                 "below" if r["ci_high"] < claim[0] else "above" if r["ci_low"] > claim[1] else "overlapping")
        lines.append(f"{what}: {ci} {'faster' if r['speedup'] > 1 else 'slower'} than eager; {where} the claimed "
                     f"{claim[0]:.2f}-{claim[1]:.2f}x.")
    return lines


def environment(device: torch.device, profile: Profile) -> dict[str, Any]:
    """Where, when and how the numbers were measured."""
    env = {"measured_at_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **versions(),
           "device": device.type, "device_name": device_name(device), "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "host": platform.node(), "profile": dataclasses.asdict(profile)}
    if device.type == "cuda":
        import subprocess

        props = torch.cuda.get_device_properties(device)
        env.update(capability=f"{props.major}.{props.minor}", device_memory_gib=round(props.total_memory / 2**30, 1))
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,clocks.sm,clocks.mem,clocks.max.sm,"
                              "power.draw,temperature.gpu", "--format=csv,noheader"], capture_output=True, text=True)
        env["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
    return env


def write_results(out: Path, table: pd.DataFrame, env: dict[str, Any], steps: dict[str, Any]) -> None:
    """``bench.csv``, ``step_times.json`` and ``bench.json`` (written last: it marks completion)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "bench.csv", lambda p: table.to_csv(p, index=False))
    atomic_write(out / "step_times.json", lambda p: p.write_text(json.dumps(steps)))
    record = {"environment": env, "rows": json.loads(table.to_json(orient="records"))}
    atomic_write(out / "bench.json", lambda p: p.write_text(json.dumps(record, indent=1)))


def load_results(folder: str | Path) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Read a folder written by :func:`write_results` (or by the 2026-11-28 harness, whose rows
    are brought to this layout: intervals recomputed from its interleaved step times)."""
    folder = Path(folder)
    data = json.loads((folder / "bench.json").read_text())
    steps_file = folder / "step_times.json"
    table, env = pd.DataFrame(data["rows"]), data["environment"]
    steps = json.loads(steps_file.read_text()) if steps_file.exists() else {}
    if "route" not in table.columns:
        ceilings = folder / "ceilings.json"
        env = {**env, "ceilings": json.loads(ceilings.read_text()) if ceilings.exists() else {}}
        table = _from_first_layout(table, steps, env)
    return table, env, steps


def _from_first_layout(table: pd.DataFrame, steps: dict[str, list[float]], env: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for _, r in table.iterrows():
        s, lo, hi = speedup_interval(steps[f"{r['dtype']}/eager"], steps[f"{r['dtype']}/{r['mode']}"])
        ceiling = env["ceilings"].get(f"{r['dtype']}_matmul_tflops")
        rows.append({"workload": "seed", "profile": r["profile"], "route": env.get("cache", r["cache"]),
                     "variant": "-", "dtype": r["dtype"], "mode": r["mode"], "first_step_s": r["first_step_s"],
                     "median_ms": r["median_ms"], "p25_ms": r["p25_ms"], "p75_ms": r["p75_ms"],
                     "samples_per_s": r["batch"] / r["median_ms"] * 1e3, "achieved_tflops": r["achieved_tflops"],
                     "loss_agrees": r["loss_agrees"], "graph_breaks": r["graph_breaks"], "recompiles": r["recompiles"],
                     "speedup": s, "ci_low": lo, "ci_high": hi, "breakeven_steps": r["breakeven_steps"],
                     "mfu": r["achieved_tflops"] / ceiling if ceiling else None})
    return pd.DataFrame(rows)


def run_routes(workload: str, profile: str, out: str | Path, *, device: str = "auto", budget_s: float = 3600,
               routes: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Each route in a fresh process (cold, warm, mega-cache, regional; see the module doc),
    within ``budget_s`` seconds in all; write and return the pooled table and the environment.
    A route that overruns is killed with everything it started; ``env["incomplete"]`` says what
    is missing and why, and the table keeps what finished. Temporary caches are removed."""
    out, dev = Path(out), resolve_device(device)
    prof = resolve_profile(workload, profile, dev)
    routes = routes or ROUTES[workload]
    caches = {name: Path(tempfile.mkdtemp(prefix=f"inductor-{name}-")) for name in ("shared", "fresh")}
    deadline, rows, steps, incomplete = time.monotonic() + budget_s, [], {}, []
    try:
        ceilings = measure_ceilings(dev)
        for route in tqdm(routes, desc=f"{workload} {prof.name}: one process per route", unit="route"):
            if route in ("warm", "mega-cache") and "cold" in routes and not any(r["route"] == "cold" for r in rows):
                incomplete.append(f"{route} route not started: it needs what the cold route leaves, and that did "
                                  "not complete")
                continue
            part, why = _run_route(route, prof, dev, caches, deadline - time.monotonic())
            if why:
                incomplete.append(why)
            rows += part.get("rows", [])
            steps.update({f"{route}/{k}": v for k, v in part.get("steps", {}).items()})
    finally:
        for folder in caches.values():
            shutil.rmtree(folder, ignore_errors=True)
    table = pool(rows, ceilings)
    env = {**environment(dev, prof), "ceilings": ceilings, "routes": list(routes), "complete": not incomplete,
           "incomplete": incomplete}
    write_results(out, table, env, steps)
    return table, env


def _run_route(route: str, prof: Profile, dev: torch.device, caches: dict[str, Path],
               left: float) -> tuple[dict[str, Any], str]:
    """One route in a fresh process; its result and, if it did not finish, why."""
    cache = caches["shared"] if route in ("cold", "warm") else Path(tempfile.mkdtemp(dir=caches["fresh"]))
    if route not in ("cold", "warm") and (caches["fresh"] / CPU_PROBE).is_dir():  # the machine's probe, not the model's
        shutil.copytree(caches["fresh"] / CPU_PROBE, cache, dirs_exist_ok=True)
    result = caches["fresh"] / f"route-{route}.json"  # temporary, like the mega-cache bytes: not results
    cmd = [sys.executable, "-m", "compile_ckpt.workshop.bench", "--worker", route, "--workload", prof.workload,
           "--profile", prof.name, "--device", str(dev), "--out", str(result),
           "--artifacts", str(caches["fresh"] / "mega-cache.bin")]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache), "TRITON_CACHE_DIR": str(cache / "triton")}
    t0 = time.monotonic()
    try:
        code, output = run_process(cmd, timeout=left, env=env)
    except TimeoutError:
        return {}, f"{route} route stopped after {time.monotonic() - t0:.0f}s (budget {left:.0f}s): compiling " \
                   "took longer than the time left"
    if code != 0:
        raise RuntimeError(f"benchmark {route} route failed (exit {code}):\n{output[-3000:]}")
    return json.loads(result.read_text()), ""


def _probe_cpu(keep: Path) -> float:
    """Seconds Inductor takes to probe this CPU's vector instructions (it compiles a test program
    per instruction set, once per cache directory); a copy of that cache goes to ``keep``."""
    from torch._inductor.cpu_vec_isa import pick_vec_isa
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    t0 = time.perf_counter()
    pick_vec_isa()
    seconds = time.perf_counter() - t0
    shutil.copytree(cache_dir(), keep, dirs_exist_ok=True)
    return seconds


def _compiled_libraries() -> set[str]:
    """The shared libraries (compiled C++ kernels, Triton launchers) in this process's Inductor cache."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    return {str(p) for p in Path(cache_dir()).rglob("*.so")}


def worker(route: str, workload: str, profile: str, device: str, result: Path, artifacts: Path) -> None:
    """Inside a route's fresh process: measure, save or load the mega-cache, write JSON."""
    dev = resolve_device(device)
    prof = resolve_profile(workload, profile, dev)
    if route == "mega-cache":
        info = torch.compiler.load_cache_artifacts(artifacts.read_bytes())
        print(f"mega-cache: loaded {artifacts.stat().st_size} bytes of artifacts ({info})")
    probe_s = _probe_cpu(artifacts.parent / CPU_PROBE) if route == "cold" and dev.type == "cpu" else 0.0
    libraries = _compiled_libraries()
    rows, steps = measure(prof, route, dev)
    built = len(_compiled_libraries() - libraries)  # what this process had to compile with g++ (CPU) or Triton
    rows = [{**r, "libraries_built": built if r["mode"] != EAGER else 0,
             "cpu_probe_s": probe_s if r["mode"] != EAGER else 0.0} for r in rows]
    if route == "cold" and "mega-cache" in ROUTES[workload]:
        saved = torch.compiler.save_cache_artifacts()
        if saved is not None:
            atomic_write(artifacts, lambda p: p.write_bytes(saved[0]))
    atomic_write(result, lambda p: p.write_text(json.dumps({"rows": rows, "steps": steps})))


def cli(args: argparse.Namespace) -> int:
    """``compile-ckpt bench``: measure, print the table and the verdict; exit 1 if cut short."""
    out = Path(args.out)
    if args.cold_warm:
        table, env = run_routes(args.workload, args.profile, out, device=args.device, budget_s=args.budget_s)
    else:
        dev = resolve_device(args.device)
        prof = resolve_profile(args.workload, args.profile, dev)
        rows, steps = measure(prof, "in-process", dev, progress=True)
        env = {**environment(dev, prof), "ceilings": measure_ceilings(dev), "incomplete": []}
        table = pool(rows, env["ceilings"])
        write_results(out, table, env, steps)
    if not table.empty:
        print(summarize(table).to_string(index=False))
        print("\n".join(verdict(table)))
    for why in env.get("incomplete", []):
        print(f"compile-ckpt bench: incomplete: {why}", file=sys.stderr)
    print(f"tables in {out}")
    return 1 if env.get("incomplete") else 0


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """The columns a reader compares, rounded."""
    cols = ["workload", "variant", "dtype", "mode", "route", "first_step_s", "median_ms", "speedup", "ci_low",
            "ci_high", "breakeven_steps", "samples_per_s", "tokens_per_s", "mfu", "loss_agrees", "graph_breaks",
            "recompiles"]
    return table[[c for c in cols if c in table.columns]].round(3)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m compile_ckpt.workshop.bench")
    ap.add_argument("--worker", required=True, choices=["cold", "warm", "mega-cache", "regional"])
    ap.add_argument("--workload", required=True, choices=list(ROUTES))
    ap.add_argument("--profile", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--artifacts", required=True, type=Path)
    a = ap.parse_args(argv)
    worker(a.worker, a.workload, a.profile, a.device, a.out, a.artifacts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
