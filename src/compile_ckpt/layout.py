"""Where things are in a loaded checkpoint: its state dicts, optimizer and scheduler state.

The names trainers use for each entry live here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .errors import CheckpointFormatError

MODEL_KEYS = ("model_state_dict", "state_dict", "model")
OPTIMIZER_KEYS = ("optimizer_state_dict", "optimizer", "optimizer_states")  # last: Lightning's list
SCHEDULER_KEYS = ("scheduler_state_dict", "lr_scheduler", "scheduler", "lr_schedulers")
#: What :func:`find_state_dicts` calls a file that *is* a state dict.
BARE = "bare state dict"
#: Entries that hold tensors but never a model's state dict.
_NOT_MODEL_STATE = frozenset({"metadata", "checksums", "state", "param_groups", "rng",
                              "rng_state", "optim", *OPTIMIZER_KEYS, *SCHEDULER_KEYS})


def is_state_dict(d: Any) -> bool:
    """A non-empty dict of string keys holding at least one tensor."""
    return (isinstance(d, Mapping) and bool(d) and all(isinstance(k, str) for k in d)
            and any(isinstance(v, torch.Tensor) for v in d.values()))


def is_optimizer_state(d: Any) -> bool:
    """What ``Optimizer.state_dict()`` returns: a dict with ``state`` and ``param_groups``."""
    return isinstance(d, Mapping) and {"state", "param_groups"} <= set(d)


def is_scheduler_state(d: Any) -> bool:
    """What an ``LRScheduler.state_dict()`` returns: a dict with ``last_epoch``."""
    return isinstance(d, Mapping) and "last_epoch" in d


def locate_state_dicts(obj: Any, where: tuple[str, ...] = ()
                       ) -> dict[tuple[str, ...], dict[str, Any]]:
    """State dicts in a loaded checkpoint by their path of keys: the object itself (``()``),
    or under one or two levels of entries (not inside optimizer, scheduler, RNG or metadata)."""
    if is_state_dict(obj):
        return {where: dict(obj)}
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    if isinstance(obj, Mapping) and len(where) < 2:
        for k, v in obj.items():
            if isinstance(k, str) and isinstance(v, Mapping) and k not in _NOT_MODEL_STATE:
                found.update(locate_state_dicts(v, (*where, k)))
    return found


def find_state_dicts(obj: Any) -> dict[str, dict[str, Any]]:
    """Every state dict in a loaded checkpoint, by where it is: :data:`BARE` for a file that is
    one, else its entry's name (nested ones dotted: ``"models.teacher"``), in file order."""
    return {".".join(where) or BARE: sd for where, sd in locate_state_dicts(obj).items()}


def extract_model_state_dict(obj: Any, origin: str | None = None, key: str | None = None
                             ) -> tuple[dict[str, Any], str]:
    """The state dict to load from a loaded checkpoint, and its name.

    ``key`` names one (see :func:`find_state_dicts`); else one of :data:`MODEL_KEYS`, else a
    bare state dict, else the only one there is. Several candidates and none of those names:
    ask for ``key``.
    """
    expected = f"a state dict or a dict with one of {list(MODEL_KEYS)}"
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(f"holds a {type(obj).__name__}, not a dict; expected "
                                    f"{expected}", origin)
    found = find_state_dicts(obj)
    if key is not None:
        if key not in found:
            raise CheckpointFormatError(f"has no state dict called {key!r}; it has "
                                        f"{list(found) or 'none'}", origin)
        return found[key], key
    for name in (*MODEL_KEYS, BARE):
        if name in found:
            return found[name], name
    if len(found) == 1:
        return next(iter(found.values())), next(iter(found))
    if found:
        raise CheckpointFormatError(f"holds several state dicts ({', '.join(found)}); choose one "
                                    "with key=", origin)
    top = ", ".join(repr(k) for k in list(obj)[:8]) or "nothing"
    raise CheckpointFormatError(f"no model state dict found; top-level keys are {top}. Expected "
                                f"{expected}", origin)


def first_entry(obj: Mapping[str, Any], keys: Iterable[str]) -> tuple[str, Any]:
    """The first of ``keys`` that ``obj`` holds (not None), unwrapping Lightning's one-element
    lists of states; ``("", None)`` if there is none."""
    for k in keys:
        if obj.get(k) is not None:
            value = obj[k]
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            return k, value
    return "", None
