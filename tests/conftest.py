"""Shared fixtures. Compiling uses backend="eager" unless a test is about inductor: it
produces the same OptimizedModule wrapper and the same keys, in milliseconds."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from compile_ckpt.model import ModelConfig, build_model

SMALL = ModelConfig(signal_length=16, cnn_channels=(4, 8), mlp_hidden=8, head_hidden=8, dropout=0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def gloo() -> Iterator[None]:
    """A world-size-1 gloo process group, so DDP can wrap models in-process."""
    if not dist.is_available():
        pytest.skip("torch.distributed is not available in this build")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture
def small_model():
    return lambda seed=0: build_model(SMALL, seed=seed)


def compiled(model: torch.nn.Module) -> torch.nn.Module:
    return torch.compile(model, backend="eager")


def same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    """Bitwise-equal predictions of two models in eval mode on the same inputs."""
    from compile_ckpt.checkpoint import unwrap_model

    a, b = unwrap_model(a), unwrap_model(b)
    x = a.example_inputs(batch=3)
    a.eval()
    b.eval()
    with torch.no_grad():
        return torch.equal(a(*x), b(*x))
