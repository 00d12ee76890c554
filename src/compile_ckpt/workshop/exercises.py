"""Checks for the notebooks' exercises. Each takes the learner's function, tries it on the
cases that matter, prints whether it works and, if not, why, and returns ``(ok, message)``.
They never raise. Any natural plain-PyTorch answer passes; so does one using the library."""

from __future__ import annotations

import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError, extract_model_state_dict, load_checkpoint
from .model import TINY_CONFIG, build_model, same_predictions, wrap


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
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
        return None, f"raised {type(exc).__name__}: {exc} ({traceback.format_exc(limit=1).splitlines()[-1]})"


def _model_state(path: Path) -> tuple[dict[str, Any] | None, str]:
    try:
        obj = torch.load(path, weights_only=True)
        return extract_model_state_dict(obj)[0], ""
    except (CheckpointError, RuntimeError, OSError) as exc:
        return None, f"the file does not hold a state dict that torch.load(weights_only=True) reads: {exc}"


def check_portable_save(save: Callable[[nn.Module, Path], None]) -> tuple[bool, str]:
    """Exercise 01: ``save(compiled, path)`` writes a file that plain ``load_state_dict`` loads
    into a fresh, uncompiled model, with the trained model's predictions."""
    src = build_model(TINY_CONFIG, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pt"
        _, err = _call(save, torch.compile(src, backend="eager"), path)
        state, err = (None, err) if err else _model_state(path)
    if err:
        return _report("portable_save", [err])
    target = build_model(TINY_CONFIG, seed=1)
    try:
        target.load_state_dict(state)
    except RuntimeError as exc:
        return _report("portable_save", [f"plain load_state_dict into a fresh model failed: {str(exc).splitlines()[0]}"
                                         f" (first keys in your file: {list(state)[:2]})"])
    return _report("portable_save", [] if same_predictions(src, target) else ["it loaded, but predicts differently"])


def check_strip_compile_prefix(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> tuple[bool, str]:
    """Exercise 02: ``fn(state_dict)`` removes every ``_orig_mod`` *segment* — leading or in the
    middle (a compiled submodule) — and leaves every other key alone."""
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


def check_portable_state_dict(fn: Callable[[nn.Module], dict[str, Any]]) -> tuple[bool, str]:
    """Exercise 03: ``fn(model)`` returns a state dict with plain keys whatever wraps the model:
    torch.compile, a compiled submodule, or torch.compile inside DataParallel."""
    problems = []
    for what in ("torch.compile", "compiled submodule", "DataParallel(torch.compile)"):
        src = build_model(TINY_CONFIG, seed=0)
        model = (nn.DataParallel(wrap(src, "torch.compile")) if what.startswith("DataParallel")
                 else wrap(src, what))
        sd, err = _call(fn, model)
        if err:
            return _report("portable_state_dict", [err])
        target = build_model(TINY_CONFIG, seed=1)
        try:
            target.load_state_dict(sd)
        except (RuntimeError, TypeError, AttributeError) as exc:
            problems.append(f"{what}: plain load_state_dict failed: {str(exc).splitlines()[0]}")
            continue
        if not same_predictions(src, target):
            problems.append(f"{what}: loaded, but predicts differently")
    return _report("portable_state_dict", problems)


def _resume_setup(seed: int) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    model = torch.compile(build_model(TINY_CONFIG, seed=seed), backend="eager")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt, torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)


def _resume_step(model: nn.Module, opt: torch.optim.Optimizer, sched: Any) -> float:
    x, y = build_model(TINY_CONFIG).example_inputs(8), torch.linspace(-1, 1, 8)
    loss = nn.functional.mse_loss(model(*x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


def _restore(path: Path) -> tuple[float | None, Any, list[str]]:
    """Restore a fresh set-up from ``path`` as a resuming script would; return its next loss,
    the epoch found in the file, and what was missing."""
    obj = torch.load(path, weights_only=True)
    model, opt, sched = _resume_setup(5)
    load_checkpoint(obj, model)  # any key layout: the point here is what else the file holds
    found = {what: next((obj[k] for k in keys if k in obj), None) for what, keys in
             (("optimizer", ("optimizer_state_dict", "optimizer")),
              ("scheduler", ("scheduler_state_dict", "scheduler", "lr_scheduler")))}
    missing = [f"the {what} state" for what, state in found.items() if state is None]
    if missing:
        return None, None, missing
    opt.load_state_dict(found["optimizer"])
    sched.load_state_dict(found["scheduler"])
    epoch = obj.get("epoch", (obj.get("metadata") or {}).get("epoch"))
    return _resume_step(model, opt, sched), epoch, []


def check_resume_save(save: Callable[..., None]) -> tuple[bool, str]:
    """Exercise 04: ``save(path, model, optimizer, scheduler, epoch)`` writes what a resume
    needs, in plain ``torch.save`` (or the library's format): a fresh set-up restored from it
    takes exactly the next step the uninterrupted run takes, and the file says the epoch."""
    model, opt, sched = _resume_setup(0)
    _resume_step(model, opt, sched)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resume.pt"
        _, err = _call(save, path, model, opt, sched, 1)
        if err:
            return _report("resume_save", [err])
        expected = _resume_step(model, opt, sched)
        try:
            got, epoch, missing = _restore(path)
        except (CheckpointError, RuntimeError, OSError, ValueError, KeyError) as exc:
            return _report("resume_save", [f"the file could not be restored: {str(exc).splitlines()[0]}"])
    problems = [f"{m} is not in the file" for m in missing]
    if not missing and epoch != 1:
        problems.append(f"the file does not say the epoch (looked for 'epoch' and metadata['epoch'], found {epoch!r})")
    if got is not None and got != expected:
        problems.append(f"the resumed step's loss is {got}, the uninterrupted run's is {expected}")
    return _report("resume_save", problems)
