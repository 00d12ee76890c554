"""Where things are in a loaded checkpoint; the names trainers use live here alone."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from .errors import CheckpointFormatError

#: The entries ``save_checkpoint`` writes: PyTorch's own checkpointing recipe's names.
MODEL_ENTRY, OPTIMIZER_ENTRY, SCHEDULER_ENTRY = ("model_state_dict", "optimizer_state_dict",
                                                 "scheduler_state_dict")
#: Where trainers keep them (nanoGPT ``model``, timm and Lightning ``state_dict``).
MODEL_KEYS = (MODEL_ENTRY, "state_dict", "model")
OPTIMIZER_KEYS = (OPTIMIZER_ENTRY, "optimizer", "optim", "optimizer_states")
SCHEDULER_KEYS = (SCHEDULER_ENTRY, "lr_scheduler", "scheduler", "lr_schedulers")
NOT_MODELS = ("rng", "rng_state", "rng_states", "metadata")  # dicts of tensors, never a model's
BARE = "bare state dict"  # what find_state_dicts calls a file that *is* a state dict


def _tensors_in(d: Any) -> bool:
    return isinstance(d, Mapping) and any(isinstance(v, torch.Tensor) for v in d.values())


def is_state_dict(d: Any) -> bool:
    """String keys to tensors (``_extra_state``: anything); ``{"model": .., "epoch": 3}`` is not."""
    return _tensors_in(d) and all(isinstance(k, str) and (
        isinstance(v, torch.Tensor) or k.endswith("_extra_state")) for k, v in d.items())


def is_optimizer_state(d: Any) -> bool:
    """What ``Optimizer.state_dict()`` returns: a dict with ``state`` and ``param_groups``."""
    return isinstance(d, Mapping) and {"state", "param_groups"} <= set(d)


def find_state_dicts(obj: Any, where: tuple[str, ...] = ()) -> dict[str, Mapping[str, Any]]:
    """Every state dict in a file: :data:`BARE`, or its entries' names dotted (``"state.model"``),
    three levels down at most, never in optimizer, scheduler or RNG state."""
    if is_state_dict(obj):
        return {".".join(where) or BARE: obj}
    found: dict[str, Mapping[str, Any]] = {}
    if isinstance(obj, Mapping) and len(where) < 3 and not is_optimizer_state(obj):
        for k, v in obj.items():
            if isinstance(k, str) and k not in (*OPTIMIZER_KEYS, *SCHEDULER_KEYS, *NOT_MODELS):
                found.update(find_state_dicts(v, (*where, k)))
    return found


def walk(obj: Any, dotted: str) -> tuple[tuple[str, ...], Any] | None:
    """The entry a dotted name names, and its path of keys (an entry ``"model.ema"`` too)."""
    if isinstance(obj, Mapping) and dotted in obj:
        return (dotted,), obj[dotted]
    head, _, rest = dotted.partition(".")
    found = walk(obj[head], rest) if rest and isinstance(obj, Mapping) and head in obj else None
    return None if found is None else ((head, *found[0]), found[1])


def extract_model_state_dict(obj: Any, origin: str | None = None, key: str | None = None
                             ) -> tuple[Mapping[str, Any], str]:
    """The state dict to load and where: at ``key``, else bare, else a MODEL_KEYS entry, else the
    only one."""
    found = find_state_dicts(obj)
    if key is not None:
        if (hit := walk(obj, key)) is None or not isinstance(hit[1], Mapping):
            raise CheckpointFormatError(f"has no state dict at {key!r}; it has "
                                        f"{list(found) or 'none'}", origin)
        return hit[1], ".".join(hit[0])
    if BARE in found:
        return found[BARE], BARE
    for name in MODEL_KEYS:  # these names are enough, even when a value is not a tensor
        if isinstance(obj, Mapping) and _tensors_in(obj.get(name)):
            return obj[name], name
    if len(found) == 1:
        return next(iter(found.values())), next(iter(found))
    if found:
        raise CheckpointFormatError(f"holds several state dicts ({', '.join(found)}); choose one "
                                    "with key=", origin)
    top = ", ".join(map(repr, list(obj)[:8])) if isinstance(obj, Mapping) else ""
    raise CheckpointFormatError(f"no model state dict found (a dict of tensors, or an entry "
                                f"{list(MODEL_KEYS)}); it holds {top or type(obj).__name__}",
                                origin)


def first_entry(obj: Any, keys: tuple[str, ...]) -> tuple[str, Any]:
    """The first of ``keys`` ``obj`` holds, a Lightning list of one unwrapped; or ``("", None)``."""
    for k in keys:
        if isinstance(obj, Mapping) and obj.get(k) is not None:
            value = obj[k]
            return k, value[0] if isinstance(value, list) and len(value) == 1 else value
    return "", None


def optional_state(obj: Any, keys: tuple[str, ...], target: Any, strict: bool,
                   origin: str | None) -> Mapping[str, Any] | None:
    """The optimizer or scheduler state to load into ``target`` (None: nothing to load)."""
    what = "optimizer" if keys == OPTIMIZER_KEYS else "scheduler"
    where, state = first_entry(obj, keys) if target is not None else ("", None)
    if target is not None and state is None and strict:
        raise CheckpointFormatError(f"a {what} was passed but the checkpoint holds no {what} "
                                    f"state (looked for {list(keys)}); nothing was loaded", origin)
    if state is not None and not isinstance(state, Mapping):
        raise CheckpointFormatError(f"its {where!r} is a {type(state).__name__}, not a {what} "
                                    "state dict; nothing was loaded", origin)
    return state


def beside(obj: Any, container: str) -> tuple[dict[str, Any], list[str], list[str]]:
    """Beside the state dict at ``container``: the other entries (described), the optimizer and
    scheduler states, and the other state dicts."""
    others = [n for n in find_state_dicts(obj) if n != container]
    if not isinstance(obj, Mapping) or container == BARE:
        return {}, [], others
    states = [k for k in (*OPTIMIZER_KEYS, *SCHEDULER_KEYS) if obj.get(k)]
    tops = {container.split(".")[0], *states, *(n.split(".")[0] for n in others)}
    return {str(k): describe(v) for k, v in obj.items() if k not in tops}, states, others


def describe(value: Any, depth: int = 0) -> Any:
    """``value`` as JSON holds it, tensors described (``"tensor uint8 [5056]"``), bounded."""
    if isinstance(value, torch.Tensor):
        return f"tensor {str(value.dtype).removeprefix('torch.')} {list(value.shape)}"
    if isinstance(value, str) and len(value) > 500:
        return value[:500] + f"... (+{len(value) - 500} characters)"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (str, int, float, bool, type(None))):
        return value
    if depth >= 6 or not isinstance(value, (Mapping, list, tuple, set)):
        return f"<{type(value).__name__}>"
    items = list(value.items() if isinstance(value, Mapping) else enumerate(value))
    kept = [(str(k), describe(v, depth + 1)) for k, v in items[:100]]
    more = [f"... {len(items) - 100} more"] * (len(items) > 100)
    if isinstance(value, Mapping):
        return dict(kept) | dict.fromkeys(more, "")
    return (tuple if isinstance(value, tuple) else list)([v for _, v in kept] + more)
