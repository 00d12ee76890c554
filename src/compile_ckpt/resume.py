"""Optimizer and scheduler state from a file: what their ``load_state_dict`` would refuse, or
accept and then fail on at the first ``step()``, found before anything is written.

The checks follow torch's own rules, never a stricter guess: every optimizer in
``torch.optim`` saves state that passes them (the tests round-trip each one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .errors import CheckpointMismatchError

#: Per-parameter state that torch.optim's optimizers create with their parameter's shape
#: (``zeros_like(p)`` and the like). Other entries have shapes of their own (LBFGS's flat
#: directions, Adafactor's factored row and column statistics, scalar steps) and are checked
#: only against the optimizer's own state, where it has some.
ELEMENTWISE = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "exp_inf", "momentum_buffer",
                         "square_avg", "acc_delta", "grad_avg", "sum", "ax", "prev", "step_size"})
#: Group entries that are not hyperparameters: torch keeps the optimizer's own.
_NOT_HYPER = frozenset({"params", "param_names"})


def _refusal(what: str, origin: str | None) -> CheckpointMismatchError:
    return CheckpointMismatchError(f"its {what}; nothing was loaded", origin)


def _groups_after_load(saved: list[Mapping[str, Any]], optimizer: torch.optim.Optimizer
                       ) -> list[Mapping[str, Any]]:
    """The parameter groups ``optimizer.load_state_dict`` would leave: the file's entries, with
    the defaults this optimizer's ``__setstate__`` adds for entries older releases lacked.
    Computed on a blank instance of its class; the optimizer itself is not touched."""
    groups = [{**g, "params": mg["params"]}
              for g, mg in zip(saved, optimizer.param_groups, strict=True)]
    shadow = object.__new__(type(optimizer))
    try:
        shadow.__setstate__({"defaults": dict(optimizer.defaults), "state": {},
                             "param_groups": groups})
    except Exception:  # noqa: BLE001 - a class whose __setstate__ needs more: the file's entries
        return groups
    return shadow.param_groups


def _check_structure(saved: Any, refuse: Callable[[str], CheckpointMismatchError]) -> None:
    if not (isinstance(saved, Mapping) and isinstance(saved.get("param_groups"), list)
            and isinstance(saved.get("state"), Mapping)):
        raise refuse("optimizer state has no 'param_groups' list and 'state' dict")
    for i, g in enumerate(saved["param_groups"]):
        if not isinstance(g, Mapping) or not isinstance(g.get("params"), list):
            raise refuse(f"optimizer state's parameter group {i} is not a dict with a "
                         "'params' list")
        if not all(isinstance(p, (int, str)) for p in g["params"]):
            raise refuse(f"optimizer state's parameter group {i} lists parameters that are "
                         "not ids")
    for pid, per_param in saved["state"].items():
        if not isinstance(per_param, Mapping):
            raise refuse(f"optimizer state for parameter {pid!r} is a "
                         f"{type(per_param).__name__}, not a dict")


def check_optimizer_state(saved: Any, optimizer: torch.optim.Optimizer,
                          origin: str | None = None) -> None:
    """Raise before anything is copied for what ``optimizer.load_state_dict`` would refuse, for
    hyperparameters this optimizer needs that the file lacks (another optimizer's state), and
    for per-parameter state whose shape cannot fit its parameter."""
    def refuse(why: str) -> CheckpointMismatchError:
        return _refusal(why, origin)

    _check_structure(saved, refuse)
    name = type(optimizer).__name__
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    mine = [len(g["params"]) for g in optimizer.param_groups]
    if sizes != mine:
        raise refuse(f"optimizer state has parameter groups of sizes {sizes}; the {name}'s are "
                     f"{mine} (another model or optimizer set-up)")
    after = _groups_after_load(saved["param_groups"], optimizer)
    for i, (group, live) in enumerate(zip(after, optimizer.param_groups, strict=True)):
        lacks = sorted(set(live) - set(group) - _NOT_HYPER)
        if lacks:
            extra = sorted(set(group) - set(live) - _NOT_HYPER)
            has = f"; it has {extra} instead" if extra else ""
            raise refuse(f"optimizer state's parameter group {i} lacks {lacks}, which {name} "
                         f"needs at its next step (another optimizer's state{has})")
    params = {pid: p for g, mg in zip(saved["param_groups"], optimizer.param_groups, strict=True)
              for pid, p in zip(g["params"], mg["params"], strict=True)}
    for pid, per_param in saved["state"].items():
        p = params.get(pid)
        if p is None:
            raise refuse(f"optimizer state refers to parameter {pid!r}, which no group lists")
        own = optimizer.state.get(p, {})
        for key, value in per_param.items():
            if not isinstance(value, torch.Tensor):
                continue
            want = own.get(key)
            shape = (tuple(want.shape) if isinstance(want, torch.Tensor)
                     else tuple(p.shape) if key in ELEMENTWISE and value.dim() > 0 else None)
            if shape is not None and tuple(value.shape) != shape:
                raise refuse(f"optimizer state {key!r} for parameter {pid} has shape "
                             f"{list(value.shape)}; {name} needs {list(shape)}")


def check_scheduler_state(saved: Mapping[str, Any], scheduler: Any,
                          origin: str | None = None) -> None:
    """Raise before anything is copied for another scheduler's state: entries this scheduler
    needs are missing while entries it does not have are present (a StepLR file into a
    CosineAnnealingLR), or the nested schedulers or lambdas differ in number."""
    problem = _scheduler_problem(saved, scheduler)
    if problem:
        raise _refusal(f"scheduler state {problem}", origin)


def _scheduler_problem(saved: Mapping[str, Any], scheduler: Any, where: str = "") -> str | None:
    live = scheduler.state_dict()
    name = type(scheduler).__name__
    extra, lacks = sorted(set(saved) - set(live)), sorted(set(live) - set(saved))
    if extra and lacks:
        return (f"{where}has {extra}, which this {name} does not, and lacks {lacks}, which it "
                "needs (another scheduler's state)")
    for key in ("_schedulers", "lr_lambdas"):
        if key in live:
            theirs = saved.get(key)
            if not isinstance(theirs, list) or len(theirs) != len(live[key]):
                n = len(theirs) if isinstance(theirs, list) else "no"
                return f"{where}has {n} {key.strip('_')}; this {name} has {len(live[key])}"
    nested = getattr(scheduler, "_schedulers", None)
    if "_schedulers" in live and isinstance(nested, list):
        for i, (s, inner) in enumerate(zip(saved["_schedulers"], nested, strict=True)):
            if not isinstance(s, Mapping):
                return f"{where}_schedulers[{i}] is not a scheduler state"
            found = _scheduler_problem(s, inner, f"{where}_schedulers[{i}] ")
            if found:
                return found
    return None
