"""The recipes people use today, written once so notebooks can run and compare them.

``seed_clean_on_load`` is the fix from the write-up that started this project, kept as
it was (it only strips a *leading* ``_orig_mod.``). The others are the alternatives it
weighs, plus the ones PyTorch offers now.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

log = logging.getLogger("compile_ckpt")

ORIG_MOD_PREFIX = "_orig_mod."


def seed_clean_on_load(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The seed's fix: if any key starts with ``_orig_mod.``, remove that text from every key."""
    state_dict = dict(state_dict)
    if any(key.startswith(ORIG_MOD_PREFIX) for key in state_dict):
        log.info("  → Cleaning torch.compile prefixes from checkpoint...")
        state_dict = {k.replace(ORIG_MOD_PREFIX, ""): v for k, v in state_dict.items()}
    return state_dict


def seed_save(model: nn.Module, path: Any) -> None:
    """Save the way the seed's pipeline did: ``{"model_state_dict": model.state_dict()}``."""
    torch.save({"model_state_dict": model.state_dict()}, path)


def save_orig_mod(model: nn.Module) -> dict[str, Any]:
    """The seed's Alternative 2: reach into the private ``_orig_mod`` before saving."""
    target = model._orig_mod if hasattr(model, "_orig_mod") else model
    return target.state_dict()


def common_prefix(keys: list[str]) -> str:
    """The longest run of whole dotted segments that every key starts with (``''`` if none)."""
    if not keys:
        return ""
    split = [k.split(".")[:-1] for k in keys]
    out = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) != 1:
            break
        out.append(parts[0])
    return ".".join(out) + "." if out else ""


def load_outcome(model: nn.Module, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Try plain ``model.load_state_dict(state_dict)``; say whether it worked and why not.

    On failure the model is left untouched (a strict load that fails copies nothing).
    """
    try:
        model.load_state_dict(state_dict)
        return {"loads": True, "error": "", "missing": 0, "unexpected": 0}
    except RuntimeError as exc:
        keys = set(model.state_dict())
        missing = sorted(keys - set(state_dict))
        unexpected = sorted(set(state_dict) - keys)
        return {"loads": False, "error": str(exc).splitlines()[0], "missing": len(missing),
                "unexpected": len(unexpected), "unexpected_prefix": common_prefix(unexpected),
                "missing_prefix": common_prefix(missing)}
