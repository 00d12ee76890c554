"""The files real training scripts write, and the renames a live module tree decides."""

from __future__ import annotations

import collections

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from compile_ckpt import (
    UnsupportedContentError,
    clean_state_dict,
    load_checkpoint,
    plain_state_dict,
    save_checkpoint,
)
from conftest import compiled, same_outputs


def _trained(model: nn.Module, named: bool = True):
    opt = torch.optim.AdamW(model.named_parameters() if named else model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    x = model.example_inputs(4) if hasattr(model, "example_inputs") else None
    (model(*x) if x else model._orig_mod(*model._orig_mod.example_inputs(4))).sum().backward()
    opt.step()
    sched.step()
    return opt, sched


def test_the_natural_resume_file_with_a_top_level_tensor(tmp_path, small_model):
    model = compiled(small_model())
    opt, sched = _trained(model)
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
                "rng": torch.get_rng_state()}, tmp_path / "resume.pt")
    target = small_model(1)
    report = load_checkpoint(tmp_path / "resume.pt", target)  # found without key=
    assert report.ok and report.container == "model" and same_outputs(model, target)
    assert report.extra == {"epoch": 3, "rng": f"tensor uint8 [{torch.get_rng_state().numel()}]"}
    assert report.not_restored == ["optimizer"] and "not restored: optimizer" in str(report)
    assert load_checkpoint(tmp_path / "resume.pt", small_model(2), key="model").ok
    torch.save({"model": model.state_dict(), "rng": {"cpu": torch.get_rng_state()}},
               tmp_path / "rng_dict.pt")  # a dict of tensors, but RNG state, never a model's
    report = load_checkpoint(tmp_path / "rng_dict.pt", small_model(4))
    assert report.other_state_dicts == [] and list(report.extra) == ["rng"]
    with_opt = torch.optim.AdamW(target.parameters(), lr=0.1)
    report = load_checkpoint(tmp_path / "resume.pt", small_model(3), optimizer=with_opt)
    assert report.optimizer_loaded and report.not_restored == []


def test_a_dotted_key_walks_the_file(small_model):
    sd = compiled(small_model()).state_dict()
    composer = {"state": {"model": sd, "optimizers": {}}, "rng": [{"torch": torch.ones(2)}]}
    report = load_checkpoint(composer, small_model(1), key="state.model")
    assert report.ok and report.container == "state.model"
    assert load_checkpoint(composer, small_model(1)).container == "state.model"  # the only one
    dotted_name = {"model.ema": sd, "model": sd}  # an entry whose own name has a dot
    assert load_checkpoint(dotted_name, small_model(1), key="model.ema").container == "model.ema"


@pytest.mark.parametrize("named_target", [True, False], ids=["named", "unnamed"])
def test_the_optimizer_takes_the_targets_parameter_names(tmp_path, small_model, named_target):
    model = compiled(small_model())
    opt, _ = _trained(model)
    assert opt.param_groups[0]["param_names"][0].startswith("_orig_mod.")
    raw = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    target = small_model(1)
    plain_names = [n for n, _ in target.named_parameters()]
    o2 = torch.optim.AdamW(target.named_parameters() if named_target else target.parameters())
    load_checkpoint(raw, target, optimizer=o2)
    assert o2.param_groups[0]["param_names"] == plain_names  # torch alone keeps '_orig_mod.'
    path = save_checkpoint(tmp_path / "c.pt", model, optimizer=opt)  # plain names in the file
    saved = torch.load(path, weights_only=True)["optimizer_state_dict"]
    assert saved["param_groups"][0]["param_names"] == plain_names


class Holder(nn.Module):
    """A model whose author named a submodule ``_orig_mod``, beside a parameter ``weight``."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self._orig_mod = nn.Linear(2, 2)
        self.weight = nn.Parameter(torch.randn(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._orig_mod(x) * self.weight


def test_a_users_own_submodule_called_orig_mod_is_the_users(tmp_path):
    src = Holder(0)
    keys = {"weight", "_orig_mod.weight", "_orig_mod.bias"}
    for model in (src, compiled(src)):
        path = save_checkpoint(tmp_path / "h.pt", model)
        state = torch.load(path, weights_only=True)["model_state_dict"]
        assert set(state) == keys
        fresh = Holder(1)
        fresh.load_state_dict(state)  # plain PyTorch
        assert torch.equal(fresh.weight, src.weight)
        assert torch.equal(fresh._orig_mod.weight, src._orig_mod.weight)
    for source in (src.state_dict(), compiled(src).state_dict()):  # either into either
        for target in (Holder(2), compiled(Holder(3))):
            assert load_checkpoint(source, target).ok
            inner = target._orig_mod if isinstance(target, type(compiled(Holder()))) else target
            assert torch.equal(inner.weight, src.weight)


def test_a_users_submodule_called_module_under_ddp(gloo):
    holder = nn.Module()
    holder.module = nn.Linear(2, 2)
    assert set(plain_state_dict(DDP(holder))) == {"module.weight", "module.bias"}


@pytest.mark.parametrize("outside", ["", "_orig_mod.", "module._orig_mod."])
def test_a_prefix_whatever_wrapper_segments_come_first(outside, gloo):
    peft = nn.Module()  # PeftModel's layout: base_model.model.<the model>
    peft.base_model = nn.Module()
    peft.base_model.model = nn.Linear(3, 2)
    wrapped = {"": peft, "_orig_mod.": compiled(peft),
               "module._orig_mod.": DDP(compiled(peft))}[outside]
    state = wrapped.state_dict()
    assert next(iter(state)).startswith(outside + "base_model.model.")
    target = nn.Linear(3, 2)
    report = load_checkpoint(state, target, prefix="base_model.model.")
    assert report.ok and torch.equal(target.weight, peft.base_model.model.weight)
    assert load_checkpoint(state, compiled(nn.Linear(3, 2)), prefix="base_model.model.").ok


class Versioned(nn.Module):
    """A module whose loading depends on the version ``state_dict()`` records in
    ``_metadata``, as BatchNorm's does."""

    _version = 2

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)
        self.seen: list[object] = []

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        self.seen.append(local_metadata.get("version"))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


def test_the_module_versions_in_metadata_survive_every_rename(tmp_path):
    src = nn.Sequential(Versioned())
    raw = compiled(src).state_dict()
    assert "_orig_mod.0" in raw._metadata
    cleaned, _ = clean_state_dict(raw)
    assert cleaned._metadata["0"] == {"version": 2}
    mapped, _ = clean_state_dict(raw, nn.Sequential(Versioned()))
    assert mapped._metadata["0"] == {"version": 2}
    path = save_checkpoint(tmp_path / "v.pt", compiled(src))
    state = torch.load(path, weights_only=True)["model_state_dict"]
    assert state._metadata["0"] == {"version": 2}
    for target in (nn.Sequential(Versioned()), compiled(nn.Sequential(Versioned()))):
        load_checkpoint(path, target)
        module = target[0] if isinstance(target, nn.Sequential) else target._orig_mod[0]
        assert module.seen == [2]  # the version reached the module, under the target's names


def test_sharded_models_are_refused_by_name_never_crashed(tmp_path, gloo):
    from torch.distributed.fsdp import fully_shard

    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    fully_shard(model)
    for suffix in (".pt", ".safetensors"):
        with pytest.raises(UnsupportedContentError, match="DTensor.*dcp.save"):
            save_checkpoint(tmp_path / f"f{suffix}", model)
    assert not list(tmp_path.iterdir())
    plain = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    with pytest.raises(UnsupportedContentError, match="set_model_state_dict"):
        load_checkpoint(plain.state_dict(), model)


def test_other_entries_are_described_whatever_their_kind(small_model):
    point = collections.namedtuple("Point", "x y")
    obj = {"model": small_model().state_dict(), "cfg": point(1, 2), "loss": float("nan"),
           "lr_scheduler": {"last_epoch": 2}}
    report = load_checkpoint(obj, small_model(1))
    assert report.extra["cfg"] == (1, 2) and report.not_restored == ["lr_scheduler"]


def test_from_checkpoint_refuses_a_tensor_left_on_the_meta_device(tmp_path):
    class WithCache(nn.Module):  # a non-persistent buffer: never in a checkpoint
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("cache", torch.ones(2), persistent=False)

    from compile_ckpt import CheckpointMismatchError, from_checkpoint

    path = save_checkpoint(tmp_path / "c.pt", WithCache())
    with pytest.raises(CheckpointMismatchError, match="cache"):
        from_checkpoint(path, WithCache)
    assert from_checkpoint(path, lambda: nn.Linear(2, 2), prefix="lin.").weight.is_meta is False
