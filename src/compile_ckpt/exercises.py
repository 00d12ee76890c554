"""Checks for the notebooks' exercises: each takes the attendee's function, tries it on
cases that matter, and says whether it works and, if not, why. They never raise."""

from __future__ import annotations

import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import load_checkpoint
from .model import TINY_CONFIG, build_model, same_predictions

_SMALL = TINY_CONFIG


def _report(name: str, problems: list[str]) -> tuple[bool, str]:
    ok = not problems
    msg = f"{name}: {'correct!' if ok else 'not yet:'}" + ("" if ok else "\n  - " + "\n  - ".join(problems))
    print(msg)
    return ok, msg


def _call(fn: Callable[..., Any], *args: Any) -> tuple[Any, str]:
    try:
        return fn(*args), ""
    except NotImplementedError:
        return None, "the function still raises NotImplementedError: fill it in"
    except Exception as exc:  # noqa: BLE001 - the attendee's code may raise anything
        return None, f"raised {type(exc).__name__}: {exc} ({traceback.format_exc(limit=1).splitlines()[-1]})"


def check_strip_compile_prefix(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[bool, str]:
    """Exercise 01/02: ``fn(state_dict)`` removes every ``_orig_mod`` *segment* — leading or in
    the middle (a compiled submodule) — and leaves other keys alone."""
    cases = {
        "compiled model": ({"_orig_mod.head.0.weight": 1}, {"head.0.weight": 1}),
        "compiled submodule": ({"cnn_layers._orig_mod.0.weight": 2, "head.0.bias": 3},
                               {"cnn_layers.0.weight": 2, "head.0.bias": 3}),
        "clean checkpoint (must not change)": ({"head.0.weight": 4}, {"head.0.weight": 4}),
        "a name that merely contains the text (whole segments only)":
            ({"_orig_mod.gain_orig_mod.weight": 5}, {"gain_orig_mod.weight": 5}),
    }
    problems = []
    for what, (given, want) in cases.items():
        got, err = _call(fn, dict(given))
        if err:
            return _report("strip_compile_prefix", [err])
        if got != want:
            problems.append(f"{what}: {given} -> {got}, expected {want}")
    return _report("strip_compile_prefix", problems)


def check_portable_save(save: Callable[[nn.Module, Path], None]) -> tuple[bool, str]:
    """Exercise 03: ``save(compiled_model, path)`` writes a file that plain ``load_state_dict``
    loads into an eager model *and* into a model compiled in place (``m.compile()``), with no
    cleaning on the way in."""
    src = build_model(_SMALL, seed=0)
    compiled = torch.compile(src, backend="eager")
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pt"
        _, err = _call(save, compiled, path)
        if err:
            return _report("portable_save", [err])
        try:
            obj = torch.load(path, weights_only=True)
        except Exception as exc:  # noqa: BLE001
            return _report("portable_save", [f"the file does not load with weights_only=True: {exc}"])
        sd = obj.get("model_state_dict", obj) if isinstance(obj, dict) else obj
        for what, target in (("an eager model", build_model(_SMALL, seed=1)),
                             ("a model compiled in place", build_model(_SMALL, seed=2))):
            if what.endswith("in place"):
                target.compile(backend="eager")
            try:
                target.load_state_dict(sd)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"plain load_state_dict into {what} failed: {str(exc).splitlines()[0]}")
                continue
            if not same_predictions(src, target):
                problems.append(f"{what} loaded, but predicts differently")
    return _report("portable_save", problems)


def check_portable_state_dict(fn: Callable[[nn.Module], dict[str, Any]]) -> tuple[bool, str]:
    """Exercise 04: ``fn(model)`` returns a state dict with plain keys whatever wraps the model:
    torch.compile, a compiled submodule, or torch.compile inside DataParallel."""
    problems = []
    for what in ("torch.compile", "compiled submodule", "DataParallel(torch.compile)"):
        src = build_model(_SMALL, seed=0)
        if what == "torch.compile":
            model: nn.Module = torch.compile(src, backend="eager")
        elif what == "compiled submodule":
            src.cnn_layers = torch.compile(src.cnn_layers, backend="eager")
            model = src
        else:
            model = nn.DataParallel(torch.compile(src, backend="eager"))
        sd, err = _call(fn, model)
        if err:
            return _report("portable_state_dict", [err])
        target = build_model(_SMALL, seed=1)
        try:
            target.load_state_dict(sd)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{what}: plain load_state_dict failed: {str(exc).splitlines()[0]}")
            continue
        if not same_predictions(build_model(_SMALL, seed=0) if what != "compiled submodule" else src, target):
            problems.append(f"{what}: loaded, but predicts differently")
    return _report("portable_state_dict", problems)


def check_resume_save(save: Callable[..., None]) -> tuple[bool, str]:
    """Exercise 04: ``save(path, model, optimizer, scheduler, epoch)`` writes what a resume
    needs, so that ``load_checkpoint(path, model, optimizer=..., scheduler=...)`` restores a
    run whose next step matches the uninterrupted one exactly."""
    def setup(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
        m = torch.compile(build_model(_SMALL, seed=seed), backend="eager")
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        return m, opt, torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)

    x = build_model(_SMALL).example_inputs(8)
    y = torch.linspace(-1, 1, 8)

    def step(m: nn.Module, opt: torch.optim.Optimizer, sch: Any) -> float:
        loss = nn.functional.mse_loss(m(*x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sch.step()
        return loss.item()

    m, opt, sch = setup(0)
    step(m, opt, sch)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resume.pt"
        _, err = _call(save, path, m, opt, sch, 1)
        if err:
            return _report("resume_save", [err])
        expected = step(m, opt, sch)
        m2, opt2, sch2 = setup(5)
        try:
            report = load_checkpoint(path, m2, optimizer=opt2, scheduler=sch2)
        except Exception as exc:  # noqa: BLE001
            return _report("resume_save", [f"load_checkpoint could not restore it: {str(exc).splitlines()[0]}"])
        problems = []
        if report.metadata.get("epoch") != 1:
            problems.append(f"the epoch is not in the file's metadata (got {report.metadata.get('epoch')!r})")
        got = step(m2, opt2, sch2)
        if got != expected:
            problems.append(f"the next step's loss is {got}, the uninterrupted run's is {expected}")
    return _report("resume_save", problems)
