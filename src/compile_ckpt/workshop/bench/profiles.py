"""What a benchmark measures: the workloads, their sizes (profiles) and one training step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..data import token_batches
from ..gpt import GPTConfig, build_gpt, flops_per_token
from ..model import ModelConfig, build_model

EAGER, REGIONAL = "eager", "regional"
ROUTES = {"seed": ("cold", "warm"), "gpt": ("cold", "warm", "mega-cache", "regional")}
#: How a verdict names each workload ("seed" is the CLI's name for the write-up's model).
WORKLOAD_LABELS = {"seed": "workshop model", "gpt": "GPT"}


@dataclasses.dataclass(frozen=True)
class Profile:
    """What to measure: workload, model size, batch, modes, dtypes, variants and repeats."""

    name: str
    workload: str
    model: ModelConfig | GPTConfig
    batch_size: int
    modes: tuple[str, ...]
    dtypes: tuple[str, ...]
    warmup_steps: int
    repeats: int
    steps_per_repeat: int = 1
    variants: tuple[str, ...] = ("",)  # gpt: the attention variants


_SEED_GPU = ModelConfig(
    signal_channels=16,
    signal_length=1024,
    cnn_channels=(128, 256, 256, 256),
    tabular_features=64,
    mlp_hidden=1024,
    head_hidden=2048,
    dropout=0.0,
)
_DEFAULT, _GPU_MODES = (EAGER, "default"), (EAGER, "default", "reduce-overhead")
_TINY_SEED = ModelConfig(
    signal_length=32, cnn_channels=(8,), mlp_hidden=16, head_hidden=16, dropout=0.0
)
_LAPTOP_SEED = ModelConfig(signal_length=128, cnn_channels=(32, 64), dropout=0.0)
_F32, _BOTH = ("float32",), ("float32", "bf16")
PROFILES: dict[tuple[str, str], Profile] = {
    (p.workload, p.name): p
    for p in (
        Profile("cpu-smoke", "seed", _TINY_SEED, 16, _DEFAULT, _F32, 2, 4, 2),
        Profile("laptop", "seed", _LAPTOP_SEED, 64, _DEFAULT, _F32, 3, 15, 4),
        Profile("gpu", "seed", _SEED_GPU, 256, _GPU_MODES, _BOTH, 5, 30, 5),
        # Autotuning took over 9 minutes of a 15-minute H200 lease on this model (2026-11-28).
        Profile(
            "gpu-autotune",
            "seed",
            _SEED_GPU,
            256,
            (EAGER, "max-autotune-no-cudagraphs"),
            _BOTH,
            5,
            30,
            5,
        ),
        Profile(
            "cpu-smoke",
            "gpt",
            GPTConfig(256, 32, 32, 2, 2),
            4,
            _DEFAULT,
            _F32,
            2,
            4,
            1,
            ("manual",),
        ),
        Profile(
            "laptop", "gpt", GPTConfig(256, 64, 64, 2, 2), 8, _DEFAULT, _F32, 2, 8, 1, ("manual",)
        ),
        Profile(
            "gpu",
            "gpt",
            GPTConfig(50304, 1024, 768, 12, 12),
            16,
            _GPU_MODES,
            ("bf16",),
            3,
            20,
            2,
            ("manual", "sdpa"),
        ),
    )
}


def profiles(workload: str) -> list[str]:
    """The profile names of a workload."""
    return [name for (w, name) in PROFILES if w == workload]


def resolve_profile(workload: str, name: str, device: torch.device) -> Profile:
    """``auto`` is ``gpu`` on CUDA and ``laptop`` otherwise."""
    name = ("gpu" if device.type == "cuda" else "laptop") if name == "auto" else name
    if (workload, name) not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r} for workload {workload!r}; choose from {profiles(workload)}"
        )
    return PROFILES[(workload, name)]


@dataclasses.dataclass
class Task:
    """One workload made concrete: how to build the model, the batches, one step's loss."""

    build: Callable[[], torch.nn.Module]
    batches: list[tuple[torch.Tensor, ...]]
    loss: Callable[[Callable[..., torch.Tensor], tuple[torch.Tensor, ...]], torch.Tensor]
    items_per_step: int
    unit: str  # "tokens" (gpt) or "samples" (seed)
    flops_per_step: float


def make_task(profile: Profile, variant: str, device: torch.device) -> Task:
    """The model, data and loss of ``profile`` (``variant``: gpt attention) on ``device``."""
    b = profile.batch_size
    if profile.workload == "gpt":
        cfg = dataclasses.replace(profile.model, attention=variant)
        return Task(
            lambda: build_gpt(cfg).to(device),
            token_batches(cfg.vocab_size, cfg.seq_len, b, 4, device=device),
            lambda fn, batch: F.cross_entropy(
                fn(batch[0]).float().flatten(0, 1), batch[1].flatten()
            ),
            b * cfg.seq_len,
            "tokens",
            flops_per_token(cfg) * b * cfg.seq_len,
        )
    c, g = profile.model, torch.Generator().manual_seed(0)
    batches = [
        tuple(
            t.to(device)
            for t in (
                torch.randn(b, c.signal_channels, c.signal_length, generator=g),
                torch.randn(b, c.tabular_features, generator=g),
                torch.randn(b, generator=g),
            )
        )
        for _ in range(4)
    ]
    return Task(
        lambda: build_model(c).to(device),
        batches,
        lambda fn, batch: F.mse_loss(fn(batch[0], batch[1]).float(), batch[2]),
        b,
        "samples",
        _counted_flops(lambda: build_model(c).to(device), batches[0]),
    )


def _counted_flops(build: Callable[[], torch.nn.Module], batch: tuple[torch.Tensor, ...]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = build()
    with FlopCounterMode(display=False) as counter:
        F.mse_loss(model(batch[0], batch[1]), batch[2]).backward()
    return float(counter.get_total_flops())


def adamw(model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW, fused (one kernel for every parameter) where this device has the fused kernel,
    else the default implementation."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    except RuntimeError:  # "fused=True requires all the params to be ... supported devices"
        return torch.optim.AdamW(model.parameters(), lr=1e-3)


class TrainingStep:
    """One model and its optimizer, trained a step at a time in one mode and dtype."""

    def __init__(self, task: Task, mode: str, dtype: str, device: torch.device) -> None:
        self.task, self.dtype, self.device, self.count = task, dtype, device, 0
        self.model = task.build().train()
        self.optimizer = adamw(self.model)
        if mode == REGIONAL:  # compile the repeated blocks in place, not the whole model
            for block in self.model.blocks:
                block.compile()
        self.forward = (
            self.model if mode in (EAGER, REGIONAL) else torch.compile(self.model, mode=mode)
        )

    def __call__(self) -> torch.Tensor:
        batch = self.task.batches[self.count % len(self.task.batches)]
        self.count += 1
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            loss = self.task.loss(self.forward, batch)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()
