"""The seed's sibling problems, run for real: CUDA graphs (``mode="reduce-overhead"``)
overwriting outputs, and activation checkpointing under ``torch.compile``.

Each function returns plain dicts (JSON-ready) so notebooks record them and the GPU
script commits them under ``results/``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .checkpoint import clean_state_dict, load_checkpoint
from .env import resolve_device, synchronize
from .model import ModelConfig, build_model

CUDA_GRAPH_SKIP_REASON = ("CUDA graphs need a CUDA GPU; this machine has none, so the "
                          "reduce-overhead experiments were skipped")

#: Big enough that activations dominate memory, small enough for a laptop.
AC_MODEL = ModelConfig(signal_channels=8, signal_length=2048, cnn_channels=(64, 64, 64, 64),
                       dropout=0.0)


def _timed(fn: Callable[[], Any], dev: torch.device, reps: int) -> float:
    """Median seconds per call of ``fn`` after three warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        synchronize(dev)
        t0 = time.perf_counter()
        fn()
        synchronize(dev)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def cudagraph_pitfalls(device: str | torch.device = "auto", *, batch: int = 256,
                       reps: int = 30) -> dict[str, Any]:
    """Reproduce "accessing tensor output of CUDAGraphs that has been overwritten by a
    subsequent run" and measure each fix. On a machine without CUDA: a skip record."""
    dev = resolve_device(device)
    if dev.type != "cuda":
        return {"skipped": True, "reason": CUDA_GRAPH_SKIP_REASON}
    cfg = ModelConfig(signal_length=512, cnn_channels=(64, 128), dropout=0.0)
    base = build_model(cfg, seed=0).to(dev).eval()
    g = torch.Generator().manual_seed(0)
    xs = [tuple(t.to(dev) for t in (torch.randn(batch, cfg.signal_channels, cfg.signal_length, generator=g),
                                     torch.randn(batch, cfg.tabular_features, generator=g)))
          for _ in range(2)]
    out: dict[str, Any] = {"skipped": False, "device_name": torch.cuda.get_device_name(dev)}

    # 1. The error: keep the output of call 1, make call 2, read output 1.
    torch._dynamo.reset()
    ro = torch.compile(base, mode="reduce-overhead")
    with torch.no_grad():
        for _ in range(3):  # warm up and record the graph
            ro(*xs[0])
        try:
            first = ro(*xs[0])
            second = ro(*xs[1])
            _ = (first - second).abs().sum().item()
            out["error"] = None
        except RuntimeError as exc:
            out["error"] = str(exc).splitlines()[0]
            out["error_traceback"] = traceback.format_exc()[-3000:]

    def pair(fn: Callable[[tuple[torch.Tensor, ...]], torch.Tensor], mark: bool = False) -> Callable[[], float]:
        def run() -> float:
            if mark:
                torch.compiler.cudagraph_mark_step_begin()
            a = fn(xs[0])
            if mark:
                torch.compiler.cudagraph_mark_step_begin()
            b = fn(xs[1])
            return (a - b).abs().sum().item()
        return run

    fixes: dict[str, dict[str, Any]] = {}
    variants: list[tuple[str, str | None, Callable[[nn.Module], Callable[..., torch.Tensor]], bool]] = [
        ("eager (no compile)", None, lambda m: (lambda x: m(*x)), False),
        ('mode="default" (the seed\'s fix)', "default", lambda m: (lambda x: m(*x)), False),
        ("reduce-overhead + clone outputs", "reduce-overhead", lambda m: (lambda x: m(*x).clone()), False),
        ("reduce-overhead + cudagraph_mark_step_begin", "reduce-overhead", lambda m: (lambda x: m(*x)), True),
    ]
    reference = None
    for name, mode, wrap, mark in variants:
        torch._dynamo.reset()
        model = base if mode is None else torch.compile(base, mode=mode)
        fn = wrap(model)
        with torch.no_grad():
            try:
                value = pair(fn, mark)()
                sec = _timed(pair(fn, mark), dev, reps)
                reference = value if reference is None else reference
                fixes[name] = {"works": True, "ms_per_pair": sec * 1e3,
                               "value_matches_eager": abs(value - reference) <= 1e-3 * max(abs(reference), 1)}
            except RuntimeError as exc:
                fixes[name] = {"works": False, "error": str(exc).splitlines()[0]}
    eager_ms = fixes["eager (no compile)"]["ms_per_pair"]
    for f in fixes.values():
        if f.get("works"):
            f["speedup_vs_eager"] = eager_ms / f["ms_per_pair"]
    out["fixes"] = fixes
    out["ragged_batches"] = _ragged_batches(cfg, dev)
    return out


def _ragged_batches(cfg: ModelConfig, dev: torch.device, n: int = 1000, batch: int = 96) -> dict[str, Any]:
    """A last batch of another size makes reduce-overhead recompile and re-record; compare
    that with ``drop_last`` and with padding the last batch to full size."""
    from torch._dynamo.utils import counters

    g = torch.Generator().manual_seed(1)
    sig = torch.randn(n, cfg.signal_channels, cfg.signal_length, generator=g).to(dev)
    tab = torch.randn(n, cfg.tabular_features, generator=g).to(dev)
    base = build_model(cfg, seed=0).to(dev).eval()
    result = {}
    for name in ("ragged last batch", "drop_last", "pad last batch"):
        torch._dynamo.reset()
        counters.clear()
        model = torch.compile(base, mode="reduce-overhead")
        synchronize(dev)
        t0 = time.perf_counter()
        with torch.no_grad():
            for _epoch in range(3):
                for i in range(0, n, batch):
                    s, t = sig[i:i + batch], tab[i:i + batch]
                    if s.shape[0] < batch:
                        if name == "drop_last":
                            continue
                        if name == "pad last batch":
                            pad = batch - s.shape[0]
                            s = torch.cat([s, s.new_zeros(pad, *s.shape[1:])])
                            t = torch.cat([t, t.new_zeros(pad, *t.shape[1:])])
                    model(s, t).clone()
        synchronize(dev)
        result[name] = {"seconds_3_epochs": time.perf_counter() - t0,
                        "unique_graphs": int(counters["stats"]["unique_graphs"]),
                        "samples_seen_per_epoch": n - (n % batch if name == "drop_last" else 0)}
    return result


# ----------------------------------------------------------- activation checkpointing
def _ac_step(checkpointing: bool, compiled: bool, dev: torch.device, batch: int,
             config: ModelConfig = AC_MODEL) -> tuple[float, dict[str, torch.Tensor]]:
    cfg = dataclasses.replace(config, activation_checkpointing=checkpointing)
    model = build_model(cfg, seed=0).to(dev).train()
    fn = torch.compile(model) if compiled else model
    g = torch.Generator().manual_seed(0)
    sig = torch.randn(batch, cfg.signal_channels, cfg.signal_length, generator=g).to(dev)
    tab = torch.randn(batch, cfg.tabular_features, generator=g).to(dev)
    y = torch.randn(batch, generator=g).to(dev)
    loss = nn.functional.mse_loss(fn(sig, tab), y)
    loss.backward()
    grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters()}
    return loss.item(), grads


def activation_checkpointing_check(device: str | torch.device = "auto", *, batch: int = 64,
                                   compiled: bool = True) -> dict[str, Any]:
    """Loss and gradients with and without checkpointing (must agree), and peak memory of
    each (GPU: max_memory_allocated in this process; CPU: peak RSS of a fresh process)."""
    dev = resolve_device(device)
    l0, g0 = _ac_step(False, compiled, dev, batch)
    l1, g1 = _ac_step(True, compiled, dev, batch)
    grad_diff = max((g0[k] - g1[k]).abs().max().item() for k in g0)
    mem = {flag: _ac_peak(flag, compiled, dev, batch) for flag in (False, True)}
    return {"device": dev.type, "compiled": compiled, "batch": batch,
            "loss_plain": l0, "loss_checkpointed": l1, "loss_abs_diff": abs(l0 - l1),
            "grad_max_abs_diff": grad_diff, "peak_mb_plain": mem[False] / 2**20,
            "peak_mb_checkpointed": mem[True] / 2**20,
            "memory_saved_mb": (mem[False] - mem[True]) / 2**20,
            "memory_measure": "torch.cuda.max_memory_allocated (compiled)" if dev.type == "cuda"
            else "peak RSS growth of a fresh process over one eager step"}


def _ac_peak(checkpointing: bool, compiled: bool, dev: torch.device, batch: int) -> int:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        _ac_step(checkpointing, compiled, dev, batch)
        return torch.cuda.max_memory_allocated(dev) - before
    # On CPU the figure is taken in eager mode: the compiler's own memory in the same
    # process would swamp the activations (loss and gradients above are checked compiled).
    code = ("import json,sys; from compile_ckpt.pitfalls import _ac_child; "
            f"print(json.dumps(_ac_child({checkpointing}, False, {batch})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"activation-checkpointing child failed:\n{proc.stderr[-2000:]}")
    return int(json.loads(proc.stdout.strip().splitlines()[-1]))


def _ac_child(checkpointing: bool, compiled: bool, batch: int) -> int:
    """In a fresh process: how far RSS rises above its level just before one training step
    (bytes), sampled every millisecond on a thread (``ru_maxrss`` would keep the import's
    peak, which can exceed the step's)."""
    import threading

    import psutil

    dev = torch.device("cpu")
    if compiled:  # compile (and warm the cache) first, so the compiler's memory is not counted
        _ac_step(checkpointing, compiled, dev, 2)
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        _ac_step(checkpointing, compiled, dev, batch)
    finally:
        done.set()
        t.join()
    return max(peak[0], proc.memory_info().rss) - base


def use_reentrant_warning() -> str:
    """The warning PyTorch gives when ``use_reentrant`` is not passed explicitly."""
    from torch.utils.checkpoint import checkpoint

    lin = nn.Linear(4, 4)
    x = torch.randn(2, 4, requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpoint(lin, x)
    msgs = [str(w.message) for w in caught if "use_reentrant" in str(w.message)]
    return msgs[0] if msgs else "(no warning: this PyTorch requires use_reentrant explicitly or changed the default)"


def checkpoint_wrapper_keys() -> dict[str, Any]:
    """Keys of a model whose blocks are wrapped by ``checkpoint_wrapper``: the state dict
    hides the wrapper's prefix, named parameters do not; a save loads into a plain model."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    model = build_model(seed=0)
    model.cnn_layers = checkpoint_wrapper(model.cnn_layers)
    compiled = torch.compile(model, backend="eager")
    plain = build_model(seed=1)
    report = load_checkpoint(compiled.state_dict(), plain)
    cleaned, _ = clean_state_dict(dict(compiled.named_parameters()))
    return {"state_dict_keys": list(compiled.state_dict())[:3],
            "named_parameter_keys": [n for n, _ in compiled.named_parameters()][:3],
            "cleaned_named_parameter_keys": list(cleaned)[:3],
            "loads_into_plain": report.ok, "report": str(report)}


def committed_gpu_record(name: str) -> tuple[dict[str, Any] | None, str]:
    """The newest ``results/<gpu>-<date>/<name>.json`` measured on a GPU, and its folder name."""
    from .bench import committed_results

    for folder in committed_results():
        path = folder / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text()), folder.name
    return None, ""


def cudagraph_results(device: str | torch.device = "auto") -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """Run the CUDA-graph experiments here if there is a GPU; return (this run's record,
    the results to show, where they come from). Without a GPU, the record says why it was
    skipped and the results shown are the newest committed GPU run, if any."""
    here = cudagraph_pitfalls(device)
    if not here["skipped"]:
        return here, here, f"this machine ({here['device_name']})"
    committed, folder = committed_gpu_record("cudagraphs")
    source = f"results/{folder} (measured on {committed['device_name']})" if committed else ""
    return here, committed, source
