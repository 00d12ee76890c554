"""Exercise checks: the reference solutions pass under the labels the notebooks use, and so does
the text ``reveal`` prints, on its own; natural plain-PyTorch answers pass; stubs read as "not
attempted" (in the check and in a run's summary); wrong answers do not pass (with reasons); no
answer makes a check raise, end the program or print pages; the key explorer, with and without
the library's row."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys

import numpy as np
import pytest
import torch

from compile_ckpt.workshop import exercises, widgets
from compile_ckpt.workshop.model import WRAPPINGS
from compile_ckpt.workshop.summary import NotebookRun, write_index_html, write_summary
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
def test_solutions_pass_stubs_are_not_attempted_and_labels_match_the_notebooks(solutions, number):
    check, answer = CHECKS[number]
    assert getattr(exercises, check)(getattr(solutions, answer)).status == "passed"

    def stub(*args):
        raise NotImplementedError  # your code here

    verdict = getattr(exercises, check)(stub)
    assert verdict.status == "not attempted" and not verdict.passed
    assert "not attempted" in verdict.message and "correct" not in verdict.message
    label = re.search(rf"# Exercise {number} \((\w+)\)", SOLUTIONS.read_text())
    notebook = next(ROOT.glob(f"notebooks/{number}_*.ipynb"))
    source = "".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"])
    assert label and label.group(1) == notebook.stem and f"Exercise {number}" in source
    assert f"def {answer}(" in source and check in source
    assert f'exercises.reveal("{number}")' in source  # the reveal the notebook and the guide name
    assert f'exercises.reveal("{number}")' in (ROOT / "notebooks" / "README.md").read_text()


@pytest.mark.parametrize("number", sorted(CHECKS))
def test_the_revealed_text_stands_alone(number):
    """Run in an empty namespace, the text ``reveal`` prints defines an answer that passes: its
    imports are in it, and it needs nothing else from solutions.py."""
    namespace: dict = {}
    exec(compile(exercises.reveal(number), f"reveal-{number}", "exec"), namespace)
    check, answer = CHECKS[number]
    assert getattr(exercises, check)(namespace[answer]).passed


def _resume_file(rng=None, **names):
    """A plain-PyTorch resume save whose keys are named by the learner; ``rng(state)`` adds
    the RNG state where that learner puts it."""

    def save(path, model, compiled, optimizer, scheduler, epoch):
        state = {
            names.get("model", "model"): model.state_dict(),
            names.get("optimizer", "optimizer"): optimizer.state_dict(),
            names.get("scheduler", "scheduler"): scheduler.state_dict(),
            names.get("epoch", "epoch"): epoch,
        }
        torch.save(rng(state) if rng else {**state, "rng": torch.get_rng_state()}, path)

    return save


def test_natural_answers_to_exercise_04_pass():
    def save_library(path, model, compiled, optimizer, scheduler, epoch):
        from compile_ckpt import save_checkpoint

        extra = {"epoch": epoch, "rng": torch.get_rng_state()}
        save_checkpoint(path, compiled, optimizer=optimizer, scheduler=scheduler, extra=extra)

    def every_rng():
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all(),
            "python": random.getstate(),
            "numpy": np.random.get_state(),
        }

    answers = [
        _resume_file(),  # "rng" at the top level, as 04 says a resume needs
        _resume_file(model="net", optimizer="optim", scheduler="sched"),  # 06's DCP names
        _resume_file(
            model="model_state_dict",
            optimizer="optimizer_state_dict",
            scheduler="lr_scheduler",
            epoch="epochs_done",
        ),
        _resume_file(rng=lambda s: {**s, "rng_state": torch.random.get_rng_state()}),
        _resume_file(rng=lambda s: {"state": s, "rng": {"cpu": torch.get_rng_state()}}),
        _resume_file(rng=lambda s: {**s, "rng": every_rng()}),  # numpy's state is an ndarray
        _resume_file(rng=lambda s: {**s, "rngs": [torch.get_rng_state()]}),
        save_library,
    ]
    for i, answer in enumerate(answers):
        assert exercises.check_resume_save(answer).passed, i


def test_natural_answers_to_exercises_01_to_03_pass():
    for save in (
        lambda model, compiled, p: torch.save(model.state_dict(), p),  # bare, the module compiled
        lambda model, compiled, p: torch.save({"model_state_dict": model.state_dict()}, p),
        lambda model, compiled, p: torch.save({"state": model.state_dict()}, p),
        lambda model, compiled, p: torch.save({"model": compiled._orig_mod.state_dict()}, p),
        lambda model, compiled, p: torch.save(
            {k.replace("_orig_mod.", ""): v for k, v in compiled.state_dict().items()}, p
        ),
    ):
        assert exercises.check_portable_save(save).passed
    # the natural str.replace answer to exercise 02 handles a compiled submodule: it passes
    assert exercises.check_strip_compile_prefix(
        lambda sd: {k.replace("_orig_mod.", ""): v for k, v in sd.items()}
    ).passed
    # exercise 03: strip the compile segment and DDP's leading module., in either order; or
    # PyTorch's own DCP helper (03's recipe 6)
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    assert exercises.check_portable_state_dict(
        lambda m: {
            k.replace("_orig_mod.", "").removeprefix("module."): v
            for k, v in m.state_dict().items()
        }
    ).passed
    assert exercises.check_portable_state_dict(get_model_state_dict).passed


def test_wrong_answers_are_explained():
    verdict = exercises.check_portable_save(
        lambda model, compiled, p: torch.save({"model_state_dict": compiled.state_dict()}, p)
    )
    assert verdict.status == "not yet" and "_orig_mod." in verdict.message
    assert "model.state_dict()" in verdict.message  # names the module to save

    def original_fix(sd):
        return (
            {k.replace("_orig_mod.", ""): v for k, v in sd.items()}
            if any(k.startswith("_orig_mod.") for k in sd)
            else dict(sd)
        )

    verdict = exercises.check_strip_compile_prefix(original_fix)
    assert verdict.status == "not yet" and "compiled submodule" in verdict.message

    verdict = exercises.check_portable_state_dict(
        lambda m: {k.replace("_orig_mod.", ""): v for k, v in m.state_dict().items()}
    )
    # names the keys that are wrong
    assert not verdict.passed and "DDP" in verdict.message
    assert "module.cnn_layers.0.weight" in verdict.message

    verdict = exercises.check_resume_save(_resume_file(epoch="step"))
    assert not verdict.passed and "does not say the epoch" in verdict.message

    def no_scheduler(path, model, compiled, optimizer, scheduler, epoch):
        torch.save(
            {"model": model.state_dict(), "optim": optimizer.state_dict(), "epoch": epoch}, path
        )

    verdict = exercises.check_resume_save(no_scheduler)
    assert not verdict.passed and "scheduler state is not in the file" in verdict.message
    assert "optimizer" not in verdict.message


def test_exercise_04_requires_plain_keys_and_the_rng_state():
    def wrapped_keys(path, model, compiled, optimizer, scheduler, epoch):
        _resume_file()(path, compiled, compiled, optimizer, scheduler, epoch)

    verdict = exercises.check_resume_save(wrapped_keys)
    assert not verdict.passed and "'_orig_mod.'" in verdict.message
    verdict = exercises.check_resume_save(_resume_file(rng=lambda s: s))
    assert not verdict.passed and "RNG state" in verdict.message
    before = torch.get_rng_state()
    exercises.check_resume_save(_resume_file())
    assert torch.equal(before, torch.get_rng_state())  # the learner's RNG is left alone


def test_pickling_the_compiled_module_is_explained_not_raised():
    verdict = exercises.check_portable_save(lambda model, compiled, p: torch.save(compiled, p))
    assert not verdict.passed and "pickled" in verdict.message
    assert "OptimizedModule" in verdict.message


def _odd_answers(number):
    odd = [
        lambda *a: None,
        lambda *a: 42,
        lambda *a: [1, 2],
        lambda *a: torch.zeros(2),
        lambda *a: {"x": object()},
        lambda *a: (_ for _ in ()).throw(ValueError("boom")),
        lambda *a: (_ for _ in ()).throw(NotImplementedError("DDP: not yet")),
    ]
    if number in ("01", "04"):  # these write a file: garbage, a list of tensors, a module
        where = 2 if number == "01" else 0
        odd += [
            lambda *a: a[where].write_bytes(b"not a checkpoint"),
            lambda *a: torch.save([torch.ones(1)], a[where]),
            lambda *a: torch.save(a[1], a[where]),
        ]
    return odd


@pytest.mark.parametrize("number", sorted(CHECKS))
def test_no_answer_makes_a_check_raise(number):
    check = getattr(exercises, CHECKS[number][0])
    for answer in _odd_answers(number):
        verdict = check(answer)
        assert verdict.status == "not yet" and verdict.message


@pytest.mark.parametrize("number", sorted(CHECKS))
@pytest.mark.parametrize("ending", ["sys.exit()", "exit(3)", "quit()", "raise SystemExit"])
def test_an_answer_that_exits_is_reported_and_the_check_goes_on(number, ending):
    namespace = {"sys": sys}
    exec(f"def exiting(*args):\n    {ending}\n", namespace)
    verdict = getattr(exercises, CHECKS[number][0])(namespace["exiting"])
    assert verdict.status == "not yet" and "SystemExit" in verdict.message


@pytest.mark.parametrize("number", sorted(CHECKS))
def test_a_huge_answer_prints_a_short_message(number, capsys):
    # 200,000 keys returned; a file of 20,000 tensors (reading 200,000 back takes ~20 s)
    size = 20_000 if number in ("01", "04") else 200_000
    huge = {f"layer{i}.weight": torch.zeros(1) for i in range(size)}

    def answer(*args):
        if number == "01":
            torch.save(huge, args[2])
        elif number == "04":
            torch.save({"model": huge, "epoch": 1}, args[0])
        return huge

    verdict = getattr(exercises, CHECKS[number][0])(answer)
    printed = capsys.readouterr().out
    assert not verdict.passed and len(printed) < 3000 and len(verdict.message) < 3000


def test_a_run_summary_shows_an_unsolved_exercise_as_not_attempted(tmp_path):
    run = NotebookRun(
        "01_x",
        str(tmp_path / "01_x.ipynb"),
        "ok",
        1.0,
        {"exercise_01": "not attempted", "exercise_02": "passed"},
    )
    meta = {"finished_utc": "now", "git_commit": "", "versions": {"torch": torch.__version__}}
    md, _ = write_summary([run], tmp_path, meta)
    page = write_index_html([run], tmp_path, meta).read_text()
    for shown in (md.read_text(), page):
        assert "exercise_01" in shown and "not attempted" in shown and "False" not in shown


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


def test_the_plain_explorer_shows_no_library_row():
    """01 comes before the library: its explorer shows plain PyTorch only."""
    r = widgets.explore("torch.compile", "plain", library=False)
    assert set(widgets.LOADERS) - set(r) == {"load_checkpoint"}
    assert "load_checkpoint" not in widgets.render(r)
    assert "load_checkpoint" in widgets.render(widgets.explore("torch.compile", "plain"))
