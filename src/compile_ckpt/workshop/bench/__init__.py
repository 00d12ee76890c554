"""Benchmark pretraining steps, eager against ``torch.compile``, for the CLI, the GPU script
and notebook 05's larger runs.

The method is the one notebook 05 writes out: synchronise before reading the clock, warm up
(the first compiled step's time is the latency), then interleave eager and compiled repeats,
rotating which goes first, and take medians. A speedup is the median of the paired per-repeat
ratios ``eager / compiled`` with a bootstrap 95% interval; an interval that covers 1.0 means
no measurable difference. Workloads: ``seed`` (the workshop model, MSE) and ``gpt`` (a
decoder-only transformer, next-token loss, bf16 autocast on GPU); both train with AdamW, fused
where the device has the fused kernel.

By concern: :mod:`.profiles` (what is measured), :mod:`.timing` (how), :mod:`.results` (the
table, verdict and files) and :mod:`.routes` (one fresh process per compiler-cache route).
"""

from .profiles import PROFILES, WORKLOAD_LABELS, profiles, resolve_profile
from .results import CLAIM, compare, interval, load_results, pooled_table, summarize, verdict
from .routes import cli, run_routes
from .timing import measure, measure_ceilings, speedup_interval, tensor_cores

__all__ = [
    "CLAIM",
    "PROFILES",
    "WORKLOAD_LABELS",
    "cli",
    "compare",
    "interval",
    "load_results",
    "measure",
    "measure_ceilings",
    "pooled_table",
    "profiles",
    "resolve_profile",
    "run_routes",
    "speedup_interval",
    "summarize",
    "tensor_cores",
    "verdict",
]
