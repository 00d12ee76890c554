"""``save_checkpoint``: the file plain PyTorch loads into the plain model, written atomically."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_write
from .errors import CheckpointCollisionError, PathLike, UnsupportedContentError
from .formats import write_safetensors
from .keys import KeyCollisionError, clean_state_dict, plain_name, plain_state_dict
from .layout import MODEL_ENTRY, OPTIMIZER_ENTRY, SCHEDULER_ENTRY
from .resume import rename_param_names

log = logging.getLogger("compile_ckpt")
#: What a safe load rebuilds (exact types: a subclass, a namedtuple, is pickled as itself).
_LOADABLE = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device,
             torch.Size, torch.layout, torch.memory_format, list, tuple, dict, OrderedDict, set)


def _problem(value: Any, where: str) -> str | None:
    """Where the first value sits that a safe load of a ``.pt`` file would not give back."""
    if "DTensor" in {c.__name__ for c in type(value).__mro__}:
        return (f"{where} is a DTensor, a shard of an FSDP2 or tensor-parallel model: save it "
                "with torch.distributed.checkpoint (dcp.save), or gather it first on every rank "
                "with torch.distributed.checkpoint.state_dict.get_model_state_dict(model, "
                "options=StateDictOptions(full_state_dict=True, cpu_offload=True))")
    if not (isinstance(value, torch.Tensor) or type(value) in _LOADABLE):
        return (f"{where} is a {type(value).__module__}.{type(value).__qualname__}, which "
                "torch.load(weights_only=True) refuses; store numbers, strings, tensors, lists, "
                "tuples and dicts")
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(
        value, (list, tuple, set)) else ()
    return next((p for k, v in items if (p := _problem(v, f"{where}[{k!r}]"))), None)


def save_checkpoint(path: PathLike, model: nn.Module | Mapping[str, Any], *,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any | None = None,
                    extra: Mapping[str, Any] | None = None) -> Path:
    """Write the plain model's state atomically; return the path. ``.pt``: ``torch.save`` of
    ``{"model_state_dict", "optimizer_state_dict", "scheduler_state_dict", **extra}`` (PyTorch's
    recipe); ``.safetensors``: what ``safetensors.torch.save_model`` writes, ``extra`` as its
    string metadata. Everything is checked before anything is written."""
    path, extra = Path(path), dict(extra or {})
    try:
        state = clean_state_dict(model)[0] if isinstance(model, Mapping) else \
            plain_state_dict(model)
    except KeyCollisionError as exc:
        raise CheckpointCollisionError(str(exc), path) from None
    if sharded := next((p for k, v in state.items() if (p := _problem(v, repr(k)))
                        and "DTensor" in p), None):
        raise UnsupportedContentError(f"{sharded}; nothing was written", path)
    if path.suffix == ".safetensors":
        bad = {k: type(v).__name__ for k, v in extra.items() if not isinstance(v, str)}
        if optimizer is not None or scheduler is not None or bad:
            raise UnsupportedContentError(f"safetensors holds weights and string metadata only "
                                          f"(extra has {bad}); save the optimizer, scheduler "
                                          "and other values to a .pt file", path)
        write_safetensors(path, state, extra)
    else:
        payload: dict[str, Any] = {MODEL_ENTRY: state}
        if optimizer is not None:  # its param_names, if it has any, are the plain model's too
            payload[OPTIMIZER_ENTRY] = rename_param_names(optimizer.state_dict(), (
                lambda _, names: list(clean_state_dict(dict.fromkeys(names))[0])) if isinstance(
                model, Mapping) else lambda _, names: [plain_name(n, model) for n in names])
        if scheduler is not None:
            payload[SCHEDULER_ENTRY] = scheduler.state_dict()
        if clash := sorted(set(extra) & set(payload)):
            raise UnsupportedContentError(f"extra may not use the names {clash}: the model, "
                                          "optimizer and scheduler are kept there", path)
        if problem := _problem({**payload, **extra}, "the checkpoint"):
            raise UnsupportedContentError(f"{problem}; nothing was written", path)
        atomic_write(path, lambda tmp: torch.save({**payload, **extra}, tmp))
    log.info("compile_ckpt: saved %d tensors with plain keys to %s", len(state), path)
    return path
