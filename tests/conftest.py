"""Shared fixtures. Compiling uses backend="eager" unless a test is about inductor: it
produces the same OptimizedModule wrapper and the same keys, in milliseconds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from compile_ckpt.distributed import single_process_group
from compile_ckpt.model import TINY_CONFIG, build_model, same_predictions

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
