"""A small, honest training loop: optional ``torch.compile``, progress bars, the seed's
epoch log lines, per-epoch checkpoints and exact resume."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint, unwrap_model
from .data import seed_epoch
from .env import resolve_device

log = logging.getLogger("compile_ckpt")


def compile_model(model: nn.Module, *, mode: str | None = "default",
                  backend: str = "inductor") -> nn.Module:
    """``torch.compile`` with a log line; ``mode`` applies to the inductor backend only."""
    log.info("Applying torch.compile() with mode=%r backend=%r...", mode, backend)
    if backend == "inductor":
        return torch.compile(model, mode=mode)
    return torch.compile(model, backend=backend)


def make_optimizer(model: nn.Module, lr: float = 3e-3, weight_decay: float = 1e-4
                   ) -> torch.optim.Optimizer:
    """AdamW over the plain model's parameters (the same objects whatever wraps it)."""
    return torch.optim.AdamW(unwrap_model(model).parameters(), lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine decay over ``epochs`` epochs, stepped once per epoch."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))


def _batch_to(batch: Any, device: torch.device) -> list[torch.Tensor]:
    return [t.to(device, non_blocking=True) for t in batch]


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: str | torch.device = "auto") -> float:
    """Mean squared error of ``model`` over ``loader``."""
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for signal, tab, y in (_batch_to(b, device) for b in loader):
        total += nn.functional.mse_loss(model(signal, tab), y, reduction="sum").item()
        n += y.numel()
    model.train(was_training)
    return total / max(n, 1)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: str | torch.device = "auto") -> torch.Tensor:
    """Predictions for every sample of ``loader``, in order, on the CPU."""
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    out = [model(s, t).cpu() for s, t, _ in (_batch_to(b, device) for b in loader)]
    model.train(was_training)
    return torch.cat(out)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """Torch's global RNG state (CPU and, on GPU, CUDA) as tensors a safe load can read."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclasses.dataclass
class TrainResult:
    """What :func:`fit` leaves behind."""

    model: nn.Module  # the module that was trained (compiled if compile=True)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    history: pd.DataFrame
    epochs_done: int
    interrupted: bool = False


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None = None, *,
        epochs: int = 5, lr: float = 3e-3, device: str | torch.device = "auto",
        compile: bool = False, compile_mode: str | None = "default",
        compile_backend: str = "inductor", seed: int = 0,
        optimizer: torch.optim.Optimizer | None = None, scheduler: Any | None = None,
        checkpoint_path: str | os.PathLike[str] | None = None,
        resume_from: str | os.PathLike[str] | None = None, stop_after: int | None = None,
        phase: str = "train", progress: bool = True) -> TrainResult:
    """Train with MSE loss for ``epochs`` epochs; return the model and a history DataFrame.

    - ``compile`` wraps the model with ``torch.compile`` *after* any ``resume_from`` load.
    - ``checkpoint_path``: after every epoch, a checkpoint (model, optimizer, scheduler,
      epoch, RNG state) is written there atomically with clean keys.
    - ``resume_from``: continue from such a checkpoint; the loss trajectory continues
      exactly (data order depends only on ``(seed, epoch)``, RNG state is restored).
    - ``stop_after``: stop after that many epochs in total, as if the job were killed.
    """
    dev = resolve_device(device)
    model = unwrap_model(model).to(dev)
    model.train()
    optimizer = optimizer or make_optimizer(model, lr)
    scheduler = scheduler or make_scheduler(optimizer, epochs)
    start = 0
    if resume_from is not None:
        report = load_checkpoint(resume_from, model, optimizer=optimizer, scheduler=scheduler,
                                 map_location=dev)
        start = int(report.metadata["epoch"])
        set_rng_state(report.metadata["rng_state"], dev)
        log.info("Resumed from %s at epoch %d", resume_from, start)
    else:
        torch.manual_seed(seed)
    runner = compile_model(model, mode=compile_mode, backend=compile_backend) if compile else model
    last = epochs if stop_after is None else min(epochs, stop_after)
    rows = []
    log.info("Starting %s for %d epochs on %s", phase, epochs, dev.type.upper())
    bar = tqdm(range(start, last), desc=phase, unit="epoch", disable=not progress)
    for epoch in bar:
        t0 = time.perf_counter()
        seed_epoch(train_loader, seed, epoch)
        total, n = 0.0, 0
        for batch in tqdm(train_loader, desc=f"epoch {epoch + 1}", leave=False,
                          disable=not progress):
            signal, tab, y = _batch_to(batch, dev)
            loss = nn.functional.mse_loss(runner(signal, tab), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * y.numel()
            n += y.numel()
        lr_now = optimizer.param_groups[0]["lr"]
        scheduler.step()
        train_loss = total / max(n, 1)
        val_loss = evaluate(runner, val_loader, dev) if val_loader is not None else float("nan")
        elapsed = time.perf_counter() - t0
        log.info("Epoch %d/%d | Train Loss: %.4f | Val Loss: %.4f | Time: %.1fs",
                 epoch + 1, epochs, train_loss, val_loss, elapsed)
        rows.append({"phase": phase, "epoch": epoch + 1, "train_loss": train_loss,
                     "val_loss": val_loss, "lr": lr_now, "time_s": elapsed})
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer=optimizer, scheduler=scheduler,
                            metadata={"epoch": epoch + 1, "seed": seed, "phase": phase,
                                      "rng_state": rng_state(dev)})
    history = pd.DataFrame(rows, columns=["phase", "epoch", "train_loss", "val_loss", "lr", "time_s"])
    return TrainResult(runner, optimizer, scheduler, history, last, interrupted=last < epochs)


def setup_logging(level: int = logging.INFO) -> logging.Logger:
    """Show the package's log lines (epoch lines, load reports) in a notebook or terminal."""
    import sys

    logger = logging.getLogger("compile_ckpt")
    logger.setLevel(level)
    if not any(getattr(h, "_compile_ckpt", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._compile_ckpt = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
    return logger


def default_checkpoint_dir() -> Path:
    """Where notebooks write their checkpoints unless told otherwise."""
    return Path(os.environ.get("COMPILE_CKPT_WORKDIR", "artifacts"))
