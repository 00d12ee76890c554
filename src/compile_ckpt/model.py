"""The workshop model: a Conv1d branch over a multichannel signal, an MLP branch over
tabular features, and a regression head. Its state-dict keys look like the seed's
(``cnn_layers.0.weight``)."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of :class:`MultimodalRegressionModel`."""

    signal_channels: int = 4
    signal_length: int = 64
    tabular_features: int = 8
    cnn_channels: tuple[int, ...] = (16, 32)
    kernel_size: int = 5
    mlp_hidden: int = 32
    head_hidden: int = 64
    dropout: float = 0.1
    activation_checkpointing: bool = False

    def __post_init__(self) -> None:
        if not self.cnn_channels:
            raise ValueError("cnn_channels needs at least one layer")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (got {self.kernel_size})")


class MultimodalRegressionModel(nn.Module):
    """Predict one number from a signal ``(B, C, L)`` and tabular features ``(B, F)``.

    With ``config.activation_checkpointing`` each conv block's activations are recomputed
    in backward (``torch.utils.checkpoint``, ``use_reentrant=False``): same keys, less memory.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        layers: list[nn.Module] = []
        c_in = config.signal_channels
        for c_out in config.cnn_channels:
            layers += [nn.Conv1d(c_in, c_out, config.kernel_size, padding=config.kernel_size // 2),
                       nn.GELU()]
            c_in = c_out
        self.cnn_layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.tabular_layers = nn.Sequential(
            nn.Linear(config.tabular_features, config.mlp_hidden), nn.GELU(),
            nn.Linear(config.mlp_hidden, config.mlp_hidden), nn.GELU(),
        )
        self.head = nn.Sequential(
            nn.Linear(c_in + config.mlp_hidden, config.head_hidden), nn.GELU(),
            nn.Dropout(config.dropout), nn.Linear(config.head_hidden, 1),
        )

    def _cnn(self, signal: torch.Tensor) -> torch.Tensor:
        if not (self.config.activation_checkpointing and self.training):
            return self.cnn_layers(signal)
        x = signal
        for i in range(0, len(self.cnn_layers), 2):
            block = self.cnn_layers[i : i + 2]
            x = checkpoint(block, x, use_reentrant=False)
        return x

    def forward(self, signal: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        features = self.pool(self._cnn(signal)).flatten(1)
        return self.head(torch.cat([features, self.tabular_layers(tabular)], dim=1)).squeeze(-1)

    def example_inputs(self, batch: int = 2, device: str | torch.device = "cpu"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Deterministic inputs of the right shapes (for a quick forward pass)."""
        g = torch.Generator().manual_seed(0)
        c = self.config
        signal = torch.randn(batch, c.signal_channels, c.signal_length, generator=g)
        tab = torch.randn(batch, c.tabular_features, generator=g)
        return signal.to(device), tab.to(device)


#: A model small enough for widgets, exercise checks and tests (milliseconds per step).
TINY_CONFIG = ModelConfig(signal_length=16, cnn_channels=(4, 8), mlp_hidden=8, head_hidden=8, dropout=0.0)


def same_predictions(a: nn.Module, b: nn.Module, batch: int = 3) -> bool:
    """Whether two workshop models (wrapped or not) predict bit-identically in eval mode on
    the same deterministic inputs. Leaves both models in eval mode."""
    from .checkpoint import unwrap_model

    a, b = unwrap_model(a), unwrap_model(b)
    x = a.example_inputs(batch)
    a.eval()
    b.eval()
    with torch.no_grad():
        return torch.equal(a(*x), b(*x))


def build_model(config: ModelConfig | None = None, seed: int = 0) -> MultimodalRegressionModel:
    """A model with weights fixed by ``seed`` (same seed, same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultimodalRegressionModel(config)
