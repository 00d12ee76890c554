"""``load_checkpoint`` and ``from_checkpoint``: read one snapshot, check everything, then copy.

A load is planned first (:func:`plan_load`: which tensor goes where, what does not fit) and
checked whole (keys, shapes, values, checksums, optimizer and scheduler state); only then is
anything copied into the model, optimizer or scheduler.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .errors import CheckpointCollisionError, CheckpointFormatError, CheckpointMismatchError
from .formats import check_format_entry, read_checkpoint
from .integrity import verify_content
from .keys import KeyCollisionError, match_keys, unwrap_model, wrapper_paths
from .layout import (
    BARE,
    OPTIMIZER_KEYS,
    SCHEDULER_KEYS,
    extract_model_state_dict,
    find_state_dicts,
    first_entry,
    is_optimizer_state,
)
from .report import LoadReport, mismatch_message

log = logging.getLogger("compile_ckpt")
_EXTRA_STATE = "_extra_state"


@dataclasses.dataclass(frozen=True)
class LoadPlan:
    """What a load will copy (``tensors``: target key -> value) and what it found."""

    tensors: dict[str, Any]
    report: LoadReport


def plan_load(state: Mapping[str, Any], model: nn.Module, origin: str | None = None
              ) -> LoadPlan:
    """Match the file's keys to the model's and check every value; copies nothing."""
    target = model.state_dict(keep_vars=True)
    try:
        mapping, renames = match_keys(state, target, wrapper_paths(model))
    except KeyCollisionError as exc:
        raise CheckpointCollisionError(str(exc), origin) from None
    renamed = {mapping[k]: v for k, v in state.items() if k in mapping}
    shapes, non_tensors, casts = [], [], []
    for k, v in renamed.items():
        want = target[k]
        if k.rsplit(".", 1)[-1] == _EXTRA_STATE or not isinstance(want, torch.Tensor):
            continue
        if not isinstance(v, torch.Tensor):
            non_tensors.append(k)
        elif v.shape != want.shape:
            shapes.append((k, tuple(v.shape), tuple(want.shape)))
        elif v.dtype != want.dtype:
            casts.append((k, str(v.dtype).removeprefix("torch."),
                          str(want.dtype).removeprefix("torch.")))
    missing, tied = _missing_unless_tied(target, renamed)
    skip = set(non_tensors) | {s[0] for s in shapes}
    report = LoadReport(
        source=origin or "a state dict in memory", target=type(unwrap_model(model)).__name__,
        total=len(state), loaded=len(renamed) - len(skip), renames=renames, missing=missing,
        unexpected=[k for k in state if k not in mapping], shape_mismatches=shapes,
        non_tensors=non_tensors, dtype_casts=casts, tied=tied)
    return LoadPlan({k: v for k, v in renamed.items() if k not in skip}, report)


def _missing_unless_tied(target: Mapping[str, Any], renamed: Mapping[str, Any]
                         ) -> tuple[list[str], dict[str, str]]:
    """Target keys the file does not fill, except those tied to one it fills (one parameter
    under two names, like a head tied to its embedding, which safetensors stores once)."""
    owner: dict[int, str] = {}
    for k in renamed:
        if isinstance(target.get(k), torch.Tensor):
            owner.setdefault(id(target[k]), k)
    missing, tied = [], {}
    for k, t in target.items():
        if k in renamed:
            continue
        if isinstance(t, torch.Tensor) and id(t) in owner:
            tied[k] = owner[id(t)]
        else:
            missing.append(k)
    return missing, tied


def _without_tensors(metadata: Any) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        return {}

    def plain(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return f"tensor {str(v.dtype).removeprefix('torch.')} {list(v.shape)}"
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    return {str(k): plain(v) for k, v in metadata.items()}


def _optional_state(obj: Mapping[str, Any], keys: tuple[str, ...], target: Any, what: str,
                    strict: bool, origin: str | None) -> Mapping[str, Any] | None:
    """The optimizer or scheduler state to load into ``target`` (None: nothing to load)."""
    if target is None:
        return None
    where, state = first_entry(obj, keys)
    if state is None:
        if not strict:
            return None
        article = "an" if what[0] in "aeiou" else "a"
        raise CheckpointFormatError(f"{article} {what} was passed but the checkpoint holds no "
                                    f"{what} state (looked for {list(keys)}); nothing was loaded",
                                    origin)
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(f"its {where!r} is a {type(state).__name__}, not a {what} "
                                    "state dict; nothing was loaded", origin)
    return state


def check_optimizer_state(saved: Mapping[str, Any], optimizer: torch.optim.Optimizer,
                          origin: str | None = None) -> None:
    """Raise before anything is copied for what ``optimizer.load_state_dict`` would refuse,
    and for per-parameter state whose shape does not fit its parameter."""
    def refuse(why: str) -> CheckpointMismatchError:
        return CheckpointMismatchError(f"its optimizer state {why}; nothing was loaded", origin)

    if not is_optimizer_state(saved) or not isinstance(saved["param_groups"], list) \
            or not isinstance(saved["state"], Mapping):
        raise refuse("has no 'param_groups' list and 'state' dict")
    sizes = [len(g.get("params", [])) for g in saved["param_groups"]]
    mine = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != mine:
        raise refuse(f"has parameter groups of sizes {sizes}; the optimizer's are {mine} "
                     "(another model or optimizer set-up)")
    params = {pid: p for g, mg in zip(saved["param_groups"], optimizer.param_groups, strict=True)
              for pid, p in zip(g["params"], mg["params"], strict=True)}
    for pid, per_param in saved["state"].items():
        p = params.get(pid)
        if p is None or not isinstance(per_param, Mapping):
            raise refuse(f"refers to parameter {pid!r}, which no group lists")
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                raise refuse(f"{name!r} for parameter {pid} has shape {list(value.shape)}, the "
                             f"parameter has {list(p.shape)}")


def load_checkpoint(source: str | os.PathLike[str] | Mapping[str, Any], model: nn.Module, *,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any | None = None,
                    strict: bool = True, key: str | None = None, prefix: str | None = None,
                    map_location: Any = "cpu", mmap: bool = False, assign: bool = False,
                    verify: bool = True) -> LoadReport:
    """Load ``source`` into ``model`` (and ``optimizer``/``scheduler``), renaming only the
    keys that must be renamed; all or nothing.

    ``model`` may be plain, compiled, compiled in place, DDP-wrapped or hold compiled or
    checkpoint-wrapped submodules; ``source`` (a path, or a loaded checkpoint) may come from
    any of those. ``key`` picks one state dict of a file that holds several (``"ema"``);
    ``prefix`` takes only the keys under a trainer's own prefix (Lightning's ``"model."``) and
    strips it. Everything is checked first; with ``strict=True`` a problem raises a
    :class:`~compile_ckpt.CheckpointError` and model, optimizer and scheduler are unchanged.
    """
    is_path = isinstance(source, (str, os.PathLike))
    origin = str(source) if is_path else None
    obj = read_checkpoint(source, map_location=map_location, mmap=mmap) if is_path else source
    state, container = extract_model_state_dict(obj, origin, key)
    skipped = []
    if prefix:
        skipped = [k for k in state if not k.startswith(prefix)]
        state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            heads = sorted({k.split(".", 1)[0] + "." for k in skipped})[:6]
            raise CheckpointMismatchError(f"no key starts with prefix={prefix!r} (keys start "
                                          f"with {heads})", origin)
    check_format_entry(obj, origin)
    verified = verify and verify_content(obj, state, origin, prefix or "")
    plan = plan_load(state, model, origin)
    if strict and not plan.report.ok:
        raise CheckpointMismatchError(mismatch_message(plan.report), origin)
    opt_state = _optional_state(obj, OPTIMIZER_KEYS, optimizer, "optimizer", strict, origin)
    sched_state = _optional_state(obj, SCHEDULER_KEYS, scheduler, "scheduler", strict, origin)
    if opt_state is not None:
        check_optimizer_state(opt_state, optimizer, origin)  # type: ignore[arg-type]
    in_memory = "a state dict in memory" if container == BARE else "a checkpoint in memory"
    report = dataclasses.replace(
        plan.report, source=origin or in_memory, container=container, skipped=skipped,
        checksums_verified=verified,
        other_state_dicts=[n for n in find_state_dicts(obj) if n != container],
        metadata=_without_tensors(obj.get("metadata")), optimizer_loaded=opt_state is not None,
        scheduler_loaded=sched_state is not None)
    # Everything that can be checked was: only now is anything copied.
    model.load_state_dict(plan.tensors, strict=False, assign=assign)
    if assign:
        _check_no_meta(model, origin)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)  # type: ignore[union-attr]
    if sched_state is not None:
        scheduler.load_state_dict(sched_state)
    log.info("%s", report)
    return report


def _check_no_meta(model: nn.Module, origin: str | None) -> None:
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointMismatchError(f"after assign=True these tensors are still on the meta "
                                      "device (not in the checkpoint, e.g. non-persistent "
                                      f"buffers): {left[:10]}", origin)


def from_checkpoint(path: str | os.PathLike[str], build: Callable[[], nn.Module], *,
                    strict: bool = True, key: str | None = None, prefix: str | None = None
                    ) -> tuple[nn.Module, LoadReport]:
    """Build a model on the meta device and fill it from a memory-mapped checkpoint.

    ``build()`` constructs the model; no memory goes to random initial weights, and the
    tensors are the file's mapped pages (``mmap=True, assign=True``): never two copies.
    """
    with torch.device("meta"):
        model = build()
    report = load_checkpoint(path, model, strict=strict, key=key, prefix=prefix, mmap=True,
                             assign=True)
    return model, report
