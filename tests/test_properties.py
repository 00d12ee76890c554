"""Property-based: random module trees, random subtrees wrapped by torch.compile,
Module.compile(), checkpoint_wrapper, and the root by DDP in either order with compile.
Whatever wrapped the saved model and whatever wraps the target, the load is exact."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.nn.parallel import DistributedDataParallel as DDP

from compile_ckpt import clean_state_dict, load_checkpoint, save_checkpoint, unwrap_model

NAMES = ("a", "b", "enc", "module", "head")  # 'module' on purpose: a real submodule name too
WIDTH = 4


class Node(nn.Module):
    """Applies its children in order; a leaf is a Linear."""

    def __init__(self, children: dict[str, nn.Module]) -> None:
        super().__init__()
        for name, child in children.items():
            self.add_module(name, child)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for child in self.children():
            x = torch.tanh(child(x))
        return x


trees = st.recursive(
    st.just("leaf"),
    lambda kids: st.dictionaries(st.sampled_from(NAMES), kids, min_size=1, max_size=3),
    max_leaves=6,
)


def build(spec, seed: int) -> nn.Module:
    torch.manual_seed(seed)

    def make(s):
        return nn.Linear(WIDTH, WIDTH) if s == "leaf" else Node({k: make(v) for k, v in s.items()})

    root = make(spec)
    return root if isinstance(root, Node) else Node({"only": root})


INNER = ("none", "compile", "inplace", "ckpt_wrapper", "compile+ckpt_wrapper")
ROOT = ("plain", "compile", "inplace", "ddp", "ddp(compile)", "compile(ddp)")


def wrap(model: nn.Module, inner: list[str], root: str) -> nn.Module:
    """Wrap the i-th submodule (in named_modules order) by inner[i % len], then the root."""
    # Parents are looked up in the unwrapped tree first, then wrapped deepest-first, so a
    # wrapper never ends up holding a second copy of a child.
    subs = [
        (n, m, model.get_submodule(n.rpartition(".")[0])) for n, m in model.named_modules() if n
    ]
    for i, (name, mod, parent) in reversed(list(enumerate(subs))):
        how = inner[i % len(inner)]
        leaf = name.rpartition(".")[2]
        if how == "compile":
            setattr(parent, leaf, torch.compile(mod, backend="eager"))
        elif how == "inplace":
            mod.compile(backend="eager")
        elif how == "ckpt_wrapper":
            setattr(parent, leaf, checkpoint_wrapper(mod))
        elif how == "compile+ckpt_wrapper":
            setattr(parent, leaf, torch.compile(checkpoint_wrapper(mod), backend="eager"))
    if root == "compile":
        return torch.compile(model, backend="eager")
    if root == "inplace":
        model.compile(backend="eager")
    if root == "ddp":
        return DDP(model)
    if root == "ddp(compile)":
        return DDP(torch.compile(model, backend="eager"))
    if root == "compile(ddp)":
        return torch.compile(DDP(model), backend="eager")
    return model


def outputs(model: nn.Module) -> torch.Tensor:
    """The predictions of the module inside the outer DDP and compile wrappers (the same weights:
    torch before 2.6 cannot compile a DDP model holding a checkpoint wrapper at all)."""
    x = torch.linspace(-1, 1, 3 * WIDTH).reshape(3, WIDTH)
    with torch.no_grad():
        return unwrap_model(model)(x)


@pytest.mark.usefixtures("gloo")
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spec=trees,
    src_inner=st.lists(st.sampled_from(INNER), min_size=1, max_size=3),
    dst_inner=st.lists(st.sampled_from(INNER), min_size=1, max_size=3),
    src_root=st.sampled_from(ROOT),
    dst_root=st.sampled_from(ROOT),
)
def test_saved_one_way_loads_any_other_way(
    tmp_path_factory, spec, src_inner, dst_inner, src_root, dst_root
):
    src = wrap(build(spec, 0), src_inner, src_root)
    dst = wrap(build(spec, 1), dst_inner, dst_root)
    raw = src.state_dict()
    report = load_checkpoint(raw, dst)
    assert report.ok, report
    assert torch.equal(outputs(src), outputs(dst))
    # save_checkpoint writes clean keys: plain PyTorch loads them into an unwrapped model.
    path = save_checkpoint(tmp_path_factory.mktemp("p") / "c.pt", src)
    plain = build(spec, 2)
    plain.load_state_dict(torch.load(path, weights_only=True)["model_state_dict"])
    assert torch.equal(outputs(src), outputs(plain))
    # With the model, clean_state_dict maps onto exactly the target's keys.
    mapped, _ = clean_state_dict(raw, dst)
    assert set(mapped) == set(dst.state_dict())
    assert unwrap_model(unwrap_model(dst)) is unwrap_model(dst)
