"""Shared fixtures. Compiling uses backend="eager" unless a test is about inductor: it
produces the same OptimizedModule wrapper and the same keys, in milliseconds."""

from __future__ import annotations

import textwrap
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


def state_of(*modules: object) -> list[tuple[str, object]]:
    """Every value a model, optimizer or scheduler holds, by where it is: tensors cloned, the
    rest (numbers, strings, None, flags) as they are, so a changed ``lr``, ``param_names`` or
    ``_last_lr`` shows as surely as a changed weight."""
    out: list[tuple[str, object]] = []

    def walk(where: str, item: object) -> None:
        if isinstance(item, torch.Tensor):
            out.append((where, item.detach().clone()))
        elif isinstance(item, dict):
            for k, v in item.items():
                walk(f"{where}.{k}", v)
        elif isinstance(item, (list, tuple)):
            for i, v in enumerate(item):
                walk(f"{where}[{i}]", v)
        else:
            out.append((where, item))

    for i, m in enumerate(modules):
        walk(f"#{i}", m.state_dict())
    return out


def same_state(a: list[tuple[str, object]], b: list[tuple[str, object]]) -> bool:
    """Whether two :func:`state_of` snapshots hold the same places and values."""
    def same(x: object, y: object) -> bool:
        if isinstance(x, torch.Tensor) or isinstance(y, torch.Tensor):
            return isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and torch.equal(x, y)
        return type(x) is type(y) and x == y

    return [w for w, _ in a] == [w for w, _ in b] and all(
        same(x, y) for (_, x), (_, y) in zip(a, b, strict=True))


def not_installed(names: tuple[str, ...]) -> str:
    """Python source that, run first in a process, makes ``names`` unimportable there, as if
    those packages were not installed (a bare GPU image, a torch-only install)."""
    return textwrap.dedent(f"""
        import importlib.machinery, sys
        class NotInstalled(importlib.machinery.PathFinder):
            @classmethod
            def find_spec(cls, name, path=None, target=None):
                if name.split(".")[0] in {tuple(names)!r}:
                    return None
                return super().find_spec(name, path, target)
        sys.meta_path = [NotInstalled if f is importlib.machinery.PathFinder else f
                         for f in sys.meta_path]
        sys.path_importer_cache.clear()
    """)
