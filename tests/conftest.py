"""Shared fixtures. Compiling uses backend="eager" unless a test is about inductor: it
produces the same OptimizedModule wrapper and the same keys, in milliseconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from compile_ckpt.workshop.distributed import single_process_group
from compile_ckpt.workshop.model import TINY_CONFIG, build_model, same_predictions

ROOT = Path(__file__).resolve().parents[1]
SMALL = TINY_CONFIG


@pytest.fixture(scope="session")
def gloo() -> Iterator[None]:
    """A world-size-1 gloo process group, so DDP can wrap models in-process."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    with single_process_group():
        yield


@pytest.fixture
def small_model():
    return lambda seed=0: build_model(SMALL, seed=seed)


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    return torch.compile(model, backend="eager")


def same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Bitwise-equal predictions of two models in eval mode on the same inputs."""
    return same_predictions(a, b)


def state_of(*modules: object) -> list[torch.Tensor]:
    """Copies of every tensor a model, optimizer or scheduler holds, to compare before/after."""
    out: list[torch.Tensor] = []
    for m in modules:
        sd = m.state_dict()
        stack = [sd]
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                out.append(item.detach().clone())
            elif isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
            else:
                out.append(
                    torch.tensor(float(item))
                    if isinstance(item, (int, float))
                    else torch.tensor(0.0)
                )
    return out
