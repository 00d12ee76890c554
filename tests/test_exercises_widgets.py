"""Exercise checks: the reference solutions pass under the labels the notebooks use, natural
plain-PyTorch answers pass, stubs and the original fix do not (with reasons), no answer makes a
check raise, ``reveal`` shows each solution; the key explorer."""

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
CHECKS = {
    "01": ("check_portable_save", "portable_save"),
    "02": ("check_strip_compile_prefix", "strip_compile_prefix"),
    "03": ("check_portable_state_dict", "portable_state_dict"),
    "04": ("check_resume_save", "resume_save"),
}


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
    assert f'exercises.reveal("{number}")' in source  # the reveal the notebook and the guide name
    assert f'exercises.reveal("{number}")' in (ROOT / "notebooks" / "README.md").read_text()


def _resume_file(**names):
    """A plain-PyTorch resume save whose keys are named by the learner."""

    def save(path, model, optimizer, scheduler, epoch):
        torch.save(
            {
                names["model"]: model.state_dict(),
                names["optimizer"]: optimizer.state_dict(),
                names["scheduler"]: scheduler.state_dict(),
                names["epoch"]: epoch,
            },
            path,
        )

    return save


def test_natural_answers_pass():
    def save_library(path, model, optimizer, scheduler, epoch):
        from compile_ckpt import save_checkpoint

        save_checkpoint(
            path, model, optimizer=optimizer, scheduler=scheduler, extra={"epoch": epoch}
        )

    for names in (
        {"model": "model", "optimizer": "optimizer", "scheduler": "scheduler", "epoch": "epoch"},
        # 06's DCP names
        {
            "model": "net",
            "optimizer": "optim",
            "scheduler": "sched",
            "epoch": "epoch",
        },
        {
            "model": "model_state_dict",
            "optimizer": "optimizer_state_dict",
            "scheduler": "lr_scheduler",
            "epoch": "epochs_done",
        },
    ):
        assert exercises.check_resume_save(_resume_file(**names))[0], names
    assert exercises.check_resume_save(save_library)[0]
    assert exercises.check_portable_save(lambda m, p: torch.save(m._orig_mod.state_dict(), p))[0]
    assert exercises.check_portable_save(
        lambda m, p: torch.save({"model": m._orig_mod.state_dict()}, p)
    )[0]
    assert exercises.check_portable_save(
        lambda m, p: torch.save(
            {k.replace("_orig_mod.", ""): v for k, v in m.state_dict().items()}, p
        )
    )[0]
    # the natural str.replace answer to exercise 02 handles a compiled submodule: it passes
    assert exercises.check_strip_compile_prefix(
        lambda sd: {k.replace("_orig_mod.", ""): v for k, v in sd.items()}
    )[0]
    # exercise 03: strip the compile segment and DDP's leading module., in either order
    assert exercises.check_portable_state_dict(
        lambda m: {
            k.replace("_orig_mod.", "").removeprefix("module."): v
            for k, v in m.state_dict().items()
        }
    )[0]


def test_wrong_answers_are_explained():
    ok, msg = exercises.check_portable_save(
        lambda m, p: torch.save({"model_state_dict": m.state_dict()}, p)
    )
    assert (
        not ok and "plain load_state_dict into a fresh model failed" in msg and "_orig_mod." in msg
    )

    def original_fix(sd):
        return (
            {k.replace("_orig_mod.", ""): v for k, v in sd.items()}
            if any(k.startswith("_orig_mod.") for k in sd)
            else dict(sd)
        )

    ok, msg = exercises.check_strip_compile_prefix(original_fix)
    assert not ok and "compiled submodule" in msg

    ok, msg = exercises.check_portable_state_dict(
        lambda m: {k.replace("_orig_mod.", ""): v for k, v in m.state_dict().items()}
    )
    # names the keys that are wrong
    assert (
        not ok and "DDP" in msg and "module.cnn_layers.0.weight" in msg
    )

    no_epoch = _resume_file(
        model="model", optimizer="optimizer", scheduler="scheduler", epoch="step"
    )
    ok, msg = exercises.check_resume_save(no_epoch)
    assert not ok and "does not say the epoch" in msg

    def no_scheduler(path, model, optimizer, scheduler, epoch):
        torch.save(
            {"model": model.state_dict(), "optim": optimizer.state_dict(), "epoch": epoch}, path
        )

    ok, msg = exercises.check_resume_save(no_scheduler)
    assert not ok and "scheduler state is not in the file" in msg and "optimizer" not in msg


def test_pickling_the_compiled_module_is_explained_not_raised():
    ok, msg = exercises.check_portable_save(lambda m, p: torch.save(m, p))
    assert not ok and "pickled" in msg and "OptimizedModule" in msg


@pytest.mark.parametrize("number", sorted(CHECKS))
def test_no_answer_makes_a_check_raise(number, tmp_path):
    check = getattr(exercises, CHECKS[number][0])
    odd_answers = [
        lambda *a: None,
        lambda *a: 42,
        lambda *a: [1, 2],
        lambda *a: torch.zeros(2),
        lambda *a: {"x": object()},
        lambda *a: (_ for _ in ()).throw(ValueError("boom")),
    ]
    # these write a file: nothing, garbage, a pickled module, a list of tensors
    if number in (
        "01",
        "04",
    ):
        path_index = 1 if number == "01" else 0
        odd_answers += [
            lambda *a: a[path_index].write_bytes(b"not a checkpoint"),
            lambda *a: torch.save([torch.ones(1)], a[path_index]),
            lambda *a: torch.save(a[1 - path_index if number == "01" else 1], a[path_index]),
        ]
    for answer in odd_answers:
        ok, msg = check(answer)
        assert ok is False and msg


@pytest.mark.parametrize("number", sorted(CHECKS))
def test_reveal_prints_the_solution(number, capsys):
    text = exercises.reveal(number)
    assert f"def {CHECKS[number][1]}(" in text and text in capsys.readouterr().out
    with pytest.raises(ValueError, match="no exercise"):
        exercises.reveal(9)


@pytest.mark.usefixtures("gloo")
@pytest.mark.parametrize("save_as", WRAPPINGS)
def test_explorer_outcomes(save_as):
    r = widgets.explore(save_as, "plain")
    assert r["load_checkpoint"] == "loads"
    html = widgets.render(r)
    assert "keys in the file" in html
    if save_as in (
        "torch.compile",
        "DDP(torch.compile)",
        "torch.compile(DDP)",
        "compiled submodule",
    ):
        assert r["plain load_state_dict"].startswith("fails") and "color:#c5221f" in html


@pytest.mark.usefixtures("gloo")
def test_explorer_reverse_direction():
    r = widgets.explore("plain", "torch.compile")
    assert r[widgets.LOADERS[1]].startswith("fails") and r["load_checkpoint"] == "loads"
