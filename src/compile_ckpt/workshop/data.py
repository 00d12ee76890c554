"""Deterministic synthetic data: the write-up's multimodal regression task, and token streams for
the GPT pretraining workload. Both have a learnable signal, so losses fall."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch.utils.data import DataLoader, TensorDataset

from .model import ModelConfig

SPLITS = ("pretrain", "final", "val")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Sizes of each split and the noise level of the target."""

    pretrain: int = 2048
    final: int = 1024
    val: int = 512
    noise: float = 0.1
    seed: int = 0


def _make_split(n: int, model_cfg: ModelConfig, noise: float, g: torch.Generator,
                w: torch.Tensor) -> TensorDataset:
    c, length, f = model_cfg.signal_channels, model_cfg.signal_length, model_cfg.tabular_features
    t = torch.linspace(0, 1, length)
    freq = torch.randint(1, 6, (n, 1, 1), generator=g).float()
    phase = torch.rand(n, c, 1, generator=g) * 2 * math.pi
    amp = torch.rand(n, c, 1, generator=g) + 0.5
    jitter = 0.3 * torch.randn(n, c, length, generator=g)
    signal = amp * torch.sin(2 * math.pi * freq * t + phase) + jitter
    tabular = torch.randn(n, f, generator=g)
    # Target: the dominant frequency, the mean amplitude, a linear and a non-linear tabular term.
    y = (0.5 * freq.view(n) + amp.mean(dim=(1, 2)) + tabular @ w
         + 0.5 * torch.tanh(tabular[:, 0] * tabular[:, 1 % f]))
    y = y + noise * torch.randn(n, generator=g)
    return TensorDataset(signal.float(), tabular.float(), y.float())


def make_datasets(model_cfg: ModelConfig | None = None, data_cfg: DataConfig | None = None
                  ) -> dict[str, TensorDataset]:
    """The ``pretrain``, ``final`` and ``val`` splits; the same config gives the same tensors."""
    model_cfg, data_cfg = model_cfg or ModelConfig(), data_cfg or DataConfig()
    g = torch.Generator().manual_seed(data_cfg.seed)
    w = torch.randn(model_cfg.tabular_features, generator=g) / math.sqrt(model_cfg.tabular_features)
    sizes = {"pretrain": data_cfg.pretrain, "final": data_cfg.final, "val": data_cfg.val}
    splits = {name: _make_split(sizes[name], model_cfg, data_cfg.noise, g, w) for name in SPLITS}
    # Standardise the target with the pretraining split's statistics (all splits alike),
    # so a loss of 1.0 means "no better than predicting the mean".
    y = splits["pretrain"].tensors[2]
    mean, std = y.mean(), y.std()
    return {name: TensorDataset(ds.tensors[0], ds.tensors[1], (ds.tensors[2] - mean) / std)
            for name, ds in splits.items()}


def make_loader(dataset: TensorDataset, batch_size: int = 64, *, shuffle: bool = True,
                seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader whose shuffling comes from its own generator (see ``seed_epoch``)."""
    g = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=g,
                      drop_last=drop_last)


def seed_epoch(loader: DataLoader, seed: int, epoch: int) -> None:
    """Make the order of ``epoch`` depend on ``(seed, epoch)`` only, so a resumed run sees
    exactly the batches an uninterrupted one would."""
    if loader.generator is not None:
        loader.generator.manual_seed(seed * 100_003 + epoch)


def token_batches(vocab_size: int, seq_len: int, batch_size: int, n_batches: int, seed: int = 0,
                  device: str | torch.device = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(inputs, targets)`` pairs for next-token prediction, drawn from a fixed random Markov
    chain in which every token has four likely successors: a model can learn it (the loss
    falls from ``ln(vocab)`` towards ``ln(4)``), and the same seed gives the same batches."""
    g = torch.Generator().manual_seed(seed)
    successors = torch.randint(0, vocab_size, (vocab_size, 4), generator=g)
    n = batch_size * n_batches
    tokens = torch.empty(n, seq_len + 1, dtype=torch.long)
    tokens[:, 0] = torch.randint(0, vocab_size, (n,), generator=g)
    choice = torch.randint(0, 4, (n, seq_len), generator=g)
    for t in range(seq_len):
        tokens[:, t + 1] = successors[tokens[:, t], choice[:, t]]
    tokens = tokens.to(device)
    return [(tokens[i:i + batch_size, :-1], tokens[i:i + batch_size, 1:])
            for i in range(0, n, batch_size)]
