"""Save and load PyTorch checkpoints whatever wraps the model.

``torch.compile(model)`` returns an ``OptimizedModule`` that holds the real model as
``_orig_mod``, so its ``state_dict()`` keys read ``_orig_mod.layer.weight``. DDP and
DataParallel add ``module.``, ``checkpoint_wrapper`` adds ``_checkpoint_wrapped_module.``
to named parameters, FSDP (v1) adds ``_fsdp_wrapped_module.``, and a compiled *submodule*
puts ``_orig_mod`` in the middle of a key (``encoder._orig_mod.weight``).

This module is self-contained: it imports torch and the standard library only (plus
``safetensors`` lazily, when a ``.safetensors`` path is used), so it can be copied into
any trainer. The public entry points are :func:`save_checkpoint`, :func:`load_checkpoint`,
:func:`clean_state_dict`, :func:`unwrap_model`, :func:`canonical_fqn` and
:func:`read_checkpoint`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "FORMAT",
    "WRAPPER_SEGMENTS",
    "CheckpointCollisionError",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "LoadReport",
    "Rename",
    "UnsafeCheckpointError",
    "atomic_write",
    "canonical_fqn",
    "clean_state_dict",
    "extract_model_state_dict",
    "from_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "unwrap_model",
    "wrapper_paths",
]

log = logging.getLogger("compile_ckpt")

FORMAT = "compile_ckpt/1"
"""Value of the ``format`` entry that :func:`save_checkpoint` writes."""

#: Attribute names under which wrappers keep the module they wrap.
WRAPPER_SEGMENTS: tuple[str, ...] = (
    "_orig_mod",  # torch.compile -> OptimizedModule
    "module",  # DistributedDataParallel / DataParallel
    "_checkpoint_wrapped_module",  # torch.distributed.algorithms checkpoint_wrapper
    "_fsdp_wrapped_module",  # FullyShardedDataParallel (v1)
)
#: The segments that no ordinary model uses as a submodule name; ``module`` is not one.
_UNAMBIGUOUS = frozenset(WRAPPER_SEGMENTS) - {"module"}

_MODEL_KEYS = ("model_state_dict", "state_dict", "model")
_OPTIMIZER_KEYS = ("optimizer_state_dict", "optimizer")
_SCHEDULER_KEYS = ("scheduler_state_dict", "lr_scheduler", "scheduler")
_ZIP_MAGIC = b"PK\x03\x04"
BARE = "bare state dict"


# --------------------------------------------------------------------------- errors
class CheckpointError(Exception):
    """Base class: something is wrong with a checkpoint. ``path`` names the file."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def __str__(self) -> str:  # OSError subclasses would otherwise format errno-style
        return f"{self.path}: {self.message}" if self.path else self.message


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path does not exist, or is a directory rather than a checkpoint file."""


class CorruptCheckpointError(CheckpointError):
    """The file is empty, truncated or not a checkpoint at all."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs Python globals that ``weights_only=True`` refuses to import."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None,
                 globals_: Iterable[str] = ()) -> None:
        self.globals = list(globals_)
        super().__init__(message, path)


class CheckpointFormatError(CheckpointError, ValueError):
    """The file loaded, but holds no state dict this library recognises."""


class CheckpointCollisionError(CheckpointError, ValueError):
    """Two checkpoint keys would land on the same target key."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """Strict loading failed: keys missing, unexpected, or of another shape."""


# ------------------------------------------------------------------------ key names
def unwrap_model(model: nn.Module) -> nn.Module:
    """Return the plain module under any stack of OptimizedModule, DDP and DataParallel.

    Idempotent: ``unwrap_model(unwrap_model(m)) is unwrap_model(m)``. Wrappers *inside* the
    model (a compiled submodule, a checkpoint wrapper) stay; :func:`save_checkpoint` cleans
    their keys.
    """
    parallel = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while True:
        if _is_compiled_wrapper(model):
            model = model._orig_mod
        elif isinstance(model, parallel):
            model = model.module
        else:
            return model


def _is_compiled_wrapper(module: nn.Module) -> bool:
    # OptimizedModule lives in a private namespace; recognise it by what it does.
    return type(module).__name__ == "OptimizedModule" and isinstance(
        module._modules.get("_orig_mod"), nn.Module
    )


def wrapper_paths(model: nn.Module) -> frozenset[str]:
    """Dotted paths, inside ``model``, of every child that exists only because of a wrapper.

    ``DDP(torch.compile(m))`` gives ``{"module", "module._orig_mod"}``; a compiled submodule
    ``m.encoder`` gives ``{"encoder._orig_mod"}``. A real submodule called ``module`` is not
    listed, which is what makes :func:`canonical_fqn` exact for a live model.
    """
    parallel = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    found: set[str] = set()
    for name, mod in model.named_modules(remove_duplicate=False):
        prefix = f"{name}." if name else ""
        if _is_compiled_wrapper(mod):
            found.add(prefix + "_orig_mod")
        if isinstance(mod, parallel):
            found.add(prefix + "module")
        for seg in ("_checkpoint_wrapped_module", "_fsdp_wrapped_module"):
            if isinstance(mod._modules.get(seg), nn.Module):
                found.add(prefix + seg)
    return frozenset(found)


def canonical_fqn(fqn: str, paths: Iterable[str] | None = None) -> str:
    """The fully qualified name of a parameter or buffer with wrapper segments removed.

    ``_orig_mod``, ``_checkpoint_wrapped_module`` and ``_fsdp_wrapped_module`` are removed at
    any depth. ``module`` is removed only where ``paths`` (from :func:`wrapper_paths` of the
    live model) says a DDP or DataParallel put it: only a live model (or a whole state dict,
    see :func:`clean_state_dict`) can tell a DDP ``module.`` from a submodule really called
    ``module``.
    """
    parts = [p for p in fqn.split(".") if p not in _UNAMBIGUOUS]
    if paths is None:
        return ".".join(parts)
    # Only ``module`` is ambiguous. The paths are compared with the unambiguous segments
    # removed, because state-dict keys may already lack some (checkpoint_wrapper hides its
    # own segment through state-dict hooks; named_parameters() keeps it).
    parallel = {canonical_fqn(p) for p in paths if p.rsplit(".", 1)[-1] == "module"}
    return ".".join(p for i, p in enumerate(parts)
                    if not (p == "module" and ".".join(parts[: i + 1]) in parallel))


def _drop_module_segments(fqn: str) -> str:
    return ".".join(p for p in fqn.split(".") if p != "module")


def _wrapper_tokens(fqn: str) -> list[str]:
    return [p for p in fqn.split(".") if p in WRAPPER_SEGMENTS]


@dataclasses.dataclass(frozen=True)
class Rename:
    """One key renamed on the way in: which wrapper segments it lost and gained."""

    source: str
    target: str
    removed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()

    @classmethod
    def between(cls, source: str, target: str) -> Rename:
        src, dst = Counter(_wrapper_tokens(source)), Counter(_wrapper_tokens(target))
        removed = tuple(sorted((src - dst).elements()))
        added = tuple(sorted((dst - src).elements()))
        return cls(source, target, removed, added)


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_checkpoint` or :func:`clean_state_dict` did. ``str()`` is one line."""

    source: str = "<object>"
    target: str = ""
    total: int = 0
    loaded: int = 0
    renames: list[Rename] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(
        default_factory=list
    )
    optimizer_loaded: bool = False
    scheduler_loaded: bool = False
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    container: str = "bare state dict"

    @property
    def removed_prefixes(self) -> Counter[str]:
        """How many keys lost each wrapper segment, e.g. ``{'_orig_mod.': 14}``."""
        return Counter(f"{s}." for r in self.renames for s in r.removed)

    @property
    def added_prefixes(self) -> Counter[str]:
        """How many keys gained each wrapper segment (clean checkpoint into a wrapped model)."""
        return Counter(f"{s}." for r in self.renames for s in r.added)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatches)

    def __str__(self) -> str:
        into = f" into {self.target}" if self.target else ""
        head = f"compile_ckpt: {self.loaded}/{self.total} tensors from {self.source}{into}"
        parts = []
        if self.removed_prefixes:
            parts.append("cleaned prefixes: removed " + _fmt_counter(self.removed_prefixes))
        if self.added_prefixes:
            parts.append("added " + _fmt_counter(self.added_prefixes))
        reordered = sum(1 for r in self.renames if not (r.removed or r.added))
        if reordered:
            parts.append(f"reordered wrapper segments in {reordered} keys")
        if not self.renames:
            parts.append("keys already matched, nothing renamed")
        if self.missing or self.unexpected:
            parts.append(f"{len(self.missing)} missing, {len(self.unexpected)} unexpected")
        if self.shape_mismatches:
            parts.append(f"{len(self.shape_mismatches)} shape mismatches skipped")
        extra = [n for n, ok in (("optimizer", self.optimizer_loaded),
                                 ("scheduler", self.scheduler_loaded)) if ok]
        if extra:
            parts.append("also loaded " + " and ".join(extra))
        return head + "; " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form (for ``--json`` and notebook records)."""
        d = dataclasses.asdict(self)
        d["renames"] = [dataclasses.asdict(r) for r in self.renames]
        d["removed_prefixes"] = dict(self.removed_prefixes)
        d["added_prefixes"] = dict(self.added_prefixes)
        d["summary"] = str(self)
        return d


def _fmt_counter(c: Counter[str]) -> str:
    return ", ".join(f"'{k}' from {n} key{'s' if n != 1 else ''}" for k, n in c.most_common())


# -------------------------------------------------------------------- matching keys
def _match_keys(source_keys: Iterable[str], target_keys: Iterable[str],
                target_paths: frozenset[str], origin: str | None) -> tuple[dict[str, str], list[Rename]]:
    """Map each source key to the target key it should fill (only those that match).

    First the minimal interpretation: exact matches are kept, the rest matched by
    canonical name (see :func:`_match_minimal`). If that leaves keys unmatched or
    collides, the whole-dict interpretation is tried: the source cleaned as a whole (a
    leading ``module.`` that *every* key carries is DDP's) against the target's exact
    canonical names. It is used only if it matches every key on both sides; this resolves
    DDP checkpoints of models that also have a real submodule called ``module``.
    """
    sources, targets = list(source_keys), list(target_keys)
    try:
        minimal = _match_minimal(sources, targets, target_paths, origin)
        collision = None
    except CheckpointCollisionError as exc:
        minimal, collision = None, exc
    if minimal is not None and len(minimal[0]) == len(sources) == len(targets):
        return minimal
    whole = _match_canonical(sources, targets, target_paths)
    if whole is not None:
        return whole
    if collision is not None:
        raise collision
    assert minimal is not None
    return minimal


def _match_canonical(sources: list[str], targets: list[str], target_paths: frozenset[str]
                     ) -> tuple[dict[str, str], list[Rename]] | None:
    try:
        cleaned, _ = _offline_clean(sources, None)
    except CheckpointCollisionError:
        return None
    by_canon: dict[str, str] = {}
    for t in targets:
        c = canonical_fqn(t, target_paths)
        if c in by_canon:
            return None
        by_canon[c] = t
    if len(sources) != len(targets) or set(cleaned.values()) != set(by_canon):
        return None
    mapping = {s: by_canon[cleaned[s]] for s in sources}
    return mapping, [Rename.between(s, t) for s, t in mapping.items() if s != t]


def _match_minimal(sources: list[str], targets: list[str], target_paths: frozenset[str],
                   origin: str | None) -> tuple[dict[str, str], list[Rename]]:
    """Exact match (never renamed); else the same name once the unambiguous wrapper
    segments are removed; else once ``module`` segments are removed too. A name that
    several target keys share at a tier is not used at that tier. Two source keys that
    claim one target key raise :class:`CheckpointCollisionError`."""
    target_set = set(targets)
    tier1: dict[str, list[str]] = defaultdict(list)
    tier2: dict[str, list[str]] = defaultdict(list)
    for t in targets:
        canon = canonical_fqn(t, target_paths)
        tier1[canon].append(t)
        tier2[_drop_module_segments(canon)].append(t)

    mapping: dict[str, str] = {}
    claimed: dict[str, str] = {}
    # Exact matches first, so a later renamed key cannot steal their target.
    for s in sources:
        if s in target_set:
            mapping[s] = s
            claimed[s] = s
    renames = []
    for s in sources:
        if s in mapping:
            continue
        c1 = canonical_fqn(s)
        candidates = tier1.get(c1, [])
        if len(candidates) != 1:
            candidates = tier2.get(_drop_module_segments(c1), [])
        if len(candidates) != 1:
            continue
        t = candidates[0]
        if t in claimed:
            raise CheckpointCollisionError(
                f"checkpoint keys {claimed[t]!r} and {s!r} would both load into {t!r}; "
                "refusing to overwrite one with the other (the file holds two copies of the "
                "same parameter: clean it by hand or pick one)", origin)
        claimed[t] = s
        mapping[s] = t
        renames.append(Rename.between(s, t))
    return mapping, renames


def _offline_clean(keys: list[str], origin: str | None) -> tuple[dict[str, str], list[Rename]]:
    """Rename keys without a model: unambiguous segments anywhere, plus one leading
    ``module.`` (in the leading run of wrapper segments) when every key carries it."""
    leading_module = bool(keys) and all(
        "module" in _leading_wrapper_run(k) for k in keys
    )
    mapping, renames, seen = {}, [], {}
    for k in keys:
        parts = k.split(".")
        if leading_module:  # DDP adds exactly one 'module.': drop the first in the leading run
            parts.pop(_leading_wrapper_run(k).index("module"))
        nk = ".".join(p for p in parts if p not in _UNAMBIGUOUS)
        if nk in seen:
            raise CheckpointCollisionError(
                f"keys {seen[nk]!r} and {k!r} both clean to {nk!r}; refusing to keep one "
                "silently", origin)
        seen[nk] = k
        mapping[k] = nk
        if nk != k:
            renames.append(Rename.between(k, nk))
    return mapping, renames


def _leading_wrapper_run(key: str) -> list[str]:
    run = []
    for p in key.split(".")[:-1]:
        if p not in WRAPPER_SEGMENTS:
            break
        run.append(p)
    return run


def clean_state_dict(state_dict: Mapping[str, Any], model: nn.Module | None = None
                     ) -> tuple[dict[str, Any], LoadReport]:
    """Return a renamed copy of ``state_dict`` and a report of what changed.

    Without ``model`` (offline): removes ``_orig_mod``, ``_checkpoint_wrapped_module`` and
    ``_fsdp_wrapped_module`` at any depth and a leading ``module.`` that every key carries.
    With ``model``: renames keys to exactly what ``model.load_state_dict`` expects (compiled
    or not, wrapped or not); keys it cannot place are kept as they are. Never mutates the
    input; raises :class:`CheckpointCollisionError` rather than drop a tensor.
    """
    keys = list(state_dict.keys())
    if model is None:
        mapping, renames = _offline_clean(keys, None)
    else:
        target = model.state_dict()
        mapping, renames = _match_keys(keys, target.keys(), wrapper_paths(model), None)
        mapping = {k: mapping.get(k, k) for k in keys}
        # Unmatched keys keep their name; they must not collide with a matched one.
        inverse: dict[str, str] = {}
        for k, v in mapping.items():
            if v in inverse:
                raise CheckpointCollisionError(f"keys {inverse[v]!r} and {k!r} both map to {v!r}")
            inverse[v] = k
    cleaned = {mapping[k]: state_dict[k] for k in keys}
    report = LoadReport(total=len(keys), loaded=len(keys), renames=renames)
    if renames:
        log.info("%s", report)
    return cleaned, report


# ------------------------------------------------------------------------ reading
def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then move the file onto ``path`` in one step.

    The temporary file sits in the same directory, is fsynced, then ``os.replace``d, and
    the directory is fsynced: a crash at any moment leaves the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return path
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def read_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu",
                    mmap: bool = False) -> Any:
    """Load a checkpoint file safely (``weights_only=True``), with errors that name the path.

    Raises a :class:`CheckpointError` subclass for a missing path, a directory, an empty,
    truncated or random file, and a file that needs globals the safe loader refuses.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError("no such file", path)
    if path.is_dir():
        hint = (" (a torch.distributed.checkpoint directory: convert it with "
                "torch.distributed.checkpoint.format_utils.dcp_to_torch_save)"
                if (path / ".metadata").exists() else "")
        raise CheckpointNotFoundError(f"is a directory, not a checkpoint file{hint}", path)
    size = path.stat().st_size
    if size == 0:
        raise CorruptCheckpointError("file is empty (0 bytes)", path)
    if _is_safetensors(path):
        return _read_safetensors(path, map_location)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != _ZIP_MAGIC:
        if magic[:1] == b"\x80":
            raise CheckpointFormatError(
                "a raw pickle, not a torch.save archive; it is not unpickled, because a "
                "pickle can run code. Re-save it with torch.save from a trusted process", path)
        raise CorruptCheckpointError(
            f"not a torch.save archive (starts with {magic!r}, expected a zip file); the file "
            "is corrupt or of another format", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - translated into a precise error below
        raise _translate_load_error(exc, path) from exc


def _translate_load_error(exc: Exception, path: Path) -> CheckpointError:
    text = str(exc)
    if "Weights only load failed" in text:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001
            names = re.findall(r"GLOBAL ([\w.]+)", text)
        listed = ", ".join(names) or "unknown globals"
        return UnsafeCheckpointError(
            f"needs Python globals that weights_only=True refuses to import: {listed}. "
            "Nothing was executed. If you trust where this file came from, allow exactly "
            "those with `with torch.serialization.safe_globals([...]):` around the load "
            "(or torch.serialization.add_safe_globals)", path, names)
    if isinstance(exc, (EOFError, RuntimeError, OSError)) or "zip" in text.lower():
        return CorruptCheckpointError(
            f"truncated or corrupt torch.save archive ({type(exc).__name__}: "
            f"{text.splitlines()[0][:160] if text else 'no detail'})", path)
    return CorruptCheckpointError(f"could not be read ({type(exc).__name__}: {text[:160]})", path)


def _read_safetensors(path: Path, map_location: Any) -> dict[str, Any]:
    try:
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise CheckpointError("reading .safetensors needs the safetensors package", path) from exc
    device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=device) as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            meta = fh.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
        raise CorruptCheckpointError(
            f"not a readable safetensors file ({type(exc).__name__}: {str(exc)[:160]})", path
        ) from exc
    metadata = json.loads(meta["compile_ckpt"]) if "compile_ckpt" in meta else dict(meta)
    return {"format": FORMAT, "model_state_dict": tensors, "metadata": metadata}


def extract_model_state_dict(obj: Any, origin: str | None = None) -> tuple[dict[str, Any], str]:
    """Find the model's state dict in a loaded checkpoint; return it and where it was
    (the container key, or ``BARE``).

    Accepts a bare state dict, or a dict holding one under ``model_state_dict``,
    ``state_dict`` or ``model``.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"holds a {type(obj).__name__}, not a dict; expected a state dict or a dict "
            f"with one of {list(_MODEL_KEYS)}", origin)
    for key in _MODEL_KEYS:
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner and _looks_like_state_dict(inner):
            return dict(inner), key
    if obj and _looks_like_state_dict(obj):
        return dict(obj), BARE
    top = ", ".join(repr(k) for k in list(obj)[:8]) or "nothing"
    raise CheckpointFormatError(
        f"no model state dict found; top-level keys are {top}. Expected a state dict or a "
        f"dict with one of {list(_MODEL_KEYS)}", origin)


def _looks_like_state_dict(d: Mapping[str, Any]) -> bool:
    return all(isinstance(k, str) for k in d) and any(isinstance(v, torch.Tensor) for v in d.values())


def _first(obj: Mapping[str, Any], keys: Iterable[str]) -> Any:
    for k in keys:
        if k in obj and obj[k] is not None:
            return obj[k]
    return None


# ------------------------------------------------------------------------ loading
def load_checkpoint(source: str | os.PathLike[str] | Mapping[str, Any], model: nn.Module, *,
                    optimizer: torch.optim.Optimizer | None = None,
                    scheduler: Any | None = None, strict: bool = True,
                    map_location: Any = "cpu", mmap: bool = False,
                    assign: bool = False) -> LoadReport:
    """Load ``source`` into ``model``, renaming only the keys that must be renamed.

    ``model`` may be plain, compiled, compiled in place, DDP-wrapped or hold compiled or
    checkpoint-wrapped submodules; ``source`` may come from any of those. Keys that already
    match the model are never renamed. With ``strict=True`` a mismatch raises
    :class:`CheckpointMismatchError` *before* anything is copied into the model.
    The caller's checkpoint object is never mutated.
    """
    if isinstance(source, (str, os.PathLike)):
        origin: str | None = str(source)
        obj = read_checkpoint(source, map_location=map_location, mmap=mmap)
    else:
        origin, obj = None, source  # an already loaded object; checked below
    state, container = extract_model_state_dict(obj, origin)
    target_sd = model.state_dict(keep_vars=True)
    mapping, renames = _match_keys(state.keys(), target_sd.keys(), wrapper_paths(model), origin)

    renamed = {mapping[k]: v for k, v in state.items() if k in mapping}
    unexpected = [k for k in state if k not in mapping]
    missing = [k for k in target_sd if k not in renamed]
    shapes = []
    for k, v in renamed.items():
        want = target_sd[k]
        if isinstance(v, torch.Tensor) and isinstance(want, torch.Tensor) and v.shape != want.shape:
            shapes.append((k, tuple(v.shape), tuple(want.shape)))
    report = LoadReport(
        source=origin or "<object>", target=type(unwrap_model(model)).__name__,
        total=len(state), loaded=len(renamed) - len(shapes), renames=renames,
        missing=missing, unexpected=unexpected, shape_mismatches=shapes,
        metadata=dict(obj.get("metadata") or {}) if isinstance(obj.get("metadata"), Mapping) else {},
        container=container,
    )
    if strict and not report.ok:
        raise CheckpointMismatchError(_mismatch_message(report), origin)
    for k, *_ in shapes:
        del renamed[k]
    model.load_state_dict(renamed, strict=False, assign=assign)
    if assign:
        _check_no_meta(model, origin)

    report.optimizer_loaded = _load_extra(obj, _OPTIMIZER_KEYS, optimizer, "optimizer", strict, origin)
    report.scheduler_loaded = _load_extra(obj, _SCHEDULER_KEYS, scheduler, "scheduler", strict, origin)
    log.info("%s", report)
    return report


def _load_extra(obj: Mapping[str, Any], keys: tuple[str, ...], target: Any, what: str, strict: bool,
                origin: str | None) -> bool:
    """Load the optimizer or scheduler state into ``target``; say whether it was there."""
    if target is None:
        return False
    state = _first(obj, keys)
    if state is None:
        if strict:
            raise CheckpointFormatError(f"a{'n' if what[0] in 'aeiou' else ''} {what} was passed but the "
                                        f"checkpoint holds no {what} state (looked for {list(keys)})", origin)
        return False
    target.load_state_dict(state)
    return True


def _check_no_meta(model: nn.Module, origin: str | None) -> None:
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointMismatchError(
            f"after assign=True these tensors are still on the meta device (not in the "
            f"checkpoint, e.g. non-persistent buffers): {left[:10]}", origin)


def _group(keys: list[str], limit: int = 8) -> str:
    groups: dict[str, list[str]] = defaultdict(list)
    for k in keys:
        groups[k.rsplit(".", 1)[0] if "." in k else "<root>"].append(k.rsplit(".", 1)[-1])
    lines = []
    for mod, leaves in list(groups.items())[:limit]:
        shown = ", ".join(leaves[:4]) + (f", ... (+{len(leaves) - 4})" if len(leaves) > 4 else "")
        lines.append(f"    {mod}: {shown}")
    if len(groups) > limit:
        lines.append(f"    ... and {len(groups) - limit} more modules ({len(keys)} keys in all)")
    return "\n".join(lines)


def _likely_cause(report: LoadReport) -> str:
    missing, unexpected = report.missing, report.unexpected
    if unexpected and missing:
        # An unknown leading prefix? (e.g. Lightning's 'model.')
        heads = Counter(k.split(".", 1)[0] for k in unexpected if "." in k)
        if heads:
            head, n = heads.most_common(1)[0]
            stripped = {k.split(".", 1)[1] for k in unexpected if k.startswith(head + ".")}
            canon_missing = {canonical_fqn(m) for m in missing}
            if n == len(unexpected) and stripped & (set(missing) | canon_missing):
                return (f"a wrapper prefix this library does not know: every unexpected key starts "
                        f"with '{head}.'. Strip it (e.g. torch.nn.modules.utils."
                        f"consume_prefix_in_state_dict_if_present(sd, '{head}.')) and load again")
        return "another architecture: the checkpoint and the model name different layers"
    if report.shape_mismatches:
        return "another architecture or configuration: same layer names, different sizes"
    if missing and not unexpected:
        return "a partial checkpoint: it lacks some of the model's tensors (pass strict=False to load the rest)"
    return "extra tensors in the checkpoint that the model does not have (pass strict=False to ignore them)"


def _mismatch_message(report: LoadReport) -> str:
    lines = [f"checkpoint does not fit {report.target} "
             f"({len(report.missing)} missing, {len(report.unexpected)} unexpected, "
             f"{len(report.shape_mismatches)} shape mismatches)"]
    if report.renames:
        lines.append(f"  wrapper prefixes were already reconciled: {report}")
    if report.missing:
        lines += ["  Missing key(s), by module:", _group(report.missing)]
    if report.unexpected:
        lines += ["  Unexpected key(s), by module:", _group(report.unexpected)]
    if report.shape_mismatches:
        lines.append("  Shape mismatches (key: checkpoint -> model):")
        for k, a, b in report.shape_mismatches[:10]:
            lines.append(f"    {k}: {list(a)} -> {list(b)}")
        if len(report.shape_mismatches) > 10:
            lines.append(f"    ... and {len(report.shape_mismatches) - 10} more")
    lines.append(f"  Likely cause: {_likely_cause(report)}")
    return "\n".join(lines)


def from_checkpoint(path: str | os.PathLike[str], build: Callable[[], nn.Module], *,
                    strict: bool = True) -> tuple[nn.Module, LoadReport]:
    """Build a model on the meta device and fill it from a memory-mapped checkpoint.

    ``build()`` constructs the model; no memory is spent on random initial weights, and the
    tensors are the file's mapped pages (``mmap=True, assign=True``), so loading never holds
    two copies of the weights.
    """
    with torch.device("meta"):
        model = build()
    report = load_checkpoint(path, model, strict=strict, mmap=True, assign=True)
    return model, report


# ------------------------------------------------------------------------- saving
def _plain(value: Any, where: str) -> Any:
    """Check that metadata holds only what ``weights_only=True`` can read back."""
    # Subclasses (TorchVersion, numpy.float64, ...) pickle as their own class, which a safe
    # load refuses: store the plain builtin.
    if value is None or isinstance(value, torch.Tensor):
        return value
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"metadata {where} is a {type(value).__name__}; only str, int, float, bool, "
                    "None, tensors, lists, tuples and dicts load back with weights_only=True")


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, *,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any | None = None,
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint with clean keys, atomically; return its path.

    Keys carry no wrapper segment whatever wraps the model or its submodules, so the file
    loads into a plain model with plain ``load_state_dict``. ``.safetensors`` paths get
    weights and metadata only.
    """
    path = Path(path)
    paths = wrapper_paths(model)
    raw = model.state_dict()
    state: dict[str, Any] = {}
    for k, v in raw.items():
        ck = canonical_fqn(k, paths)
        if ck in state:
            raise CheckpointCollisionError(f"model keys clean to the same name {ck!r}", path)
        state[ck] = v.detach() if isinstance(v, torch.Tensor) else v
    meta = {"torch_version": str(torch.__version__), "model_class": type(unwrap_model(model)).__name__,
            **_plain(dict(metadata or {}), "metadata")}

    if _is_safetensors(path):
        if optimizer is not None or scheduler is not None:
            raise ValueError(f"{path}: safetensors holds weights only; save the optimizer and "
                             "scheduler to a .pt file")
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
        header = {"format": FORMAT, "compile_ckpt": json.dumps(meta, default=str)}
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    else:
        payload: dict[str, Any] = {"format": FORMAT, "model_state_dict": state, "metadata": meta}
        if optimizer is not None:
            payload["optimizer_state_dict"] = optimizer.state_dict()
        if scheduler is not None:
            payload["scheduler_state_dict"] = scheduler.state_dict()
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
    log.info("compile_ckpt: saved %d tensors to %s with clean keys", len(state), path)
    return path
