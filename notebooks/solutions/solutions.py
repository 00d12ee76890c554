"""Reference solutions for the notebooks' exercises (kept out of the attendee's way).
The tests run each through the same check the notebook uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from compile_ckpt import save_checkpoint


def strip_compile_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Exercises 01/02: drop every ``_orig_mod`` segment, wherever it is; whole segments only."""
    return {".".join(p for p in k.split(".") if p != "_orig_mod"): v for k, v in state_dict.items()}


def portable_save(model: nn.Module, path: Path) -> None:
    """Exercise 03: save the module under the compile wrapper, so the keys carry no prefix."""
    inner = getattr(model, "_orig_mod", model)
    torch.save({"model_state_dict": inner.state_dict()}, path)


def portable_state_dict(model: nn.Module) -> dict[str, Any]:
    """Exercise 04: peel DataParallel/DDP (``module``) and compile wrappers, then strip the
    segments a compiled submodule leaves."""
    while isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) \
            else model._orig_mod
    return strip_compile_prefix(model.state_dict())


def resume_save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int) -> None:
    """Exercise 04: model, optimizer, scheduler and epoch, written atomically with clean keys."""
    save_checkpoint(path, model, optimizer=optimizer, scheduler=scheduler, metadata={"epoch": epoch})
