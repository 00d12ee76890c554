"""The target-aware loader, saving, cleaning and reports."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors import torch as safetensors_torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from compile_ckpt import (
    CheckpointCollisionError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    KeyCollisionError,
    clean_state_dict,
    find_state_dicts,
    from_checkpoint,
    load_checkpoint,
    plain_name,
    read_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from compile_ckpt.workshop.model import WRAPPINGS, ModelConfig, build_model, wrap
from conftest import SMALL, compiled, same_outputs


def test_unwrap_model_any_stack_and_idempotent(small_model, gloo):
    m = small_model()
    for wrapped in (
        compiled(m),
        DDP(compiled(m)),
        compiled(DDP(m)),
        nn.DataParallel(compiled(m)),
        m,
    ):
        assert unwrap_model(wrapped) is m
        assert unwrap_model(unwrap_model(wrapped)) is m


def test_plain_names_come_from_the_live_module_tree(small_model, gloo):
    d = DDP(compiled(small_model()))
    assert plain_name("module._orig_mod.head.0.weight", d) == "head.0.weight"
    m = small_model()
    m.cnn_layers = compiled(m.cnn_layers)
    assert plain_name("cnn_layers._orig_mod.0.weight", m) == "cnn_layers.0.weight"
    assert plain_name("cnn_layers._orig_mod", m) == "cnn_layers"  # a module's path too
    holder = nn.Module()
    holder.module = nn.Linear(2, 2)  # a real submodule called "module": kept
    assert plain_name("module.weight", holder) == "module.weight"
    assert plain_name("module.module.weight", DDP(holder)) == "module.weight"


@pytest.mark.parametrize("save_wrap", WRAPPINGS)
@pytest.mark.parametrize("load_wrap", WRAPPINGS)
def test_any_wrapping_into_any_wrapping(save_wrap, load_wrap, gloo):
    src, dst = (
        wrap(build_model(SMALL, seed=0), save_wrap),
        wrap(build_model(SMALL, seed=1), load_wrap),
    )
    sd = src.state_dict()
    keys_before = list(sd)
    report = load_checkpoint(sd, dst)
    assert report.ok and report.loaded == report.total
    assert list(sd) == keys_before  # the caller's dict is not mutated
    assert same_outputs(src, dst)


def test_key_that_matches_is_never_renamed():
    class Holder(nn.Module):  # a real submodule called "module"
        def __init__(self):
            super().__init__()
            self.module = nn.Linear(2, 2)
            self.other = nn.Linear(2, 2)

    src, dst = Holder(), Holder()
    report = load_checkpoint(src.state_dict(), dst)
    assert report.renames == []
    # Compiled Holder: '_orig_mod.module.weight' goes to 'module.weight', keeping the real 'module'.
    report = load_checkpoint(compiled(src).state_dict(), Holder())
    assert {r.target for r in report.renames} == {
        "module.weight",
        "module.bias",
        "other.weight",
        "other.bias",
    }
    assert all(r.removed == ("_orig_mod",) for r in report.renames)
    cleaned, _ = clean_state_dict(compiled(src).state_dict())
    assert set(cleaned) == set(src.state_dict())  # offline: 'module' kept, it is not on every key


def test_collision_is_an_error_not_an_overwrite(small_model):
    m = small_model()
    sd = dict(m.state_dict())
    sd["_orig_mod.head.0.weight"] = torch.zeros_like(sd["head.0.weight"])
    target = small_model(1)
    before = target.head[0].weight.clone()
    with pytest.raises(CheckpointCollisionError, match="head.0.weight"):
        load_checkpoint(sd, target)
    assert torch.equal(target.head[0].weight, before)  # nothing was loaded
    with pytest.raises(KeyCollisionError, match="both become 'head.0.weight'"):
        clean_state_dict(sd)  # the key-matching module alone: KeyCollisionError, no file to name
    assert issubclass(CheckpointCollisionError, KeyCollisionError)  # one except catches both


def test_offline_clean_strips_leading_module_only_when_every_key_has_it(small_model, gloo):
    sd = compiled(DDP(small_model())).state_dict()
    cleaned, renames = clean_state_dict(sd)
    assert set(cleaned) == set(small_model().state_dict())
    assert all(sorted(r.removed) == ["_orig_mod", "module"] for r in renames)
    assert len(renames) == len(sd)


def test_report_str_names_the_prefix(small_model, caplog):
    with caplog.at_level(logging.INFO, logger="compile_ckpt"):
        report = load_checkpoint(compiled(small_model()).state_dict(), small_model(1))
    line = str(report)
    assert "removed '_orig_mod.'" in line and f"{report.total}/{report.total}" in line
    assert line in caplog.text  # the same line goes to logging
    into = load_checkpoint(small_model().state_dict(), compiled(small_model(1)))
    assert "added '_orig_mod.'" in str(into)
    assert "nothing renamed" in str(load_checkpoint(small_model().state_dict(), small_model(1)))


def test_mismatch_error_lists_keys_and_shapes_and_spots_a_trainers_prefix(small_model):
    big = build_model(
        ModelConfig(signal_length=16, cnn_channels=(4, 8, 8), mlp_hidden=8, head_hidden=8)
    )
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(big.state_dict(), small_model())
    assert "Unexpected key(s):\n    cnn_layers.4.weight\n    cnn_layers.4.bias" in str(err.value)
    other = build_model(
        ModelConfig(signal_length=16, cnn_channels=(4, 16), mlp_hidden=8, head_hidden=8)
    )
    with pytest.raises(
        CheckpointMismatchError, match=r"cnn_layers.2.weight: \[16, 4, 5\] -> \[8, 4, 5\]"
    ):
        load_checkpoint(other.state_dict(), small_model())
    partial = dict(small_model().state_dict())
    partial.pop("head.3.bias")
    with pytest.raises(CheckpointMismatchError, match="Missing key"):
        load_checkpoint(partial, small_model())
    report = load_checkpoint(partial, small_model(), strict=False)
    assert report.missing == ["head.3.bias"]
    lightning = {f"model.{k}": v for k, v in compiled(small_model()).state_dict().items()}
    with pytest.raises(CheckpointMismatchError, match="every unexpected key starts with 'model.'"):
        load_checkpoint(lightning, small_model())
    renamed = {k.replace("head", "regressor"): v for k, v in small_model().state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(renamed, small_model())
    assert "Likely cause" not in str(err.value)  # no prefix to suggest: it does not guess


def test_mismatch_message_is_bounded_for_huge_models():
    src = nn.Sequential(*[nn.Linear(2, 2) for _ in range(500)])
    dst = nn.Sequential(
        *[nn.Linear(3, 3) for _ in range(10)], *[nn.Conv1d(2, 2, 1) for _ in range(500)]
    )
    with pytest.raises(CheckpointMismatchError) as err:
        load_checkpoint(src.state_dict(), dst)
    assert len(str(err.value)) < 4000
    assert "... and 500 more" in str(err.value)  # of 510 shape mismatches


def test_save_writes_clean_keys_and_full_state(tmp_path, small_model, gloo):
    m = small_model()
    m.cnn_layers = compiled(m.cnn_layers)
    model = DDP(compiled(m))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    x = unwrap_model(model).example_inputs(4)
    model(*x).sum().backward()
    opt.step()
    sched.step()
    path = save_checkpoint(
        tmp_path / "c.pt",
        model,
        optimizer=opt,
        scheduler=sched,
        extra={"epoch": 3, "note": "x"},
    )
    obj = torch.load(path, weights_only=True)
    assert set(obj["model_state_dict"]) == set(build_model(SMALL).state_dict())
    assert set(obj) == {"model_state_dict", "optimizer_state_dict", "scheduler_state_dict",
                        "epoch", "note"}  # the user's entries and torch's, nothing of ours
    assert obj["epoch"] == 3
    fresh = small_model(5)
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, 1)
    fresh.load_state_dict(obj["model_state_dict"])  # plain PyTorch loads it
    report = load_checkpoint(path, small_model(6), optimizer=opt2, scheduler=sched2)
    assert report.optimizer_loaded and report.scheduler_loaded
    assert sched2.last_epoch == 1 and opt2.state_dict()["state"][0]["step"] == 1
    assert report.extra == {"epoch": 3, "note": "x"}


def test_extra_refuses_what_a_safe_load_cannot_read(tmp_path, small_model):
    with pytest.raises(TypeError, match=r"\['bad'\] is a builtins.object"):
        save_checkpoint(tmp_path / "c.pt", small_model(), extra={"bad": object()})
    with pytest.raises(TypeError, match="may not use the names"):
        save_checkpoint(tmp_path / "c.pt", small_model(), extra={"model_state_dict": 1})
    assert not (tmp_path / "c.pt").exists()


def test_safetensors_round_trip(tmp_path, small_model):
    src = compiled(small_model())
    path = save_checkpoint(tmp_path / "w.safetensors", src, extra={"epoch": "2"})
    dst = small_model(3)
    report = load_checkpoint(path, dst)
    assert report.ok and same_outputs(src, dst)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:  # extra is safetensors' own metadata
        assert fh.metadata() == {"epoch": "2"}
    plain = small_model(4)  # what safetensors itself reads
    safetensors_torch.load_model(plain, path)
    assert same_outputs(src, plain)
    with pytest.raises(TypeError, match="string metadata only"):
        save_checkpoint(tmp_path / "x.safetensors", src, extra={"epoch": 2})
    with pytest.raises(ValueError, match="weights and string metadata only"):
        save_checkpoint(
            tmp_path / "x.safetensors", src, optimizer=torch.optim.SGD(src.parameters(), 0.1)
        )


def test_mmap_assign_meta_model(tmp_path, small_model):
    src = small_model()
    path = save_checkpoint(tmp_path / "c.pt", compiled(src))
    model = from_checkpoint(path, lambda: build_model(SMALL))
    assert isinstance(model, nn.Module)  # the model, as timm's and HF's loaders return it
    assert not any(p.is_meta for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert same_outputs(src, model)


def test_containers_and_wrong_container(small_model):
    sd = small_model().state_dict()
    for obj in ({"state_dict": sd}, {"model": sd}, {"model_state_dict": sd, "epoch": 1}, sd):
        assert load_checkpoint(obj, small_model(1)).ok
    with pytest.raises(CheckpointFormatError, match="it holds 'weights'"):
        load_checkpoint({"weights": [1, 2]}, small_model())
    with pytest.raises(CheckpointFormatError, match="list"):
        load_checkpoint([1, 2], small_model())  # type: ignore[arg-type]


def test_optimizer_requested_but_absent_is_clear(small_model):
    m = small_model()
    with pytest.raises(CheckpointFormatError, match="optimizer"):
        load_checkpoint(m.state_dict(), m, optimizer=torch.optim.SGD(m.parameters(), 0.1))


def test_read_checkpoint_loads_weights_only(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "a.pt")
    assert torch.equal(read_checkpoint(tmp_path / "a.pt")["a"], torch.ones(2))


# ------------------------------------------------------------------ all-or-nothing
def _trained(seed=0):
    model = compiled(build_model(SMALL, seed=seed))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    model(*build_model(SMALL).example_inputs(4)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


@pytest.mark.parametrize(
    "damage",
    [
        "no optimizer",
        "optimizer of another model",
        "optimizer state shape",
        "non-tensor weight",
        "shape",
        "scheduler not a dict",
    ],
)
def test_a_failed_strict_load_changes_nothing(tmp_path, damage):
    from conftest import same_state, state_of

    src, opt, sched = _trained(0)
    path = save_checkpoint(tmp_path / "c.pt", src, optimizer=opt, scheduler=sched)
    obj = torch.load(path, weights_only=True)
    if damage == "no optimizer":
        del obj["optimizer_state_dict"]
    elif damage == "optimizer of another model":
        obj["optimizer_state_dict"]["param_groups"][0]["params"] = [0, 1]
    elif damage == "optimizer state shape":
        obj["optimizer_state_dict"]["state"][0]["exp_avg"] = torch.zeros(3, 3)
    elif damage == "non-tensor weight":
        obj["model_state_dict"]["head.3.bias"] = 1.5
    elif damage == "shape":
        obj["model_state_dict"]["head.3.bias"] = torch.zeros(7)
    else:
        obj["scheduler_state_dict"] = [1, 2]
    model, opt2, sched2 = _trained(5)
    before = state_of(model, opt2, sched2)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(obj, model, optimizer=opt2, scheduler=sched2)
    assert same_state(before, state_of(model, opt2, sched2))
    assert "nothing was loaded" in str(err.value)


def test_dtype_differences_are_reported(small_model):
    sd = {k: v.double() for k, v in small_model().state_dict().items()}
    report = load_checkpoint(sd, small_model(1))
    assert (
        report.ok
        and len(report.dtype_casts) == len(sd)
        and report.dtype_casts[0][1:] == ("float64", "float32")
    )


# --------------------------------------------------------------- containers, prefix
def test_every_state_dict_in_a_file_is_found_and_selectable(small_model):
    sd = small_model().state_dict()
    obj = {
        "model": sd,
        "ema": {k: v + 1 for k, v in sd.items()},
        "metadata": {"rng": {"cpu": torch.ones(2), "seed": 3}},
        "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}, "param_groups": []},
    }
    assert list(find_state_dicts(obj)) == ["model", "ema"]  # not the RNG state, not the optimizer's
    target = small_model(1)
    report = load_checkpoint(obj, target, key="ema")
    assert report.container == "ema" and report.other_state_dicts == ["model"]
    assert torch.equal(target.head[0].weight, sd["head.0.weight"] + 1)
    assert "also holds ema" in str(load_checkpoint(obj, small_model(2)))
    with pytest.raises(CheckpointFormatError, match="no state dict at 'teacher'"):
        load_checkpoint(obj, small_model(), key="teacher")
    with pytest.raises(CheckpointFormatError, match="several state dicts"):
        load_checkpoint({"student": sd, "teacher": sd}, small_model())
    assert find_state_dicts({"models": {"student": sd}}) == {"models.student": sd}


def test_prefix_selects_a_trainers_keys(small_model):
    sd = compiled(small_model()).state_dict()
    lightning = {f"model.{k}": v for k, v in sd.items()} | {"loss_fn.weight": torch.ones(1)}
    report = load_checkpoint(lightning, small_model(1), prefix="model.")
    assert (
        report.ok
        and report.skipped == ["loss_fn.weight"]
        and report.removed_prefixes == {"_orig_mod.": 12}
    )
    with pytest.raises(CheckpointMismatchError, match="no key starts with prefix='ema.'"):
        load_checkpoint(lightning, small_model(1), prefix="ema.")


def test_tied_weights_load_through_the_tie():
    from compile_ckpt.workshop.gpt import GPTConfig, build_gpt

    cfg = GPTConfig(vocab_size=32, seq_len=8, d_model=8, n_layer=1, n_head=2)
    src = build_gpt(cfg, seed=0)
    # stored once, as save_pretrained does
    sd = {
        k: v for k, v in src.state_dict().items() if k != "head.weight"
    }
    dst = build_gpt(cfg, seed=1)
    report = load_checkpoint(sd, dst)
    assert report.ok and report.tied == {"head.weight": "tok.weight"}
    assert dst.head.weight is dst.tok.weight and torch.equal(dst.head.weight, src.tok.weight)


def test_save_checkpoint_takes_a_state_dict(tmp_path, small_model):
    path = save_checkpoint(
        tmp_path / "c.pt", compiled(small_model()).state_dict(), extra={"epoch": 1}
    )
    plain = small_model(1)
    plain.load_state_dict(torch.load(path, weights_only=True)["model_state_dict"])
    assert same_outputs(small_model(), plain)


def test_safetensors_keeps_ties_and_refuses_what_it_cannot_hold(tmp_path):
    from compile_ckpt import UnsupportedContentError
    from compile_ckpt.workshop.gpt import GPTConfig, build_gpt

    cfg = GPTConfig(vocab_size=32, seq_len=8, d_model=8, n_layer=1, n_head=2)
    gpt = build_gpt(cfg)
    path = save_checkpoint(tmp_path / "g.safetensors", compiled(gpt))
    dst = build_gpt(cfg, seed=3)
    assert load_checkpoint(path, dst).ok and torch.equal(dst.head.weight, gpt.tok.weight)
    plain = build_gpt(cfg, seed=4)
    safetensors_torch.load_model(plain, path)  # safetensors' own loader, ties included
    assert torch.equal(plain.head.weight, gpt.tok.weight)

    class WithExtra(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def get_extra_state(self):
            return {"steps": 3}

        def set_extra_state(self, state):
            pass

    with pytest.raises(UnsupportedContentError, match="not a tensor; safetensors holds dense"):
        save_checkpoint(tmp_path / "bad.safetensors", WithExtra())
    views, whole = nn.Module(), torch.ones(4)
    views.register_buffer("a", whole[:2])  # two halves of one memory: neither covers it all
    views.register_buffer("b", whole[2:])
    with pytest.raises(UnsupportedContentError, match="safetensors cannot store it"):
        save_checkpoint(tmp_path / "bad.safetensors", views)
    assert not (tmp_path / "bad.safetensors").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "g.safetensors"]  # no temporary file left


def test_the_state_snapshot_sees_a_changed_string_or_none():
    """The helper the all-or-nothing tests rely on: before, every non-number became 0.0."""
    from conftest import same_state, state_of

    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    before = state_of(opt)
    opt.param_groups[0]["foreach"] = "changed"  # None before
    assert not same_state(before, state_of(opt))
