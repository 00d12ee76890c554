"""The training loop every notebook uses: one epoch, a few epochs with a progress bar and a
history table, evaluation and prediction. Compiling, saving and loading are *not* here: the
notebooks do them in their own cells, because they are the lesson."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import seed_epoch
from .env import resolve_device


def _on_device(batch: Any, device: torch.device) -> list[torch.Tensor]:
    return [t.to(device, non_blocking=True) for t in batch]


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer,
                device: str | torch.device = "auto", progress: bool = False) -> float:
    """One pass over ``loader`` with MSE loss; returns the mean training loss. ``model`` may be
    compiled or not: it is called, never unwrapped."""
    dev = resolve_device(device)
    model.train()
    total, n = 0.0, 0
    for signal, tab, y in tqdm(loader, leave=False, disable=not progress, desc="batches"):
        signal, tab, y = _on_device((signal, tab, y), dev)
        loss = nn.functional.mse_loss(model(signal, tab), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.item() * y.numel()
        n += y.numel()
    return total / max(n, 1)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: str | torch.device = "auto") -> float:
    """Mean squared error of ``model`` over ``loader``."""
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    for signal, tab, y in (_on_device(b, dev) for b in loader):
        total += nn.functional.mse_loss(model(signal, tab), y, reduction="sum").item()
        n += y.numel()
    model.train(was_training)
    return total / max(n, 1)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: str | torch.device = "auto"
            ) -> torch.Tensor:
    """Predictions for every sample of ``loader``, in order, on the CPU."""
    dev = resolve_device(device)
    was_training = model.training
    model.eval()
    out = [model(s, t).cpu() for s, t, _ in (_on_device(b, dev) for b in loader)]
    model.train(was_training)
    return torch.cat(out)


def fit(model: nn.Module, train_loader: DataLoader, val_loader: DataLoader | None = None, *,
        epochs: int = 3, optimizer: torch.optim.Optimizer | None = None, lr: float = 3e-3,
        device: str | torch.device = "auto", seed: int = 0, first_epoch: int = 0,
        phase: str = "train", progress: bool = True) -> pd.DataFrame:
    """Train ``model`` (as given: compiled or not) for epochs ``first_epoch .. epochs-1`` and
    return one row per epoch. The data order of an epoch depends only on ``(seed, epoch)``,
    so a resumed run sees the batches an uninterrupted one would."""
    dev = resolve_device(device)
    optimizer = optimizer or torch.optim.AdamW(model.parameters(), lr=lr)
    rows = []
    bar = tqdm(range(first_epoch, epochs), desc=phase, unit="epoch", disable=not progress)
    for epoch in bar:
        seed_epoch(train_loader, seed, epoch)
        train_loss = train_epoch(model, train_loader, optimizer, dev)
        val_loss = evaluate(model, val_loader, dev) if val_loader is not None else float("nan")
        rows.append({"phase": phase, "epoch": epoch + 1, "train_loss": train_loss,
                     "val_loss": val_loss})
        bar.set_postfix(train=f"{train_loss:.4f}", val=f"{val_loss:.4f}")
    return pd.DataFrame(rows, columns=["phase", "epoch", "train_loss", "val_loss"])


def workdir(name: str = "") -> Path:
    """Where notebooks write their files: ``$COMPILE_CKPT_WORKDIR`` (the runner and tests set it)
    or ``artifacts/``, plus ``name``; created if missing."""
    path = Path(os.environ.get("COMPILE_CKPT_WORKDIR", "artifacts")) / name
    path.mkdir(parents=True, exist_ok=True)
    return path
