"""Exercise checks: the reference solutions pass under the labels the notebooks use, natural
plain-PyTorch answers pass, stubs and the seed's fix do not (with reasons); the key explorer."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

from compile_ckpt.workshop import exercises, widgets
from compile_ckpt.workshop.model import WRAPPINGS
from conftest import ROOT

SOLUTIONS = ROOT / "notebooks" / "solutions" / "solutions.py"
CHECKS = {"01": ("check_portable_save", "portable_save"), "02": ("check_strip_compile_prefix", "strip_compile_prefix"),
          "03": ("check_portable_state_dict", "portable_state_dict"), "04": ("check_resume_save", "resume_save")}


@pytest.fixture(scope="module")
def solutions():
    spec = importlib.util.spec_from_file_location("solutions", SOLUTIONS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.mark.parametrize("number", sorted(CHECKS))
def test_solutions_pass_stubs_do_not_and_labels_match_the_notebooks(solutions, number):
    check, answer = CHECKS[number]
    assert getattr(exercises, check)(getattr(solutions, answer))[0] is True

    def stub(*args):
        raise NotImplementedError

    ok, msg = getattr(exercises, check)(stub)
    assert ok is False and "NotImplementedError" in msg
    label = re.search(rf"# Exercise {number} \((\w+)\)", SOLUTIONS.read_text())
    notebook = next(ROOT.glob(f"notebooks/{number}_*.ipynb"))
    source = "".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    assert label and label.group(1) == notebook.stem and f"Exercise {number}" in source
    assert f"def {answer}(" in source and check in source


def test_natural_answers_pass():
    def save_library(path, model, optimizer, scheduler, epoch):
        from compile_ckpt import save_checkpoint

        save_checkpoint(path, model, optimizer=optimizer, scheduler=scheduler, metadata={"epoch": epoch})

    def save_plain(path, model, optimizer, scheduler, epoch):  # the compiled keys, as a learner might
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "epoch": epoch}, path)

    assert exercises.check_resume_save(save_library)[0] and exercises.check_resume_save(save_plain)[0]
    assert exercises.check_portable_save(lambda m, p: torch.save(m._orig_mod.state_dict(), p))[0]


def test_wrong_answers_are_explained():
    ok, msg = exercises.check_portable_save(lambda m, p: torch.save({"model_state_dict": m.state_dict()}, p))
    assert not ok and "plain load_state_dict into a fresh model failed" in msg and "_orig_mod." in msg

    def seed_fix(sd):
        return {k.replace("_orig_mod.", ""): v for k, v in sd.items()} if any(
            k.startswith("_orig_mod.") for k in sd) else dict(sd)

    ok, msg = exercises.check_strip_compile_prefix(seed_fix)
    assert not ok and "compiled submodule" in msg and "whole segments" in msg

    def no_epoch(path, model, optimizer, scheduler, epoch):
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict()}, path)

    ok, msg = exercises.check_resume_save(no_epoch)
    assert not ok and "does not say the epoch" in msg


@pytest.mark.usefixtures("gloo")
@pytest.mark.parametrize("save_as", WRAPPINGS)
def test_explorer_outcomes(save_as):
    r = widgets.explore(save_as, "plain")
    assert r["load_checkpoint"] == "loads"
    html = widgets.render(r)
    assert "keys in the file" in html
    if save_as in ("torch.compile", "DDP(torch.compile)", "torch.compile(DDP)", "compiled submodule"):
        assert r["plain load_state_dict"].startswith("fails") and "color:#c5221f" in html


@pytest.mark.usefixtures("gloo")
def test_explorer_reverse_direction():
    r = widgets.explore("plain", "torch.compile")
    assert r[widgets.LOADERS[1]].startswith("fails") and r["load_checkpoint"] == "loads"
