"""Checks for the notebooks' exercises (``reveal``, re-exported, prints their solutions).

Each check tries the learner's function on the cases that matter, prints a short verdict and
returns a :class:`Verdict` ("passed", "not yet" with what is missing, or "not attempted"). It
never raises or ends the run (``exit()`` included). Any natural correct answer passes."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import reprlib
import tempfile
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .. import find_state_dicts, read_checkpoint
from ..errors import CheckpointError, UnsafeCheckpointError
from ..layout import is_optimizer_state
from .distributed import single_process_group
from .model import TINY_CONFIG, build_model, same_predictions, wrap
from .reveal import SOLUTIONS, reveal  # noqa: F401 - notebooks call exercises.reveal("NN")

PASSED, NOT_YET, NOT_ATTEMPTED = "passed", "not yet", "not attempted"
Problems = list[str]
_FILE = object()  # in _saved_file's arguments: where the temporary file's path goes
_WIDTH, _MOST = 300, 6  # a problem is cut to _WIDTH characters; at most _MOST are printed
_REPR = reprlib.Repr()  # reprs of the learner's values, cut short
_REPR.maxdict = _REPR.maxlist = 3
_REPR.maxstring = _REPR.maxother = 60
#: Exercise 04's model: dropout on, so a resume without the RNG state takes another step.
RESUME_CONFIG = dataclasses.replace(TINY_CONFIG, dropout=0.5)
#: The globals a numpy array needs (``np.random.get_state()`` holds one): a check reads them.
_NUMPY_ARRAY = {"_reconstruct", "ndarray", "dtype"}


class Verdict(NamedTuple):
    """What a check found: ``status`` is "passed", "not yet" or "not attempted"; ``message``
    is what it printed."""

    status: str
    message: str

    @property
    def passed(self) -> bool:
        """Whether the answer is correct."""
        return self.status == PASSED


class _NotAttempted(Exception):
    """The learner's function is still the stub (a bare ``raise NotImplementedError``)."""


def _short(text: str, width: int = _WIDTH) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@contextlib.contextmanager
def _exits_raise() -> Iterator[None]:
    """While the learner's code runs, IPython's ``exit()``/``quit()`` raise ``SystemExit``
    (in a kernel they would otherwise shut the kernel down after the cell)."""
    try:
        from IPython import get_ipython
    except ImportError:
        get_ipython = None  # noqa: N806 - plain Python: exit() raises SystemExit already
    shell = get_ipython() if get_ipython is not None else None
    if shell is None or not hasattr(shell, "ask_exit"):
        yield
        return
    keep = getattr(shell, "keepkernel_on_exit", None)

    def refuse() -> None:
        raise SystemExit("exit()")

    shell.ask_exit = refuse
    try:
        yield
    finally:
        del shell.ask_exit
        if keep is not None:
            shell.keepkernel_on_exit = keep


def _call(fn: Callable[..., Any], *args: Any) -> tuple[Any, str]:
    """``fn(*args)`` and ``""``, or ``None`` and what went wrong; the bare stub raises
    :class:`_NotAttempted`."""
    try:
        with _exits_raise():
            return fn(*args), ""
    except NotImplementedError as exc:
        if not exc.args:
            raise _NotAttempted from None
        return None, f"raised NotImplementedError: {_short(exc, 120)}"
    except SystemExit as exc:
        return None, (
            f"your function ended the program (SystemExit: {_short(exc, 60)}): a "
            "check only reports, so it went on; return a value instead of exiting"
        )
    except Exception as exc:  # noqa: BLE001 - the learner's code may raise anything
        where = traceback.format_exc(limit=1).splitlines()[-1]
        return None, f"raised {type(exc).__name__}: {_short(exc, 160)} ({_short(where, 100)})"


def _checked(name: str, body: Callable[[], Problems]) -> Verdict:
    """Run a check's body and print the verdict; what it did not foresee becomes a problem."""
    try:
        problems = body()
    except _NotAttempted:
        msg = (
            f"{name}: not attempted (the function still raises NotImplementedError: write "
            "it, then run this cell again)"
        )
        print(msg)
        return Verdict(NOT_ATTEMPTED, msg)
    except Exception as exc:  # noqa: BLE001 - a check reports, it does not raise
        problems = [
            f"the check could not use what your function produced: "
            f"{type(exc).__name__}: {_short(exc, 160)}"
        ]
    shown = [_short(p) for p in problems[:_MOST]]
    if len(problems) > _MOST:
        shown.append(f"... and {len(problems) - _MOST} more")
    msg = f"{name}: " + ("correct!" if not shown else "not yet:\n  - " + "\n  - ".join(shown))
    print(msg)
    return Verdict(NOT_YET if problems else PASSED, msg)


def _read_back(path: Path) -> Any:
    """The file as a safe load reads it; numpy arrays (an RNG state) allowed, nothing else."""
    try:
        return read_checkpoint(path)
    except UnsafeCheckpointError as exc:
        names = list(exc.globals)
        if not names or not all(
            n.startswith("numpy.") and n.rpartition(".")[2] in _NUMPY_ARRAY for n in names
        ):
            raise
        import numpy as np

        allowed = [
            getattr(importlib.import_module(n.rpartition(".")[0]), n.rpartition(".")[2])
            for n in names
        ]
        allowed += [type(np.dtype(code)) for code in "?bhilqBHILQefdFD"]  # numbers, no objects
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)


def _saved_file(save: Callable[..., None], *args: Any) -> tuple[Any, str]:
    """Call ``save(*args)`` with a temporary file's path in place of ``_FILE``; read the file
    back as the library reads it (``weights_only=True``), or say why that failed."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pt"
        _, err = _call(save, *[path if a is _FILE else a for a in args])
        if err:
            return None, err
        try:
            return _read_back(path), ""
        except UnsafeCheckpointError as exc:
            names = sorted(exc.globals, key=lambda n: "Module" not in n.rpartition(".")[2])
            return None, (
                "the file holds pickled objects, not just tensors: torch.save(model) "
                "pickles the module itself; save a state_dict(). (it names "
                f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
            )
        except CheckpointError as exc:  # missing, empty, torn
            return None, f"the file could not be read: {_short(exc, 200)}"


def _prefix_problem(state: Mapping[str, Any]) -> str:
    """A problem naming the ``_orig_mod.`` keys, or ``""``."""
    wrapped = [k for k in state if "_orig_mod" in str(k).split(".")]
    if not wrapped:
        return ""
    return (
        f"{len(wrapped)} of the {len(state)} keys carry '_orig_mod.' (e.g. "
        f"{_REPR.repr(wrapped[0])}): that is compiled.state_dict(), the wrapper's names; "
        "save the module you compiled, model.state_dict(), whose keys are plain"
    )


def check_portable_save(save: Callable[[nn.Module, nn.Module, Path], None]) -> Verdict:
    """Exercise 01: ``save(model, compiled, path)``, where ``compiled = torch.compile(model)``,
    writes a file that plain ``load_state_dict`` loads into a fresh, uncompiled model, with
    the trained model's predictions."""

    def body() -> Problems:
        src = build_model(TINY_CONFIG, seed=0)
        obj, err = _saved_file(save, src, torch.compile(src, backend="eager"), _FILE)
        if err:
            return [err]
        candidates = list(find_state_dicts(obj).values())
        if not candidates:
            return [f"the file holds no state dict (a dict of tensors); it holds {_REPR.repr(obj)}"]
        errors = []
        for state in candidates:
            target = build_model(TINY_CONFIG, seed=1)
            try:
                target.load_state_dict(state)
            except RuntimeError as exc:
                failed = f"plain load_state_dict into a fresh model failed: {str(exc)[:80]}"
                keys = f" (first keys in your file: {_REPR.repr(list(state)[:2])})"
                errors.append(_prefix_problem(state) or failed + keys)
                continue
            return [] if same_predictions(src, target) else ["it loaded, but predicts differently"]
        return errors[:1]

    return _checked("portable_save", body)


def check_strip_compile_prefix(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Verdict:
    """Exercise 02: ``fn(state_dict)`` removes the ``_orig_mod`` segment wherever compiling put
    it (leading, or in the middle for a compiled submodule) and leaves clean keys alone."""
    cases = {
        "compiled model": ({"_orig_mod.head.0.weight": 1}, {"head.0.weight": 1}),
        "compiled submodule": (
            {"cnn_layers._orig_mod.0.weight": 2, "head.0.bias": 3},
            {"cnn_layers.0.weight": 2, "head.0.bias": 3},
        ),
        "a compiled model with a compiled submodule": (
            {"_orig_mod.cnn_layers._orig_mod.0.weight": 6},
            {"cnn_layers.0.weight": 6},
        ),
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
                problems.append(
                    f"{what}: {given} -> {_REPR.repr(dict(got))} ({len(got)} keys), expected {want}"
                )
        return problems

    return _checked("strip_compile_prefix", body)


def check_portable_state_dict(fn: Callable[[nn.Module], dict[str, Any]]) -> Verdict:
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
            extra, lost = sorted(set(sd) - set(want), key=str), sorted(set(want) - set(sd))
            return (
                f"{kind}: the keys differ from a plain model's: yours include "
                f"{_REPR.repr(extra[:2])}, missing {lost[:2]} ({len(extra)} unexpected, "
                f"{len(lost)} missing)"
            )
        target.load_state_dict(sd)
        return "" if same_predictions(src, target) else f"{kind}: loaded, but predicts differently"

    def body() -> Problems:
        with single_process_group():
            kinds = (
                "torch.compile",
                "compiled submodule",
                "DDP(torch.compile)",
                "torch.compile(DDP)",
            )
            problems = [attempt(kind) for kind in kinds]
        return [p for p in problems if p]

    return _checked("portable_state_dict", body)


def _resume_setup(seed: int) -> tuple[nn.Module, nn.Module, torch.optim.Optimizer, Any]:
    """A plain model (dropout on), the wrapper compiled from it, its optimizer and scheduler."""
    plain = build_model(RESUME_CONFIG, seed=seed)
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    return plain, torch.compile(plain, backend="eager"), opt, sched


def _resume_step(plain: nn.Module, opt: torch.optim.Optimizer, sched: Any) -> float:
    """One training step (the plain module: the wrapper's eager backend computes the same)."""
    x, y = plain.example_inputs(8), torch.linspace(-1, 1, 8)
    plain.train()
    loss = nn.functional.mse_loss(plain(*x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()
    return loss.item()


def _kind(value: Any) -> str:
    """Which state ``value`` is: "optimizer", "scheduler", or "" (neither)."""
    if is_optimizer_state(value):
        return "optimizer"
    return "scheduler" if isinstance(value, Mapping) and "last_epoch" in value else ""


def _rng_state(obj: Any, depth: int = 0) -> torch.Tensor | None:
    """A CPU RNG state (``torch.get_rng_state()``) wherever it is: at the top, under any key,
    in a list or tuple; never inside a model, optimizer or scheduler state."""
    size = torch.get_rng_state().numel()
    if isinstance(obj, torch.Tensor):
        return obj if obj.dtype == torch.uint8 and obj.numel() == size else None
    if depth > 3 or _kind(obj):
        return None
    if isinstance(obj, Mapping):
        items: Any = obj.values()
    else:
        items = obj if isinstance(obj, (list, tuple)) else ()
    return next((s for s in (_rng_state(v, depth + 1) for v in items) if s is not None), None)


def _find_states(obj: Any) -> dict[str, Any]:
    """What a resume file holds, found by content whatever the keys are called: the model's
    tensors, an optimizer state, a scheduler state, the RNG state, and an epoch (an int under
    a name with "epoch" in it), at the top or one level down (not inside a state)."""
    found: dict[str, Any] = {}
    top = obj if isinstance(obj, Mapping) else {}
    for place in [top, *(v for v in top.values() if isinstance(v, Mapping) and not _kind(v))]:
        for name, value in place.items():
            if _kind(value):
                found.setdefault(_kind(value), value)
            elif "epoch" in str(name).lower() and type(value) is int:
                found.setdefault("epoch", value)
    models = list(find_state_dicts(obj).values())
    if models:
        found["model"] = next((m for m in models if not _prefix_problem(m)), models[0])
    if (rng := _rng_state(obj)) is not None:
        found["rng"] = rng
    return found


def _resume_problems(found: dict[str, Any]) -> Problems:
    problems = [
        f"the {what} state is not in the file (looked for it by content, under any key)"
        for what in ("model", "optimizer", "scheduler")
        if what not in found
    ]
    if "model" in found and (prefix := _prefix_problem(found["model"])):
        problems.append(f"the model: {prefix}")
    if "epoch" not in found:
        problems.append(
            "the file does not say the epoch (an int under a key with 'epoch' in its name)"
        )
    elif found["epoch"] != 1:
        problems.append(f"the file says epoch {found['epoch']}, but 1 epoch had finished")
    return problems


def _resume_body(save: Callable[..., None]) -> Problems:
    """Save after one step, restore in a fresh set-up with other RNG state, take the next step:
    it must equal the uninterrupted run's."""
    torch.manual_seed(0)
    plain, compiled, opt, sched = _resume_setup(0)
    _resume_step(plain, opt, sched)
    obj, err = _saved_file(save, _FILE, plain, compiled, opt, sched, 1)
    if err:
        return [err]
    expected = _resume_step(plain, opt, sched)
    found = _find_states(obj)
    problems = _resume_problems(found)
    if problems:
        return problems
    torch.manual_seed(2024)  # a new process starts from other RNG state
    fresh, _, fresh_opt, fresh_sched = _resume_setup(5)
    fresh.load_state_dict(found["model"])  # strict, into the plain model, as 04 restores it
    fresh_opt.load_state_dict(found["optimizer"])
    fresh_sched.load_state_dict(found["scheduler"])
    if "rng" in found:
        torch.set_rng_state(found["rng"])
    got = _resume_step(fresh, fresh_opt, fresh_sched)
    if got == expected:
        return []
    if "rng" not in found:
        return [
            "the file holds no RNG state, so the resumed step's dropout drew other numbers "
            f"(loss {got:.6f}, the uninterrupted run's {expected:.6f}): save "
            "torch.get_rng_state() too"
        ]
    return [f"the resumed step's loss is {got}, the uninterrupted run's is {expected}"]


def check_resume_save(save: Callable[..., None]) -> Verdict:
    """Exercise 04: ``save(path, model, compiled, optimizer, scheduler, epoch)`` writes what an
    exact resume needs: restored into a fresh set-up (plain ``load_state_dict`` into the plain
    model, other RNG state), the next step equals the uninterrupted run's (the model has
    dropout: the RNG state counts), and the file says the epoch. Any key names, anywhere;
    plain ``torch.save`` or the library. The caller's RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        return _checked("resume_save", lambda: _resume_body(save))
