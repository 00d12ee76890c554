"""Exercise checks (reference solutions pass, stubs and the seed's fix do not) and widgets."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from compile_ckpt import exercises, widgets
from compile_ckpt.recipes import seed_clean_on_load

SOLUTIONS = Path(__file__).resolve().parents[1] / "notebooks" / "solutions" / "solutions.py"


@pytest.fixture(scope="module")
def solutions():
    spec = importlib.util.spec_from_file_location("solutions", SOLUTIONS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@pytest.mark.parametrize("check,answer", [
    ("check_strip_compile_prefix", "strip_compile_prefix"),
    ("check_portable_save", "portable_save"),
    ("check_portable_state_dict", "portable_state_dict"),
    ("check_resume_save", "resume_save"),
])
def test_reference_solutions_pass_and_stubs_do_not(solutions, check, answer):
    fn = getattr(exercises, check)
    assert fn(getattr(solutions, answer))[0] is True

    def stub(*args):
        raise NotImplementedError

    ok, msg = fn(stub)
    assert ok is False and "NotImplementedError" in msg


def test_seed_fix_fails_the_submodule_exercise_with_reasons():
    ok, msg = exercises.check_strip_compile_prefix(seed_clean_on_load)
    assert not ok and "compiled submodule" in msg and "whole segments" in msg


def test_wrong_save_is_explained():
    import torch

    ok, msg = exercises.check_portable_save(lambda m, p: torch.save({"model_state_dict": m.state_dict()}, p))
    assert not ok and "plain load_state_dict into an eager model failed" in msg


@pytest.mark.usefixtures("gloo")
@pytest.mark.parametrize("save_as", widgets.WRAPPINGS)
def test_explorer_outcomes(save_as):
    r = widgets.explore(save_as, "plain")
    assert r["load_checkpoint"].startswith("loads")
    html = widgets.render(r)
    assert "keys in the file" in html
    if save_as in ("torch.compile", "DDP(torch.compile)", "torch.compile(DDP)"):
        assert r["plain load_state_dict"].startswith("fails") and "color:#c5221f" in html


@pytest.mark.usefixtures("gloo")
def test_explorer_reverse_direction():
    r = widgets.explore("plain", "torch.compile")
    assert r["seed's fix"].startswith("fails") and r["load_checkpoint"].startswith("loads")
