"""Every way to avoid the ``_orig_mod.`` problem, run for real and compared on facts.

Each :class:`Option` says how the model is compiled for training, how it is saved and how
it is loaded. :func:`compare_alternatives` runs each one through the same scenarios and
fills every column of the table from what happened.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from .checkpoint import WRAPPER_SEGMENTS, load_checkpoint, save_checkpoint, unwrap_model
from .distributed import single_process_group
from .model import ModelConfig, build_model, same_predictions
from .recipes import save_orig_mod, seed_clean_on_load

Saver = Callable[[nn.Module, Path], None]
Loader = Callable[[Path, nn.Module], None]


@dataclasses.dataclass(frozen=True)
class Option:
    """One recipe: how to compile for training, how to save, how to load."""

    name: str
    compile_style: str  # "wrap" (torch.compile(m)), "inplace" (m.compile()) or "none"
    save: Saver
    load: Loader
    compile_target_first: bool = False  # the recipe compiles the target before loading


def _torch_save_state(model: nn.Module, path: Path) -> None:
    torch.save({"model_state_dict": model.state_dict()}, path)


def _plain_load(path: Path, model: nn.Module) -> None:
    model.load_state_dict(torch.load(path, weights_only=True)["model_state_dict"])


def _seed_load(path: Path, model: nn.Module) -> None:
    model.load_state_dict(seed_clean_on_load(torch.load(path, weights_only=True)["model_state_dict"]))


def _library_load(path: Path, model: nn.Module) -> None:
    load_checkpoint(path, model)


def _orig_mod_save(model: nn.Module, path: Path) -> None:
    torch.save({"model_state_dict": save_orig_mod(model)}, path)


def _unwrap_save(model: nn.Module, path: Path) -> None:
    torch.save({"model_state_dict": unwrap_model(model).state_dict()}, path)


def _library_save(model: nn.Module, path: Path) -> None:
    save_checkpoint(path, model)


def _dcp_save(model: nn.Module, path: Path) -> None:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    torch.save({"model_state_dict": get_model_state_dict(model)}, path)


def _dcp_load(path: Path, model: nn.Module) -> None:
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, torch.load(path, weights_only=True)["model_state_dict"])


OPTIONS: tuple[Option, ...] = (
    Option("seed: clean on load", "wrap", _torch_save_state, _seed_load),
    Option("compile_ckpt.load_checkpoint (any file)", "wrap", _torch_save_state, _library_load),
    Option("compile_ckpt save_checkpoint + load_checkpoint", "wrap", _library_save, _library_load),
    Option("compile before loading", "wrap", _torch_save_state, _plain_load, compile_target_first=True),
    Option("save model._orig_mod.state_dict()", "wrap", _orig_mod_save, _plain_load),
    Option("unwrap_model before saving", "wrap", _unwrap_save, _plain_load),
    Option("in-place model.compile()", "inplace", _torch_save_state, _plain_load),
    Option("DCP get/set_model_state_dict", "wrap", _dcp_save, _dcp_load),
    Option("no compile during pretraining", "none", _torch_save_state, _plain_load),
)


# --------------------------------------------------------------- process group, tracking
@contextlib.contextmanager
def track_private_access() -> Iterator[list[str]]:
    """Record reads of ``OptimizedModule._orig_mod`` made by code outside torch and outside
    the library core (where it is read once, by design, in ``unwrap_model``)."""
    from torch._dynamo.eval_frame import OptimizedModule

    hits: list[str] = []
    original = OptimizedModule.__getattr__
    torch_dir = os.path.dirname(torch.__file__)
    core = os.path.join(os.path.dirname(__file__), "checkpoint.py")

    def spy(self: nn.Module, name: str) -> Any:
        if name == "_orig_mod":
            caller = inspect.currentframe().f_back  # type: ignore[union-attr]
            fname = caller.f_code.co_filename if caller else ""
            if not fname.startswith(torch_dir) and fname != core:
                hits.append(f"{os.path.basename(fname)}:{caller.f_lineno if caller else 0}")
        return original(self, name)

    OptimizedModule.__getattr__ = spy  # type: ignore[method-assign]
    try:
        yield hits
    finally:
        OptimizedModule.__getattr__ = original  # type: ignore[method-assign]


# --------------------------------------------------------------------- the experiment
def _source(option: Option, config: ModelConfig, kind: str) -> nn.Module:
    """A trained-looking source model in the wrapping the scenario asks for."""
    m = build_model(config, seed=0)
    if kind == "submodule":
        m.cnn_layers = torch.compile(m.cnn_layers, backend="eager") if option.compile_style != "none" \
            else m.cnn_layers
        if option.compile_style == "inplace":
            m.cnn_layers = build_model(config, seed=0).cnn_layers
            m.cnn_layers.compile(backend="eager")
        return m
    if option.compile_style == "wrap":
        m = torch.compile(m, backend="eager")
    elif option.compile_style == "inplace":
        m.compile(backend="eager")
    if kind == "ddp":
        m = DDP(m)
    return m


def _target(config: ModelConfig, compiled: bool) -> nn.Module:
    m = build_model(config, seed=1)
    return torch.compile(m, backend="eager") if compiled else m


@dataclasses.dataclass
class _Outcome:
    loaded: bool
    identical: bool | None  # None when nothing loaded
    note: str = ""


def _try(option: Option, src: nn.Module, dst: nn.Module, path: Path) -> _Outcome:
    try:
        option.save(src, path)
        option.load(path, dst)
    except Exception as exc:  # noqa: BLE001 - a failing recipe is a result, not a crash
        return _Outcome(False, None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    same = same_predictions(src, dst, batch=4)
    return _Outcome(True, same, "" if same else "loaded, but predictions differ")


def _legacy_loads(option: Option, config: ModelConfig, path: Path) -> bool:
    """Does the recipe's *loader* read a file saved the seed's way (``_orig_mod.`` keys)
    into the target it is meant for, with identical predictions?"""
    src = torch.compile(build_model(config, seed=0), backend="eager")
    _torch_save_state(src, path)
    dst = _target(config, option.compile_target_first)
    try:
        option.load(path, dst)
    except Exception:  # noqa: BLE001 - not loading is the answer
        return False
    return same_predictions(src, dst, batch=4)


def _clean_keys(path: Path) -> bool:
    keys = torch.load(path, weights_only=True)["model_state_dict"].keys()
    return not any(seg in k.split(".") for k in keys for seg in WRAPPER_SEGMENTS)


def compare_alternatives(workdir: str | os.PathLike[str], config: ModelConfig | None = None,
                         options: tuple[Option, ...] = OPTIONS, timing_reps: int = 5) -> pd.DataFrame:
    """Run every option through the scenarios; one row per option, every cell observed.

    Columns: loads into a fresh eager model, loads into a compiled model, handles a
    compiled submodule, handles DDP ``module.``, whether the recipe's own code reads
    ``_orig_mod``, whether the saved file's keys are clean, whether every load that worked
    gives bit-identical predictions, and the measured save+load time (into the target the
    recipe is meant for). Errors are kept in ``notes``.
    """
    config = config or ModelConfig()
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    with single_process_group():
        for i, opt in enumerate(options):
            scenarios = {"eager": ("plain", False), "compiled": ("plain", True),
                         "submodule": ("submodule", False), "ddp": ("ddp", False)}
            out: dict[str, _Outcome] = {}
            with track_private_access() as hits:
                for key, (kind, compiled) in scenarios.items():
                    out[key] = _try(opt, _source(opt, config, kind), _target(config, compiled),
                                    work / f"{i}_{key}.pt")
            clean = _clean_keys(work / f"{i}_eager.pt")
            legacy = _legacy_loads(opt, config, work / f"{i}_legacy.pt")
            loaded = [o for o in out.values() if o.loaded]
            target_compiled = opt.compile_target_first
            src, dst, path = _source(opt, config, "plain"), _target(config, target_compiled), work / f"{i}_t.pt"
            times = []
            for _ in range(timing_reps):
                t0 = time.perf_counter()
                try:
                    opt.save(src, path)
                    opt.load(path, dst)
                except Exception:  # noqa: BLE001 - timing only what runs
                    times = []
                    break
                times.append(time.perf_counter() - t0)
            rows.append({
                "option": opt.name,
                "loads into fresh eager model": out["eager"].loaded,
                "loads into compiled model": out["compiled"].loaded,
                # A recipe that never compiles has no compiled submodule to handle.
                "handles compiled submodule": (None if opt.compile_style == "none"
                                               else out["submodule"].loaded),
                "handles DDP module.": out["ddp"].loaded,
                "your code touches _orig_mod": bool(hits),
                "saved keys are clean": clean,
                "loads a legacy _orig_mod. file": legacy,
                "predictions identical after load": bool(loaded) and all(o.identical for o in loaded),
                "save+load ms": round(sorted(times)[len(times) // 2] * 1e3, 2) if times else None,
                "notes": "; ".join(f"{k}: {o.note}" for k, o in out.items() if o.note),
            })
    return pd.DataFrame(rows)


def compile_cost(config: ModelConfig | None = None, *, batch_size: int = 64, repeats: int = 10,
                 device: str = "auto", progress: bool = True) -> dict[str, float]:
    """What "no compile during pretraining" saves or costs here: steady-state step time
    eager vs compiled (inductor, default mode) and the compile time, measured side by side
    with the benchmark harness."""
    from .bench import Profile, run_profile

    prof = Profile("alternatives", config or ModelConfig(dropout=0.0), batch_size=batch_size,
                   modes=("eager", "default"), dtypes=("float32",), warmup_steps=2,
                   repeats=repeats, steps_per_repeat=3, n_batches=4)
    table, _, _ = run_profile(prof, device=device, progress=progress)
    eager, comp = table.iloc[0], table.iloc[1]
    return {"eager_step_ms": float(eager["median_ms"]), "compiled_step_ms": float(comp["median_ms"]),
            "speedup": float(comp["speedup"]), "compile_s": float(comp["compile_latency_s"]),
            "breakeven_steps": None if comp["breakeven_steps"] is None or pd.isna(comp["breakeven_steps"])
            else int(comp["breakeven_steps"])}


CHECKS = ("loads into fresh eager model", "loads into compiled model", "handles compiled submodule",
          "handles DDP module.", "saved keys are clean", "loads a legacy _orig_mod. file",
          "predictions identical after load")


def recommend(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rank the options by the checks they pass (a recipe whose own code reads the private
    ``_orig_mod`` loses a point), ties broken by save+load time; return the ranking and the
    recommendation as sentences drawn from it."""
    passed = table[list(CHECKS)].fillna(False).astype(bool)
    ranked = table.assign(**{"checks passed": passed.sum(axis=1) - table["your code touches _orig_mod"].astype(int)})
    ranked = ranked.sort_values(["checks passed", "save+load ms"], ascending=[False, True])

    def misses(idx: Any) -> list[str]:
        return [c for c in CHECKS if not passed.loc[idx, c]]

    best = ranked.iloc[0]
    lines = [f"Recommendation: {best.option} — passes {int(best['checks passed'])} of {len(CHECKS)} checks"
             + (f" (not: {', '.join(misses(best.name))})" if misses(best.name) else ", all of them") + "."]
    lines += [f"  next: {row.option} — misses {', '.join(misses(row.name)) or 'nothing'}"
              for _, row in ranked.iloc[1:3].iterrows()]
    return ranked, lines


def passing_everything(table: pd.DataFrame) -> list[str]:
    """Options that pass every check without touching a private attribute."""
    passed = table[list(CHECKS)].fillna(False).astype(bool).all(axis=1)
    return table[passed & ~table["your code touches _orig_mod"]].option.tolist()
