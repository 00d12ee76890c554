"""Model, data, device resolution and the training loop (exact resume included)."""

from __future__ import annotations

import logging

import pytest
import torch

from compile_ckpt.data import DataConfig, make_datasets, make_loader
from compile_ckpt.env import compile_adds_prefix, resolve_device
from compile_ckpt.model import ModelConfig, MultimodalRegressionModel, build_model
from compile_ckpt.training import fit, predict
from conftest import SMALL

TINY_DATA = DataConfig(pretrain=256, final=128, val=128)


def test_model_keys_look_like_the_seed():
    keys = list(MultimodalRegressionModel(ModelConfig()).state_dict())
    assert keys[0] == "cnn_layers.0.weight"
    assert any(k.startswith("tabular_layers.") for k in keys) and any(k.startswith("head.") for k in keys)
    m = build_model()
    out = m(*m.example_inputs(5))
    assert out.shape == (5,)
    with pytest.raises(ValueError, match="odd"):
        ModelConfig(kernel_size=4)


def test_build_model_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b = build_model(seed=3), build_model(seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_datasets_deterministic_and_split():
    a, b = make_datasets(SMALL, TINY_DATA), make_datasets(SMALL, TINY_DATA)
    assert set(a) == {"pretrain", "final", "val"}
    assert len(a["pretrain"]) == 256 and len(a["val"]) == 128
    assert all(torch.equal(x, y) for x, y in zip(a["val"].tensors, b["val"].tensors, strict=True))
    assert not torch.equal(a["pretrain"].tensors[2][:128], a["val"].tensors[2])


def test_resolve_device():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_compile_adds_prefix_reflects_this_torch():
    keys = list(torch.compile(torch.nn.Linear(1, 1)).state_dict())
    assert compile_adds_prefix() == keys[0].startswith("_orig_mod.")


def test_fit_learns_logs_and_returns_history(caplog):
    data = make_datasets(SMALL, TINY_DATA)
    with caplog.at_level(logging.INFO, logger="compile_ckpt"):
        res = fit(build_model(SMALL), make_loader(data["pretrain"], 32), make_loader(data["val"], 64, shuffle=False),
                  epochs=6, lr=1e-2, device="cpu", progress=False)
    h = res.history
    assert list(h.columns) == ["phase", "epoch", "train_loss", "val_loss", "lr", "time_s"]
    assert h.train_loss.iloc[-1] < 0.8 * h.train_loss.iloc[0]  # a learnable signal: loss falls
    assert h.val_loss.iloc[-1] < h.val_loss.iloc[0]
    assert "Epoch 1/6 | Train Loss: " in caplog.text and "| Val Loss: " in caplog.text and "| Time: " in caplog.text


def test_resume_continues_the_trajectory_exactly(tmp_path):
    """Interrupted + resumed (fresh model, optimizer, compile on) equals uninterrupted."""
    cfg = ModelConfig(signal_length=16, cnn_channels=(4,), mlp_hidden=8, head_hidden=8, dropout=0.2)
    data = make_datasets(cfg, TINY_DATA)

    def loaders():
        return make_loader(data["pretrain"], 32, seed=7), make_loader(data["val"], 64, shuffle=False)

    full = fit(build_model(cfg), *loaders(), epochs=4, device="cpu", compile=True, compile_backend="eager",
               seed=7, progress=False)
    ckpt = tmp_path / "run.pt"
    part = fit(build_model(cfg), *loaders(), epochs=4, device="cpu", compile=True, compile_backend="eager",
               seed=7, checkpoint_path=ckpt, stop_after=2, progress=False)
    assert part.interrupted and len(part.history) == 2
    torch.manual_seed(12345)  # a new process would start from other RNG state
    rest = fit(build_model(cfg, seed=99), *loaders(), epochs=4, device="cpu", compile=True,
               compile_backend="eager", seed=7, resume_from=ckpt, progress=False)
    assert list(rest.history.epoch) == [3, 4]
    resumed = list(part.history.train_loss) + list(rest.history.train_loss)
    assert resumed == list(full.history.train_loss)  # exactly, not approximately
    val = make_loader(data["val"], 64, shuffle=False)
    assert torch.equal(predict(rest.model, val, "cpu"), predict(full.model, val, "cpu"))
