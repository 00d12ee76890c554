"""Optimizer and scheduler state that their ``load_state_dict`` would refuse, or take and fail
on at the next ``step()``, found first, by torch's rules (every ``torch.optim`` class passes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

#: Per-parameter state that torch.optim creates with its parameter's shape.
ELEMENTWISE = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "exp_inf", "momentum_buffer",
                         "square_avg", "acc_delta", "grad_avg", "sum", "ax", "prev", "step_size"})


def optimizer_problem(saved: Any, optimizer: torch.optim.Optimizer) -> str | None:
    """Why ``optimizer`` cannot take ``saved``, or None: what its ``load_state_dict`` refuses,
    state of another shape, or hyperparameters it needs that the file lacks (another class's)."""
    name, groups = type(optimizer).__name__, saved.get("param_groups") if isinstance(
        saved, Mapping) else None
    if not (isinstance(groups, list) and isinstance(saved.get("state"), Mapping)):
        return "has no 'param_groups' list and 'state' dict"
    for i, g in enumerate(groups):
        if not (isinstance(g, Mapping) and isinstance(g.get("params"), list)
                and all(isinstance(p, (int, str)) for p in g["params"])):
            return f"parameter group {i} is not a dict with a 'params' list of ids"
    if (sizes := [len(g["params"]) for g in groups]) != (
            mine := [len(g["params"]) for g in optimizer.param_groups]):
        return f"has parameter groups of sizes {sizes}; the {name}'s are {mine}"
    if bad := [k for k, v in saved["state"].items() if not isinstance(v, Mapping)]:
        return f"state for parameter {bad[0]!r} is not a dict"
    params = dict(zip((p for g in groups for p in g["params"]),
                      (p for g in optimizer.param_groups for p in g["params"]), strict=True))
    for pid, per_param in saved["state"].items():
        for k, v in per_param.items():
            if k in ELEMENTWISE and isinstance(v, torch.Tensor) and v.dim() and pid in params \
                    and v.shape != params[pid].shape:
                return (f"state {k!r} for parameter {pid} has shape {list(v.shape)}; {name} "
                        f"needs {list(params[pid].shape)}")
    shadow = object.__new__(type(optimizer))  # torch adds defaults for what old files lack
    after = [{**g, "params": mg["params"]} for g, mg in zip(groups, optimizer.param_groups,
                                                             strict=True)]
    try:
        shadow.__setstate__({"defaults": dict(optimizer.defaults), "state": {},
                             "param_groups": after})
        after = shadow.param_groups
    except Exception:  # noqa: BLE001 - a class whose __setstate__ needs more: the file's entries
        pass
    for i, (group, live) in enumerate(zip(after, optimizer.param_groups, strict=True)):
        if lacks := sorted(set(live) - set(group) - {"params", "param_names"}):
            extra = sorted(set(group) - set(live) - {"params", "param_names"})
            return (f"parameter group {i} lacks {lacks}, which {name} needs at its next step "
                    f"(another optimizer's state{f'; it has {extra} instead' * bool(extra)})")
    return None


def scheduler_problem(saved: Mapping[str, Any], scheduler: Any) -> str | None:
    """Why ``scheduler`` cannot take ``saved``, or None: another class's state (entries missing
    and entries it lacks), or nested schedulers or lambdas that differ in number."""
    live, name = scheduler.state_dict(), type(scheduler).__name__
    extra, lacks = sorted(set(saved) - set(live)), sorted(set(live) - set(saved))
    if extra and lacks:
        return (f"has {extra}, which this {name} does not, and lacks {lacks}, which it needs "
                "(another scheduler's state)")
    for key in ("_schedulers", "lr_lambdas"):
        theirs = saved.get(key)
        if key in live and (not isinstance(theirs, list) or len(theirs) != len(live[key])):
            n = len(theirs) if isinstance(theirs, list) else "no"
            return f"has {n} {key.strip('_')}; this {name} has {len(live[key])}"
    return None


def rename_param_names(state: Mapping[str, Any], names: Callable[[int, list[str]], list[str]]
                       ) -> dict[str, Any]:
    """The state with each group's ``param_names`` (which torch's load adopts) ``names(i, old)``."""
    groups = [{**g, "param_names": names(i, list(g["param_names"]))}
              if isinstance(g, Mapping) and "param_names" in g else g
              for i, g in enumerate(state["param_groups"])]
    return {**state, "param_groups": groups}
