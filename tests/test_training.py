"""Model, data, GPT workload, device resolution and the training loop."""

from __future__ import annotations

import math

import pytest
import torch

from compile_ckpt.workshop.data import DataConfig, make_datasets, make_loader, token_batches
from compile_ckpt.workshop.env import resolve_device, shipped
from compile_ckpt.workshop.gpt import GPTConfig, build_gpt, flops_per_token
from compile_ckpt.workshop.model import ModelConfig, MultimodalRegressionModel, build_model
from compile_ckpt.workshop.training import fit, predict
from conftest import ROOT, SMALL

TINY_DATA = DataConfig(pretrain=256, final=128, val=128)


def test_model_keys_look_like_the_seed():
    keys = list(MultimodalRegressionModel(ModelConfig()).state_dict())
    assert keys[0] == "cnn_layers.0.weight"
    assert any(k.startswith("tabular_layers.") for k in keys) and any(
        k.startswith("head.") for k in keys
    )
    m = build_model()
    assert m(*m.example_inputs(5)).shape == (5,)
    with pytest.raises(ValueError, match="odd"):
        ModelConfig(kernel_size=4)


def test_build_model_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_model(seed=3), build_model(seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(
        torch.equal(x, y)
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_datasets_deterministic_and_split():
    a, b = make_datasets(SMALL, TINY_DATA), make_datasets(SMALL, TINY_DATA)
    assert (
        set(a) == {"pretrain", "final", "val"}
        and len(a["pretrain"]) == 256
        and len(a["val"]) == 128
    )
    assert all(torch.equal(x, y) for x, y in zip(a["val"].tensors, b["val"].tensors, strict=True))


def test_gpt_variants_share_keys_and_tie_the_head():
    cfg = GPTConfig(vocab_size=64, seq_len=16, d_model=16, n_layer=2, n_head=2)
    sdpa, manual = build_gpt(cfg), build_gpt(GPTConfig(**{**cfg.__dict__, "attention": "manual"}))
    assert list(sdpa.state_dict()) == list(manual.state_dict())
    assert sdpa.head.weight is sdpa.tok.weight
    manual.load_state_dict(sdpa.state_dict())
    idx = torch.randint(0, 64, (2, 16))
    # the hand-written ops compute the same model
    assert torch.allclose(
        sdpa(idx), manual(idx), atol=1e-5
    )
    params = sum(p.numel() for p in sdpa.parameters()) - sdpa.pos.weight.numel()
    assert flops_per_token(cfg) == 6 * params + 12 * 2 * 16 * 16


def test_token_batches_are_learnable_and_deterministic():
    batches = token_batches(64, 16, 8, 4, seed=1)
    assert len(batches) == 4 and batches[0][0].shape == (8, 16)
    assert torch.equal(batches[0][1][:, :-1], batches[0][0][:, 1:])  # targets are the next tokens
    assert all(
        torch.equal(a, b)
        for a, b in zip(batches[0], token_batches(64, 16, 8, 4, seed=1)[0], strict=True)
    )
    model = build_gpt(GPTConfig(vocab_size=64, seq_len=16, d_model=32, n_layer=1, n_head=2))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        for x, y in batches:
            loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
        losses.append(loss.item())
    assert losses[0] > math.log(64) - 0.5 and losses[-1] < losses[0] - 1.0  # it learns the chain


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_fit_learns_and_trains_what_it_is_given():
    data = make_datasets(SMALL, TINY_DATA)
    model = torch.compile(build_model(SMALL), backend="eager")
    h = fit(
        model,
        make_loader(data["pretrain"], 32),
        make_loader(data["val"], 64, shuffle=False),
        epochs=6,
        lr=1e-2,
        device="cpu",
        progress=False,
    )
    assert list(h.columns) == ["phase", "epoch", "train_loss", "val_loss"] and list(h.epoch) == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    assert (
        h.train_loss.iloc[-1] < 0.8 * h.train_loss.iloc[0]
        and h.val_loss.iloc[-1] < h.val_loss.iloc[0]
    )
    assert predict(model, make_loader(data["val"], 64, shuffle=False), "cpu").shape == (128,)


def test_shipped_finds_results_and_solutions_in_the_repository(monkeypatch, tmp_path):
    assert (shipped("results") / "h200-2026-11-28" / "bench.json").exists()
    assert (
        shipped("solutions") / "solutions.py"
    ) == ROOT / "notebooks" / "solutions" / "solutions.py"
    monkeypatch.setenv("COMPILE_CKPT_RESULTS", str(tmp_path))
    assert shipped("results") == tmp_path
