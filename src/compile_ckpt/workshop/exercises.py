"""Checks for the notebooks' exercises, and ``reveal`` for their solutions.

Each check tries the learner's function on the cases that matter, prints whether it works and,
if not, what is missing, and returns ``(ok, message)``; it never raises, whatever the learner's
code does. Any natural correct answer passes (any key names that hold the right state), plain
PyTorch or the library.
"""

from __future__ import annotations

import ast
import tempfile
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import find_state_dicts, load_checkpoint, read_checkpoint
from ..errors import CheckpointError, UnsafeCheckpointError
from ..layout import is_optimizer_state
from .distributed import single_process_group
from .env import shipped
from .model import TINY_CONFIG, build_model, same_predictions, wrap

#: Exercise number -> the function in ``notebooks/solutions/solutions.py`` that solves it.
SOLUTIONS = {"01": "portable_save", "02": "strip_compile_prefix", "03": "portable_state_dict",
             "04": "resume_save"}
Problems = list[str]
_FILE = object()  # in _saved_file's arguments: where the temporary file's path goes


def _call(fn: Callable[..., Any], *args: Any) -> tuple[Any, str]:
    try:
        return fn(*args), ""
    except NotImplementedError:
        return None, "the function still raises NotImplementedError: fill it in"
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
        where = traceback.format_exc(limit=1).splitlines()[-1]
        return None, f"raised {type(exc).__name__}: {exc} ({where})"


def _checked(name: str, body: Callable[[], Problems]) -> tuple[bool, str]:
    """Run a check's body and print the verdict; what it did not foresee becomes a problem."""
    try:
        problems = body()
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        problems = [f"the check could not use what your function produced: "
                    f"{type(exc).__name__}: {first}"]
    msg = f"{name}: " + ("correct!" if not problems else "not yet:\n  - " + "\n  - ".join(problems))
    print(msg)
    return not problems, msg


def _saved_file(save: Callable[..., None], *args: Any) -> tuple[Any, str]:
    """Call ``save(*args)`` with a temporary file's path in place of ``_FILE``; read the file
    back as the library reads it (``weights_only=True``), or say why that failed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pt"
        _, err = _call(save, *[path if a is _FILE else a for a in args])
        if err:
            return None, err
        try:
            return read_checkpoint(path), ""
        except UnsafeCheckpointError as exc:
            return None, ("the file holds pickled objects, not just tensors: torch.save(model) "
                          f"pickles the module itself; save a state_dict(). ({exc})")
        except CheckpointError as exc:  # missing, empty, torn
            return None, f"the file could not be read: {exc}"


def check_portable_save(save: Callable[[nn.Module, Path], None]) -> tuple[bool, str]:
    """Exercise 01: ``save(compiled, path)`` writes a file that plain ``load_state_dict`` loads
    into a fresh, uncompiled model, with the trained model's predictions."""
    def body() -> Problems:
        src = build_model(TINY_CONFIG, seed=0)
        obj, err = _saved_file(save, torch.compile(src, backend="eager"), _FILE)
        if err:
            return [err]
        candidates = list(find_state_dicts(obj).values())
        if not candidates:
            return [f"the file holds no state dict (a dict of tensors); it holds a "
                    f"{type(obj).__name__}"]
        errors = []
        for state in candidates:
            target = build_model(TINY_CONFIG, seed=1)
            try:
                target.load_state_dict(state)
            except RuntimeError as exc:
                errors.append(f"plain load_state_dict into a fresh model failed: "
                              f"{str(exc).splitlines()[0]} (first keys in your file: "
                              f"{list(state)[:2]})")
                continue
            return [] if same_predictions(src, target) else ["it loaded, but predicts differently"]
        return errors[:1]
    return _checked("portable_save", body)


def check_strip_compile_prefix(fn: Callable[[dict[str, Any]], dict[str, Any]]
                               ) -> tuple[bool, str]:
    """Exercise 02: ``fn(state_dict)`` removes the ``_orig_mod`` segment wherever compiling put
    it (leading, or in the middle for a compiled submodule) and leaves clean keys alone."""
    cases = {
        "compiled model": ({"_orig_mod.head.0.weight": 1}, {"head.0.weight": 1}),
        "compiled submodule": ({"cnn_layers._orig_mod.0.weight": 2, "head.0.bias": 3},
                               {"cnn_layers.0.weight": 2, "head.0.bias": 3}),
        "a compiled model with a compiled submodule": (
            {"_orig_mod.cnn_layers._orig_mod.0.weight": 6}, {"cnn_layers.0.weight": 6}),
        "clean checkpoint (must not change)": ({"head.0.weight": 4}, {"head.0.weight": 4}),
    }

    def body() -> Problems:
        problems = []
        for what, (given, want) in cases.items():
            got, err = _call(fn, dict(given))
            if err:
                return [err]
            if not isinstance(got, Mapping):
                return [f"return the new state dict; the function returned {type(got).__name__}"]
            if dict(got) != want:
                problems.append(f"{what}: {given} -> {dict(got)}, expected {want}")
        return problems
    return _checked("strip_compile_prefix", body)


def check_portable_state_dict(fn: Callable[[nn.Module], dict[str, Any]]) -> tuple[bool, str]:
    """Exercise 03: ``fn(model)`` returns a state dict with plain keys whatever wraps the model:
    torch.compile, a compiled submodule, compile then DDP, or DDP then compile."""
    def attempt(kind: str) -> str:
        src = build_model(TINY_CONFIG, seed=0)
        sd, err = _call(fn, wrap(src, kind))
        if err:
            return f"{kind}: {err}"
        if not isinstance(sd, Mapping):
            return f"{kind}: return a state dict; the function returned {type(sd).__name__}"
        target = build_model(TINY_CONFIG, seed=1)
        want = list(target.state_dict())
        if set(sd) != set(want):
            extra, lost = sorted(set(sd) - set(want)), sorted(set(want) - set(sd))
            return (f"{kind}: the keys differ from a plain model's: yours include {extra[:2]}, "
                    f"missing {lost[:2]} ({len(extra)} unexpected, {len(lost)} missing)")
        target.load_state_dict(sd)
        return "" if same_predictions(src, target) else f"{kind}: loaded, but predicts differently"

    def body() -> Problems:
        problems = []
        with single_process_group():
            for kind in ("torch.compile", "compiled submodule", "DDP(torch.compile)",
                         "torch.compile(DDP)"):
                problem = attempt(kind)
                if "NotImplementedError" in problem:
                    return [problem.split(": ", 1)[1]]  # once is enough
                problems += [problem] if problem else []
        return problems
    return _checked("portable_state_dict", body)


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


def _find_states(obj: Any) -> dict[str, Any]:
    """What a resume file holds, found by content whatever the keys are called: the model's
    tensors, an optimizer state, a scheduler state, and an epoch (an int under a name with
    "epoch" in it), at the top or one level down (not inside a state)."""
    def kind(value: Any) -> str:
        return ("optimizer" if is_optimizer_state(value)
                else "scheduler" if isinstance(value, Mapping) and "last_epoch" in value else "")

    found: dict[str, Any] = {}
    places = [obj, *(v for v in obj.values() if isinstance(v, Mapping) and not kind(v))] \
        if isinstance(obj, Mapping) else []
    for place in places:
        for name, value in place.items():
            if kind(value):
                found.setdefault(kind(value), value)
            elif "epoch" in str(name).lower() and type(value) is int:
                found.setdefault("epoch", value)
    models = list(find_state_dicts(obj).values())
    if models:
        found["model"] = models[0]
    return found


def _resume_problems(found: dict[str, Any]) -> Problems:
    problems = [f"the {what} state is not in the file (looked for it by content, under any key)"
                for what in ("model", "optimizer", "scheduler") if what not in found]
    if "epoch" not in found:
        problems.append("the file does not say the epoch (an int under a key with 'epoch' in "
                        "its name)")
    elif found["epoch"] != 1:
        problems.append(f"the file says epoch {found['epoch']}, but 1 epoch had finished")
    return problems


def check_resume_save(save: Callable[..., None]) -> tuple[bool, str]:
    """Exercise 04: ``save(path, model, optimizer, scheduler, epoch)`` writes what a resume
    needs: a fresh set-up restored from it takes exactly the next step the uninterrupted run
    takes, and the file says the epoch. Any key names; plain ``torch.save`` or the library."""
    def body() -> Problems:
        model, opt, sched = _resume_setup(0)
        _resume_step(model, opt, sched)
        obj, err = _saved_file(save, _FILE, model, opt, sched, 1)
        if err:
            return [err]
        expected = _resume_step(model, opt, sched)
        found = _find_states(obj)
        problems = _resume_problems(found)
        if problems:
            return problems
        fresh, fresh_opt, fresh_sched = _resume_setup(5)
        load_checkpoint(found["model"], fresh)  # any key layout: what else the file holds counts
        fresh_opt.load_state_dict(found["optimizer"])
        fresh_sched.load_state_dict(found["scheduler"])
        got = _resume_step(fresh, fresh_opt, fresh_sched)
        return [] if got == expected else [f"the resumed step's loss is {got}, the uninterrupted "
                                           f"run's is {expected}"]
    return _checked("resume_save", body)


def reveal(exercise: str | int) -> str:
    """Print (and return) the reference solution of an exercise, from ``solutions.py``."""
    number = f"{int(exercise):02d}"
    if number not in SOLUTIONS:
        raise ValueError(f"no exercise {exercise!r}; the exercises are {', '.join(SOLUTIONS)}")
    path = shipped("solutions") / "solutions.py"
    source = path.read_text(encoding="utf-8")
    node = next(n for n in ast.parse(source).body
                if isinstance(n, ast.FunctionDef) and n.name == SOLUTIONS[number])
    text = f"# Exercise {number}, a solution ({path.name}):\n"
    text += ast.get_source_segment(source, node) or ""
    print(text)
    return text
