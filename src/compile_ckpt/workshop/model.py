"""The workshop model (the write-up's shape: a Conv1d branch over a multichannel signal, an MLP
branch over tabular features, a regression head; keys like ``cnn_layers.0.weight``), and the one
place that wraps a model every way the lessons and tests need."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..keys import unwrap_model


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

    def __post_init__(self) -> None:
        if not self.cnn_channels:
            raise ValueError("cnn_channels needs at least one layer")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (got {self.kernel_size})")


class MultimodalRegressionModel(nn.Module):
    """Predict one number from a signal ``(B, C, L)`` and tabular features ``(B, F)``."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        layers: list[nn.Module] = []
        c_in = config.signal_channels
        for c_out in config.cnn_channels:
            k = config.kernel_size
            layers += [nn.Conv1d(c_in, c_out, k, padding=k // 2), nn.GELU()]
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

    def features(self, signal: torch.Tensor) -> torch.Tensor:
        """The signal branch up to the pooled features (subclasses change how it runs)."""
        return self.pool(self.cnn_layers(signal)).flatten(1)

    def forward(self, signal: torch.Tensor, tabular: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.features(signal), self.tabular_layers(tabular)], dim=1)
        return self.head(both).squeeze(-1)

    def example_inputs(self, batch: int = 2, device: str | torch.device = "cpu"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Deterministic inputs of the right shapes (for a quick forward pass)."""
        g = torch.Generator().manual_seed(0)
        c = self.config
        signal = torch.randn(batch, c.signal_channels, c.signal_length, generator=g)
        tab = torch.randn(batch, c.tabular_features, generator=g)
        return signal.to(device), tab.to(device)


#: A model small enough for widgets, exercise checks and tests (milliseconds per step).
TINY_CONFIG = ModelConfig(signal_length=16, cnn_channels=(4, 8), mlp_hidden=8, head_hidden=8,
                          dropout=0.0)


def build_model(config: ModelConfig | None = None, seed: int = 0) -> MultimodalRegressionModel:
    """A model with weights fixed by ``seed`` (same seed, same weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MultimodalRegressionModel(config)


def same_predictions(a: nn.Module, b: nn.Module, batch: int = 3, atol: float = 0.0) -> bool:
    """Whether two workshop models (wrapped or not) predict the same, within ``atol`` (0: bit for
    bit), in eval mode on the same deterministic inputs. Leaves both models in eval mode."""
    a, b = unwrap_model(a), unwrap_model(b)
    x = a.example_inputs(batch)
    a.eval()
    b.eval()
    with torch.no_grad():
        ya, yb = a(*x), b(*x)
    return torch.equal(ya, yb) if atol == 0 else bool((ya - yb).abs().max() <= atol)


#: How :func:`wrap` can wrap a model, in the order the key explorer lists them.
WRAPPINGS = ("plain", "torch.compile", "Module.compile", "compiled submodule", "DDP",
             "DDP(torch.compile)", "torch.compile(DDP)", "checkpoint_wrapper")


def wrap(model: nn.Module, kind: str, backend: str = "eager") -> nn.Module:
    """``model`` wrapped as ``kind`` names (see :data:`WRAPPINGS`). Compiling is lazy and
    ``backend="eager"`` gives the same wrapper and keys as inductor, in milliseconds. The DDP
    kinds need a process group (``distributed.single_process_group``); the submodule kinds wrap
    the model's first child."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    if kind not in WRAPPINGS:
        raise ValueError(f"unknown wrapping {kind!r}; choose from {WRAPPINGS}")
    if kind == "Module.compile":
        model.compile(backend=backend)
    elif kind in ("compiled submodule", "checkpoint_wrapper"):
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        name, child = next(iter(model.named_children()))
        setattr(model, name, torch.compile(child, backend=backend) if kind == "compiled submodule"
                else checkpoint_wrapper(child))
    elif kind == "torch.compile":
        model = torch.compile(model, backend=backend)
    elif kind == "DDP":
        model = DDP(model)
    elif kind == "DDP(torch.compile)":
        model = DDP(torch.compile(model, backend=backend))
    elif kind == "torch.compile(DDP)":
        model = torch.compile(DDP(model), backend=backend)
    return model
