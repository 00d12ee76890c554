"""The measurement itself: warm-up, interleaved repeats, paired speedups, device ceilings."""

from __future__ import annotations

import contextlib
import random
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from tqdm.auto import tqdm

from ..env import resolve_device, synchronize
from .profiles import EAGER, REGIONAL, Profile, Task, TrainingStep, make_task

#: Relative tolerance on per-step loss agreement between compiled and eager, by dtype.
LOSS_RTOL = {"float32": 1e-3, "bf16": 5e-2}


@contextlib.contextmanager
def tensor_cores(device: torch.device) -> Iterator[None]:
    """Inside: on a GPU, float32 matrix products and convolutions run on TF32 tensor cores.
    On exit both switches are back as they were."""
    precision, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.backends.cudnn.allow_tf32 = cudnn


def _compiler_counters() -> dict[str, int]:
    from torch._dynamo.utils import counters

    aot = counters["aot_autograd"]
    return {
        "unique_graphs": int(counters["stats"]["unique_graphs"]),
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "cache_hits": int(aot["autograd_cache_hit"]),  # compiled graphs found in a cache
        "cache_misses": int(aot["autograd_cache_miss"]),
    }


def warm_up(step: TrainingStep, steps: int) -> dict[str, Any]:
    """The first steps; the first one's time includes compiling."""
    from torch._dynamo.utils import counters

    counters.clear()
    cuda = step.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(step.device)
    synchronize(step.device)
    t0 = time.perf_counter()
    losses = [float(step())]
    synchronize(step.device)
    first, after_first = time.perf_counter() - t0, _compiler_counters()
    losses += [float(step()) for _ in range(steps - 1)]
    now = _compiler_counters()
    return {
        "first_step_s": first,
        "losses": losses,
        **now,
        "peak_mem_mb": torch.cuda.max_memory_allocated(step.device) / 2**20 if cuda else None,
        "recompiles": now["unique_graphs"] - after_first["unique_graphs"],
    }


def interleave(
    steps: dict[str, Callable[[], Any]],
    device: torch.device,
    repeats: int,
    per_repeat: int,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Seconds per step of each function, ``repeats`` times, taking turns and rotating who
    goes first."""
    names, times = list(steps), {n: [] for n in steps}
    for r in tqdm(range(repeats), desc="interleaved repeats", disable=not progress, leave=False):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(per_repeat):
                steps[name]()
            synchronize(device)
            times[name].append((time.perf_counter() - t0) / per_repeat)
    return times


def speedup_interval(
    eager: list[float], compiled: list[float], n: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Median of the paired per-repeat ratios eager/compiled, and its bootstrap 95% interval."""
    ratios = [e / c for e, c in zip(eager, compiled, strict=True)]
    rng = random.Random(seed)
    boot = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(n))
    return statistics.median(ratios), boot[int(0.025 * n)], boot[int(0.975 * n) - 1]


def measure(
    profile: Profile, route: str, device: torch.device, progress: bool = False
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Every variant, dtype and mode of ``profile`` in this process (``route`` labels it; the
    regional route measures eager against block-wise compilation): rows and step times."""
    modes = (EAGER, REGIONAL) if route == REGIONAL else profile.modes
    rows, step_times = [], {}
    with tensor_cores(device):
        for variant in profile.variants:
            task = make_task(profile, variant, device)
            for dtype in profile.dtypes:
                torch._dynamo.reset()
                steps = {m: TrainingStep(task, m, dtype, device) for m in modes}
                warm = {m: warm_up(s, profile.warmup_steps) for m, s in steps.items()}
                times = interleave(
                    steps, device, profile.repeats, profile.steps_per_repeat, progress
                )
                for m in modes:
                    step_times["/".join(x for x in (variant, dtype, m) if x)] = times[m]
                    rows.append(_row(profile, route, (variant, dtype, m), task, warm, times))
                del steps
    return rows, step_times


def _row(
    p: Profile,
    route: str,
    what: tuple[str, str, str],
    task: Task,
    warm: dict[str, Any],
    times: dict[str, list[float]],
) -> dict[str, Any]:
    variant, dtype, mode = what
    med = statistics.median(times[mode])
    q = statistics.quantiles(times[mode], n=4) if len(times[mode]) > 1 else [med] * 3
    diff = max(
        abs(a - b) / max(abs(a), 1e-12)
        for a, b in zip(warm[EAGER]["losses"], warm[mode]["losses"], strict=True)
    )
    rtol = LOSS_RTOL.get(dtype, 1e-3)
    counted = ("graph_breaks", "recompiles", "cache_hits", "cache_misses", "peak_mem_mb")
    return {
        "workload": p.workload,
        "profile": p.name,
        "route": route,
        "variant": variant or "-",
        "dtype": dtype,
        "mode": mode,
        "first_step_s": warm[mode]["first_step_s"],
        "median_ms": med * 1e3,
        "p25_ms": q[0] * 1e3,
        "p75_ms": q[2] * 1e3,
        f"{task.unit}_per_s": task.items_per_step / med,
        "achieved_tflops": task.flops_per_step / med / 1e12,
        "loss_max_rel_diff": diff,
        "loss_rtol": rtol,
        "loss_agrees": diff <= rtol,
        **{k: warm[mode][k] for k in counted},
        "eager_times_s": times[EAGER],
        "times_s": times[mode],
    }


def measure_ceilings(device: str | torch.device = "auto") -> dict[str, float]:
    """Device-to-device copy bandwidth and the bf16 and float32 matrix-product ceilings that MFU
    is measured against (float32 on TF32 tensor cores on a GPU, as the benchmark runs it)."""
    dev = resolve_device(device)
    n_bytes, n = (2**31, 8192) if dev.type == "cuda" else (2**26, 1024)

    def timed(fn: Callable[[], Any], reps: int = 10) -> float:
        for _ in range(3):
            fn()
        synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        synchronize(dev)
        return (time.perf_counter() - t0) / reps

    with tensor_cores(dev):
        src = torch.randn(n_bytes // 4, device=dev)
        dst = torch.empty_like(src)
        out = {"copy_tb_per_s": 2 * n_bytes / timed(lambda: dst.copy_(src)) / 1e12, "matmul_n": n}
        src = dst = None  # frees 4 GiB of GPU memory before the matrix products
        for name, dtype in (("bf16", torch.bfloat16), ("float32", torch.float32)):
            a, b = (torch.randn(n, n, device=dev, dtype=dtype) for _ in range(2))
            out[f"{name}_matmul_tflops"] = 2 * n**3 / timed(lambda: a @ b) / 1e12  # noqa: B023
    return out
