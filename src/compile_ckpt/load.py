"""``load_checkpoint`` and ``from_checkpoint``: read one snapshot, check everything, then copy.

A load is planned first (:func:`plan_load`: which tensor goes where, what does not fit) and
checked whole (keys, shapes, dtypes, values, tied parameters, checksums, optimizer and
scheduler state); only then is anything written: the scheduler, the optimizer and the modules'
extra state, each undone if a later one refuses, and the tensors last.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .errors import CheckpointCollisionError, CheckpointFormatError, CheckpointMismatchError
from .formats import read_checkpoint, verify_checkpoint
from .integrity import tensor_checksum
from .keys import KeyCollisionError, match_keys, unwrap_model, wrapper_paths
from .layout import (
    BARE,
    OPTIMIZER_KEYS,
    SCHEDULER_KEYS,
    extract_model_state_dict,
    find_state_dicts,
    first_entry,
)
from .report import LoadReport, mismatch_message
from .resume import check_optimizer_state, check_scheduler_state

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
    _check_ties(target, renamed, model, origin)
    shapes, non_tensors, casts, uncastable = [], [], [], []
    for k, v in renamed.items():
        want = target[k]
        if k.rsplit(".", 1)[-1] == _EXTRA_STATE or not isinstance(want, torch.Tensor):
            continue
        if not isinstance(v, torch.Tensor):
            non_tensors.append(k)
        elif v.shape != want.shape:
            shapes.append((k, tuple(v.shape), tuple(want.shape)))
        elif v.dtype != want.dtype:
            cast = (k, str(v.dtype).removeprefix("torch."), str(want.dtype).removeprefix("torch."))
            (casts if _castable(v.dtype, want.dtype) else uncastable).append(cast)
    missing, tied = _missing_unless_tied(target, renamed)
    skip = set(non_tensors) | {s[0] for s in shapes} | {c[0] for c in uncastable}
    report = LoadReport(
        source=origin or "a state dict in memory", target=type(unwrap_model(model)).__name__,
        total=len(state), loaded=len(renamed) - len(skip), renames=renames, missing=missing,
        unexpected=[k for k in state if k not in mapping], shape_mismatches=shapes,
        non_tensors=non_tensors, dtype_casts=casts, uncastable=uncastable, tied=tied)
    return LoadPlan({k: v for k, v in renamed.items() if k not in skip}, report)


def _castable(source: torch.dtype, target: torch.dtype) -> bool:
    """Whether copying ``source`` into ``target`` keeps the kind of value (torch's casting
    rule: float into bf16 yes; complex into float, float into int, int into bool no)."""
    try:
        return torch.can_cast(source, target)
    except RuntimeError:  # quantized and other dtypes outside the promotion lattice
        return False


def _check_ties(target: Mapping[str, Any], renamed: Mapping[str, Any], model: nn.Module,
                origin: str | None) -> None:
    """Two file keys that land on one parameter (a head tied to its embedding) must hold the
    same values; otherwise one would silently win."""
    by_param: dict[int, list[str]] = defaultdict(list)
    for k in renamed:
        if isinstance(target[k], torch.Tensor):
            by_param[id(target[k])].append(k)
    for keys in by_param.values():
        values = [renamed[k] for k in keys]
        if len(keys) < 2 or not all(isinstance(v, torch.Tensor) for v in values):
            continue
        others = [(k, v) for k, v in zip(keys[1:], values[1:], strict=True)
                  if not _same_memory(v, values[0])]  # a tied model's own state_dict: free
        first = tensor_checksum(values[0]) if others else ""
        for k, v in others:
            if tensor_checksum(v) != first:
                raise CheckpointCollisionError(
                    f"keys {keys[0]!r} and {k!r} hold different values, but in "
                    f"{type(unwrap_model(model)).__name__} they are one parameter (tied); "
                    "refusing to let one overwrite the other. Nothing was loaded", origin)


def _same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors are one view of one memory (then their values are equal)."""
    if a is b:
        return True
    if a.layout != torch.strided or b.layout != torch.strided:
        return False
    return ((a.device, a.dtype, a.shape, a.stride(), a.storage_offset())
            == (b.device, b.dtype, b.shape, b.stride(), b.storage_offset())
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr())


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


def _without_tensors(metadata: Any) -> dict[Any, Any]:
    """The file's metadata as it is (keys and tuples kept), each tensor described instead."""
    if not isinstance(metadata, Mapping):
        return {}

    def plain(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            return f"tensor {str(v.dtype).removeprefix('torch.')} {list(v.shape)}"
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return type(v)(plain(x) for x in v) if type(v) in (list, tuple) else v

    return plain(metadata)


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
    verified = verify and verify_checkpoint(obj, origin, state, prefix or "")
    plan = plan_load(state, model, origin)
    if strict and not plan.report.ok:
        raise CheckpointMismatchError(mismatch_message(plan.report), origin)
    opt_state = _optional_state(obj, OPTIMIZER_KEYS, optimizer, "optimizer", strict, origin)
    sched_state = _optional_state(obj, SCHEDULER_KEYS, scheduler, "scheduler", strict, origin)
    if opt_state is not None:
        check_optimizer_state(opt_state, optimizer, origin)  # type: ignore[arg-type]
    if sched_state is not None:
        check_scheduler_state(sched_state, scheduler, origin)
    in_memory = "a state dict in memory" if container == BARE else "a checkpoint in memory"
    report = dataclasses.replace(
        plan.report, source=origin or in_memory, container=container, skipped=skipped,
        checksums_verified=verified,
        other_state_dicts=[n for n in find_state_dicts(obj) if n != container],
        metadata=_without_tensors(obj.get("metadata")), optimizer_loaded=opt_state is not None,
        scheduler_loaded=sched_state is not None)
    if assign:
        _check_no_meta(model, plan.tensors, plan.report.tied, origin)
    # Everything that can be checked was: only now is anything written.
    _apply(model, plan.tensors, optimizer, opt_state, scheduler, sched_state, assign, origin)
    log.info("%s", report)
    return report


def _apply(model: nn.Module, tensors: Mapping[str, Any], optimizer: Any, opt_state: Any,
           scheduler: Any, sched_state: Any, assign: bool, origin: str | None) -> None:
    """Load the scheduler, the optimizer and the modules' extra state, each undone if a later
    one refuses (a module's ``set_extra_state`` can only be asked by calling it), then the
    tensors, last: checked already, copying them does not fail in torch's own modules."""
    undo: list[Callable[[], None]] = []
    tensors = dict(tensors)
    what, done = "", "nothing was loaded (what had been set before it was restored)"
    try:
        if sched_state is not None:
            what, before = "the scheduler", dict(scheduler.__dict__)
            undo.append(lambda: (scheduler.__dict__.clear(), scheduler.__dict__.update(before)))
            scheduler.load_state_dict(dict(sched_state))  # some pop entries from what they get
        if opt_state is not None:
            what, saved = "the optimizer", optimizer.state_dict()
            undo.append(lambda: optimizer.load_state_dict(saved))
            optimizer.load_state_dict(opt_state)
        current = model.state_dict()  # references, no copies; extra state as get_extra_state
        for key in [k for k in tensors if k.rsplit(".", 1)[-1] == _EXTRA_STATE]:
            # through load_state_dict, which finds the module under any wrapper's hooks
            what, old = f"module {key.rpartition('.')[0] or '<root>'!r}", {key: current[key]}
            undo.append(lambda o=old: model.load_state_dict(o, strict=False))
            model.load_state_dict({key: tensors.pop(key)}, strict=False)
        what = "the model (a module's own _load_from_state_dict)"
        done = ("the optimizer, scheduler and extra state were restored; tensors copied before "
                "the error were not")
        if assign:
            _assign(model, tensors)
        else:
            model.load_state_dict(tensors, strict=False)
    except Exception as exc:  # noqa: BLE001 - whatever the refusing object raises
        for step in reversed(undo):
            step()
        raise CheckpointMismatchError(
            f"{what} refused the file's state ({type(exc).__name__}: {exc}); {done}",
            origin) from exc


def _assign(model: nn.Module, tensors: Mapping[str, Any]) -> None:
    """``load_state_dict(assign=True)`` that keeps what the model was built with: each
    tensor in the dtype the model declares, and parameters tied in the model tied after."""
    target = model.state_dict(keep_vars=True)
    tensors = {k: v.to(target[k].dtype) if isinstance(v, torch.Tensor) and isinstance(
        target.get(k), torch.Tensor) and v.dtype != target[k].dtype else v
        for k, v in tensors.items()}
    ties: dict[int, list[str]] = defaultdict(list)  # by the modules' own paths
    for name, t in _named_tensors(model):
        ties[id(t)].append(name)
    model.load_state_dict(tensors, strict=False, assign=True)
    for names in (n for n in ties.values() if len(n) > 1):
        _retie(model, names)


def _named_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False)]


def _retie(model: nn.Module, names: list[str]) -> None:
    """Make every name in ``names`` (paths of ``named_parameters``) hold the first loaded one's
    tensor again, as the model was built."""
    def slot(name: str) -> tuple[dict[str, Any], str]:
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner)
        return (module._parameters if leaf in module._parameters else module._buffers), leaf

    loaded = [n for n in names if not slot(n)[0][slot(n)[1]].is_meta]
    if loaded:
        table, leaf = slot(loaded[0])
        for name in names:
            other, other_leaf = slot(name)
            other[other_leaf] = table[leaf]


def _check_no_meta(model: nn.Module, tensors: Mapping[str, Any], tied: Mapping[str, str],
                   origin: str | None) -> None:
    """With ``assign=True``, refuse before writing when a tensor would stay on the meta
    device: neither in the file nor tied to one that is (a non-persistent buffer, say)."""
    target = model.state_dict(keep_vars=True)
    filled = {id(target[k]) for k in (*tensors, *tied) if isinstance(target.get(k), torch.Tensor)}
    left = [n for n, t in _named_tensors(model) if t.is_meta and id(t) not in filled]
    if left:
        raise CheckpointMismatchError(f"with assign=True these tensors would stay on the meta "
                                      "device (not in the checkpoint, e.g. non-persistent "
                                      f"buffers): {left[:10]}; nothing was loaded", origin)


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
