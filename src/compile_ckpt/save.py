"""``save_checkpoint``: clean keys, checksums, atomic write, in the format the suffix names."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointCollisionError, PathLike, UnsupportedContentError
from .formats import FORMAT, is_safetensors, plain_value, write_safetensors, write_torch_file
from .integrity import content_digest, tensor_checksum
from .keys import KeyCollisionError, canonical_fqn, clean_state_dict, unwrap_model, wrapper_paths

log = logging.getLogger("compile_ckpt")


def clean_model_state(model: nn.Module | Mapping[str, Any], path: PathLike | None = None
                      ) -> dict[str, Any]:
    """The model's state dict with every wrapper segment removed and tensors detached; a state
    dict is cleaned without a model (see :func:`~compile_ckpt.keys.clean_keys`)."""
    try:
        if isinstance(model, Mapping):
            state = clean_state_dict(model)[0]
        else:
            paths, state = wrapper_paths(model), {}
            for k, v in model.state_dict().items():
                name = canonical_fqn(k, paths)
                if name in state:
                    raise KeyCollisionError(f"model keys clean to the same name {name!r}")
                state[name] = v
    except KeyCollisionError as exc:
        raise CheckpointCollisionError(str(exc), path) from None
    # A conjugate or negative view is stored as the values it shows (safetensors would write
    # the memory under it); a tensor without such a bit is not copied.
    return {k: v.detach().resolve_conj().resolve_neg() if isinstance(v, torch.Tensor) else v
            for k, v in state.items()}


def save_checkpoint(path: PathLike, model: nn.Module | Mapping[str, Any], *,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any | None = None,
                    metadata: Mapping[str, Any] | None = None, checksums: bool = True) -> Path:
    """Write a checkpoint with clean keys, atomically; return its path.

    Keys carry no wrapper segment whatever wraps the model or its submodules, so the file
    loads into a plain model with plain ``load_state_dict``. ``model`` may also be a state
    dict. With ``checksums`` the SHA-256 of every tensor and of the whole content is stored and
    :func:`~compile_ckpt.load_checkpoint` verifies it. ``.safetensors`` holds the weights,
    JSON-able metadata and JSON-able non-tensor state (tied tensors once, re-tied on load);
    an optimizer or scheduler there is refused.
    """
    path = Path(path)
    state = clean_model_state(model, path)
    safetensors = is_safetensors(path)
    if safetensors and (optimizer is not None or scheduler is not None):
        raise UnsupportedContentError("safetensors holds weights only; save the optimizer and "
                                      "scheduler to a .pt file", path)
    model_class = {} if isinstance(model, Mapping) else {
        "model_class": type(unwrap_model(model)).__name__}
    meta = {"torch_version": str(torch.__version__), **model_class,
            **plain_value(dict(metadata or {}), "metadata", tensors=not safetensors)}
    sums = ({k: tensor_checksum(v) for k, v in state.items() if isinstance(v, torch.Tensor)}
            if checksums else {})
    payload: dict[str, Any] = {"format": FORMAT, "model_state_dict": state, "metadata": meta}
    if sums:
        payload["checksums"] = sums
    if safetensors:
        write_safetensors(path, payload, sums)
    else:
        if optimizer is not None:
            payload["optimizer_state_dict"] = optimizer.state_dict()
        if scheduler is not None:
            payload["scheduler_state_dict"] = scheduler.state_dict()
        known = {id(v): sums[k] for k, v in state.items() if k in sums}  # hash each tensor once
        payload["sha256"] = content_digest(payload, known) if checksums else None
        write_torch_file(path, payload)
    log.info("compile_ckpt: saved %d tensors to %s with clean keys", len(state), path)
    return path
