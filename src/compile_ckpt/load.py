"""``load_checkpoint``, ``from_checkpoint``: check everything, then write it; a LoadReport tells."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import errors as e
from . import keys, layout
from .formats import read_checkpoint
from .resume import optimizer_problem, rename_param_names, scheduler_problem

log = logging.getLogger("compile_ckpt")


def _list() -> Any:
    return dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """What :func:`load_checkpoint` did, in names and numbers, never a tensor; ``str()``: a line."""

    source: str = "a state dict in memory"
    target: str = ""
    total: int = 0
    loaded: int = 0
    renames: list[keys.Rename] = _list()
    missing: list[str] = _list()
    unexpected: list[str] = _list()
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = _list()
    non_tensors: list[str] = _list()
    dtype_casts: list[tuple[str, str, str]] = _list()  # done: (key, file dtype, model dtype)
    uncastable: list[tuple[str, str, str]] = _list()  # complex into real, float into int
    optimizer_loaded: bool = False
    scheduler_loaded: bool = False
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # the file's other entries
    not_restored: list[str] = _list()  # optimizer or scheduler state, not asked for
    container: str = layout.BARE
    other_state_dicts: list[str] = _list()
    skipped: list[str] = _list()  # outside the prefix asked for
    tied: dict[str, str] = dataclasses.field(default_factory=dict)  # absent key -> its tie

    @property
    def removed_prefixes(self) -> Counter[str]:
        """How many keys lost each wrapper segment, e.g. ``{'_orig_mod.': 14}``."""
        return keys.segment_counts(self.renames)[0]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches or self.non_tensors
                    or self.uncastable)

    def __str__(self) -> str:
        parts = keys.describe_renames(self.renames)
        parts[0] = "cleaned prefixes: " * bool(self.removed_prefixes) + parts[0]
        done = " and ".join(n for n, d in (("optimizer", self.optimizer_loaded),
                                           ("scheduler", self.scheduler_loaded)) if d)
        parts += [said for said, when in (
            (f"{len(self.missing)} missing, {len(self.unexpected)} unexpected",
             self.missing or self.unexpected),
            (f"{len(self.shape_mismatches)} shape mismatches skipped", self.shape_mismatches),
            (f"{len(self.uncastable)} tensors of an incompatible dtype skipped", self.uncastable),
            (f"left {len(self.skipped)} key(s) outside the prefix", self.skipped),
            (f"{len(self.tied)} tied to a loaded tensor ({', '.join(self.tied)})", self.tied),
            (f"also loaded {done}", done),
            (f"not restored: {', '.join(self.not_restored)} (not asked for)", self.not_restored),
            (f"the file also holds {', '.join(self.other_state_dicts)} (choose with key=)",
             self.other_state_dicts)) if when]
        source = Path(self.source).name if "/" in self.source else self.source
        return (f"compile_ckpt: {self.loaded}/{self.total} tensors from {source}"
                f"{f' into {self.target}' * bool(self.target)}; " + "; ".join(parts))


def mismatch_message(r: LoadReport) -> str:
    """Why a strict load refused, key by key, with the likely cause."""
    lines = [f"checkpoint does not fit {r.target} ({len(r.missing)} missing, {len(r.unexpected)} "
             f"unexpected, {len(r.shape_mismatches)} shape mismatches, "
             f"{len(r.non_tensors) + len(r.uncastable)} other values); nothing was loaded"]
    changed = [f"{k}: {list(a)} -> {list(b)}" for k, a, b in r.shape_mismatches] + [
        f"{k}: {a} -> {b}" for k, a, b in r.uncastable]
    for title, rows in (("Missing key(s)", r.missing), ("Unexpected key(s)", r.unexpected),
                        ("Shapes and dtypes, checkpoint -> model", changed),
                        ("Not tensors", r.non_tensors)):
        more = [f"    ... and {len(rows) - 10} more"] * (len(rows) > 10)
        lines += [f"  {title}:", *(f"    {row}" for row in rows[:10]), *more] if rows else []
    n, bare = len(r.unexpected), [".".join(p for p in k.split(".") if p not in
                                           keys.WRAPPER_SEGMENTS) for k in r.unexpected + r.missing]
    heads = {b.partition(".")[0] for b in bare[:n]}  # one trainer's prefix on every unexpected?
    if len(heads) == 1 and {b.partition(".")[2] for b in bare[:n]} & set(bare[n:]):
        lines.append(f"  Likely cause: every unexpected key starts with '{(h := heads.pop())}.', "
                     f"another trainer's prefix: pass prefix='{h}.' to load_checkpoint")
    return "\n".join(lines)


def plan_load(state: Mapping[str, Any], model: nn.Module, origin: str | None = None
              ) -> tuple[dict[str, Any], dict[str, str], LoadReport]:
    """What a load would copy (target key -> value), the key map and the report."""
    target, name = model.state_dict(keep_vars=True), type(keys.unwrap_model(model)).__name__
    if any("DTensor" in {c.__name__ for c in type(t).__mro__} for t in target.values()):
        raise e.UnsupportedContentError(
            "the model holds DTensors (FSDP2, tensor parallel): load it with torch.distributed."
            "checkpoint (dcp.load, or state_dict.set_model_state_dict)", origin)
    try:
        cleaned, renames = keys.clean_state_dict(state, model)
    except keys.KeyCollisionError as exc:
        raise e.CheckpointCollisionError(str(exc), origin) from None
    mapping = {s: t for s, t in zip(state, cleaned, strict=True) if t in target}
    renamed = {t: v for t, v in cleaned.items() if t in target}
    shapes, non_tensors, casts, uncastable, first = [], [], [], [], {}
    for k, v in renamed.items():
        want, a = target[k], renamed[first.setdefault(id(target[k]), k)]  # a: the tie's first
        if isinstance(a, torch.Tensor) and isinstance(v, torch.Tensor) and a is not v and not (
                a.shape == v.shape and torch.equal(a.cpu(), v.cpu())):
            raise e.CheckpointCollisionError(
                f"keys {first[id(want)]!r} and {k!r} hold different values, but in {name} they "
                "are one parameter (tied); refusing to let one overwrite the other. Nothing was "
                "loaded", origin)
        if k.endswith("_extra_state") or not isinstance(want, torch.Tensor):
            continue
        if not isinstance(v, torch.Tensor):
            non_tensors.append(k)
        elif v.shape != want.shape:
            shapes.append((k, tuple(v.shape), tuple(want.shape)))
        elif v.dtype != want.dtype:
            cast = (k, *(str(d).removeprefix("torch.") for d in (v.dtype, want.dtype)))
            try:  # torch's rule: float into bf16 yes; complex into real, float into int no
                kept = torch.can_cast(v.dtype, want.dtype)
            except RuntimeError:  # quantized and other dtypes outside the promotion lattice
                kept = False
            (casts if kept else uncastable).append(cast)
    tied = {k: first[id(t)] for k, t in target.items() if k not in renamed and id(t) in first}
    skip = {*non_tensors, *(s[0] for s in shapes), *(c[0] for c in uncastable)}
    report = LoadReport(
        source=origin or "a state dict in memory", target=name, total=len(state),
        loaded=len(renamed) - len(skip), renames=renames, tied=tied,
        missing=[k for k in target if k not in renamed and k not in tied],
        unexpected=[k for k in state if k not in mapping], shape_mismatches=shapes,
        non_tensors=non_tensors, dtype_casts=casts, uncastable=uncastable)
    tensors = keys.with_metadata(((k, v) for k, v in renamed.items() if k not in skip),
                                 getattr(cleaned, "_metadata", None))
    return tensors, mapping, report


def load_checkpoint(source: str | os.PathLike[str] | Mapping[str, Any], model: nn.Module, *,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any | None = None,
                    strict: bool = True, key: str | None = None, prefix: str | None = None,
                    map_location: Any = "cpu", mmap: bool = False, assign: bool = False
                    ) -> LoadReport:
    """Load ``source`` (a path, or what ``torch.load`` returned) into ``model``, ``optimizer``
    and ``scheduler``, however each side is wrapped; all or nothing. ``key`` picks the state
    dict (dotted: ``"state.model"``); ``prefix`` takes the keys under a trainer's prefix
    (``"model."``, PEFT's ``"base_model.model."``) and strips it. With ``strict=True`` a problem
    raises a :class:`~compile_ckpt.CheckpointError` and nothing is changed."""
    origin = str(source) if isinstance(source, (str, os.PathLike)) else None
    obj = source if origin is None else read_checkpoint(
        source, map_location=map_location, mmap=mmap)  # type: ignore[arg-type]
    state, container = layout.extract_model_state_dict(obj, origin, key)
    state, skipped = _under_prefix(state, prefix, origin)
    tensors, mapping, report = plan_load(state, model, origin)
    if strict and not report.ok:
        raise e.CheckpointMismatchError(mismatch_message(report), origin)
    opt_state = layout.optional_state(obj, layout.OPTIMIZER_KEYS, optimizer, strict, origin)
    sched_state = layout.optional_state(obj, layout.SCHEDULER_KEYS, scheduler, strict, origin)
    for what, got, into, problem in (("optimizer", opt_state, optimizer, optimizer_problem),
                                     ("scheduler", sched_state, scheduler, scheduler_problem)):
        if got is not None and (why := problem(got, into)):
            raise e.CheckpointMismatchError(f"its {what} state {why}; nothing was loaded", origin)
    if opt_state is not None:  # torch adopts the file's param_names: give it the target's
        groups = optimizer.param_groups  # type: ignore[union-attr]
        opt_state = rename_param_names(opt_state, lambda i, names: list(groups[i]["param_names"])
                                       if "param_names" in groups[i]
                                       else [mapping.get(n, n) for n in names])
    extra, states, others = layout.beside(obj, container)
    report = dataclasses.replace(
        report, source=origin or ("a state dict in memory" if container == layout.BARE
                                  else "a checkpoint in memory"),
        container=container, skipped=skipped, other_state_dicts=others, extra=extra,
        optimizer_loaded=opt_state is not None, scheduler_loaded=sched_state is not None,
        not_restored=[k for k in states
                      if (optimizer if k in layout.OPTIMIZER_KEYS else scheduler) is None])
    _apply(model, tensors, optimizer, opt_state, scheduler, sched_state, assign, origin)
    log.info("%s", report)
    return report


def _under_prefix(state: Mapping[str, Any], prefix: str | None, origin: str | None
                  ) -> tuple[Mapping[str, Any], list[str]]:
    if not prefix:
        return state, []
    if not (kept := {k: s for k in state if (s := keys.strip_prefix(k, prefix)) is not None}):
        raise e.CheckpointMismatchError(f"no key starts with prefix={prefix!r} (keys start with "
                                        f"{sorted({k.split('.')[0] + '.' for k in state})[:6]})",
                                        origin)
    return {s: state[k] for k, s in kept.items()}, [k for k in state if k not in kept]


def _apply(model: nn.Module, tensors: Mapping[str, Any], optimizer: Any, opt_state: Any,
           scheduler: Any, sched_state: Any, assign: bool, origin: str | None) -> None:
    """The scheduler, optimizer and each extra state, each undone if a later one refuses
    (``set_extra_state`` can only be asked by calling it); the tensors last."""
    undo: list[Callable[[], Any]] = []
    rest = keys.with_metadata(tensors.items(), getattr(tensors, "_metadata", None))
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
        current = model.state_dict()  # references; extra state as get_extra_state gives it
        for k in [k for k in rest if k.endswith("_extra_state")]:  # through any wrapper's hooks
            what, old = f"module {k.rpartition('.')[0] or '<root>'!r}", {k: current[k]}
            undo.append(lambda o=old: model.load_state_dict(o, strict=False))
            model.load_state_dict({k: rest.pop(k)}, strict=False)
        what, done = "the model (a module's own _load_from_state_dict)", (
            "the optimizer, scheduler and extra state were restored; tensors copied before the "
            "error were not")
        _assign(model, rest) if assign else model.load_state_dict(rest, strict=False)
    except Exception as exc:  # noqa: BLE001 - whatever the refusing object raises
        for step in reversed(undo):
            step()
        raise e.CheckpointMismatchError(f"{what} refused the file's state ("
                                        f"{type(exc).__name__}: {exc}); {done}", origin) from exc


def _assign(model: nn.Module, tensors: Mapping[str, Any]) -> None:
    """``load_state_dict(assign=True)`` keeping the dtypes the model declares and its ties."""
    target, ties = model.state_dict(keep_vars=True), defaultdict(list)
    for name, t in _named_tensors(model):
        ties[id(t)].append(name.rpartition("."))
    model.load_state_dict(keys.with_metadata(((k, v.to(target[k].dtype) if isinstance(
        target.get(k), torch.Tensor) else v) for k, v in tensors.items()),
        getattr(tensors, "_metadata", None)), strict=False, assign=True)
    for names in (n for n in ties.values() if len(n) > 1):  # torch unties what it assigns
        slots = [(m._parameters if leaf in m._parameters else m._buffers, leaf)
                 for m, leaf in ((model.get_submodule(owner), leaf) for owner, _, leaf in names)]
        loaded = [table[leaf] for table, leaf in slots if not table[leaf].is_meta]
        for table, leaf in slots:
            table[leaf] = loaded[0] if loaded else table[leaf]


def _named_tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*model.named_parameters(remove_duplicate=False),
            *model.named_buffers(remove_duplicate=False)]


def from_checkpoint(path: str | os.PathLike[str], build: Callable[[], nn.Module], *,
                    strict: bool = True, key: str | None = None, prefix: str | None = None
                    ) -> nn.Module:
    """The model ``build()`` makes on the meta device, filled from the memory-mapped file: no
    memory for random initial weights, never two copies. The report goes to the ``compile_ckpt``
    logger; for the value, do as this does: build under ``torch.device("meta")``, then
    ``load_checkpoint(path, model, mmap=True, assign=True)``."""
    with torch.device("meta"):
        model = build()
    load_checkpoint(path, model, strict=strict, key=key, prefix=prefix, mmap=True, assign=True)
    if left := [n for n, t in _named_tensors(model) if t.is_meta]:  # a new model: nothing lost
        raise e.CheckpointMismatchError(f"these tensors are not in the checkpoint and stay on the "
                                        f"meta device (non-persistent buffers?): {left[:10]}; "
                                        "build them in the model instead", str(path))
    return model
