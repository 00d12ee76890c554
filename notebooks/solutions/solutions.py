"""Reference solutions for the notebooks' exercises, labelled as in the notebooks.
The tests run each through the same check the notebook uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

PARALLEL = (nn.DataParallel, nn.parallel.DistributedDataParallel)


# Exercise 01 (01_reproduce_the_failure): a checkpoint that loads everywhere.
def portable_save(compiled: nn.Module, path: Path) -> None:
    """Save the module *inside* the compile wrapper: its keys carry no prefix."""
    torch.save({"model_state_dict": compiled._orig_mod.state_dict()}, path)


# Exercise 02 (02_fix_clean_on_load): the original fix, for compiled submodules too.
def strip_compile_prefix(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Drop every ``_orig_mod`` segment, wherever it is; whole segments only."""
    return {".".join(p for p in k.split(".") if p != "_orig_mod"): v
            for k, v in state_dict.items()}


# Exercise 03 (03_alternatives): plain keys, whatever wraps the model (compile, a compiled
# submodule, DDP).
def portable_state_dict(model: nn.Module) -> dict[str, Any]:
    """Peel DataParallel/DDP (``module``) and compile wrappers, then strip what a compiled
    submodule leaves inside."""
    while isinstance(model, PARALLEL) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, PARALLEL) else model._orig_mod
    return strip_compile_prefix(model.state_dict())


# Exercise 04 (04_pretrain_finetune_pipeline): save what a resume needs, in plain PyTorch.
def resume_save(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                epoch: int) -> None:
    """Model (clean keys), optimizer, scheduler and epoch in one ``torch.save``."""
    inner = getattr(model, "_orig_mod", model)
    torch.save({"model_state_dict": inner.state_dict(),
                "optimizer_state_dict": optimizer.state_dict(),
                "scheduler_state_dict": scheduler.state_dict(), "epoch": epoch}, path)
