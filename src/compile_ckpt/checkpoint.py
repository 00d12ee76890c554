"""Save and load PyTorch checkpoints whatever wraps the model.

``torch.compile(model)`` returns an ``OptimizedModule`` that holds the real model as
``_orig_mod``, so its ``state_dict()`` keys read ``_orig_mod.layer.weight``. DDP and
DataParallel add ``module.``, ``checkpoint_wrapper`` adds ``_checkpoint_wrapped_module.``
to named parameters, FSDP (v1) adds ``_fsdp_wrapped_module.``, and a compiled *submodule*
puts ``_orig_mod`` in the middle of a key (``encoder._orig_mod.weight``).

This module is self-contained: it imports torch and the standard library only (plus
``safetensors`` lazily, when a ``.safetensors`` path is used), so it can be copied into
any trainer. The guarantees:

- **Writes are atomic and never destroy what they do not own.** A temporary file beside the
  target is fsynced and moved into place; a symlink is written through to its target; a
  directory, FIFO or device at the path is refused; a new file gets ``0o666 & ~umask`` (what
  ``torch.save`` gives), an overwritten one keeps its mode.
- **Loads are all-or-nothing.** Keys, shapes, non-tensor values, the file's SHA-256 and the
  optimizer and scheduler state are checked before the first tensor is copied.
- **Reads are safe.** Always ``torch.load(weights_only=True)``; every failure is a
  :class:`CheckpointError` subclass that names the file and the cause.
- **Every format keeps everything or refuses.** ``.safetensors`` files store tied tensors once
  and re-tie them on load, keep JSON-able non-tensor state, and refuse what they cannot hold.

The public entry points are :func:`save_checkpoint`, :func:`load_checkpoint`,
:func:`from_checkpoint`, :func:`clean_state_dict`, :func:`unwrap_model`, :func:`canonical_fqn`,
:func:`read_checkpoint` and :func:`find_state_dicts`.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "BARE",
    "FORMAT",
    "WRAPPER_SEGMENTS",
    "CheckpointCollisionError",
    "CheckpointDeviceError",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "ChecksumMismatchError",
    "CorruptCheckpointError",
    "LoadReport",
    "Rename",
    "UnsafeCheckpointError",
    "UnsupportedContentError",
    "atomic_write",
    "canonical_fqn",
    "content_digest",
    "clean_state_dict",
    "extract_model_state_dict",
    "find_state_dicts",
    "from_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "tensor_checksum",
    "unwrap_model",
    "wrapper_paths",
]

log = logging.getLogger("compile_ckpt")

FORMAT = "compile_ckpt/2"
"""Value of the ``format`` entry that :func:`save_checkpoint` writes. Files of this format carry a
``sha256`` entry: the SHA-256 of their whole content (:func:`content_digest`), or None when saved
with ``checksums=False``; ``compile_ckpt/1`` files (no checksums) are still read."""
_FORMAT_1 = "compile_ckpt/1"

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
_OPTIMIZER_KEYS = ("optimizer_state_dict", "optimizer", "optimizer_states")  # the last: Lightning's list
_SCHEDULER_KEYS = ("scheduler_state_dict", "lr_scheduler", "scheduler", "lr_schedulers")
_ZIP_MAGIC = b"PK\x03\x04"
_EXTRA_STATE = "_extra_state"
BARE = "bare state dict"
"""The container name :func:`find_state_dicts` gives a file that *is* a state dict."""


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


class ChecksumMismatchError(CorruptCheckpointError):
    """A tensor's bytes differ from the SHA-256 that was stored when the file was saved."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs Python globals that ``weights_only=True`` refuses to import."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None,
                 globals_: Iterable[str] = ()) -> None:
        self.globals = list(globals_)
        super().__init__(message, path)


class CheckpointFormatError(CheckpointError, ValueError):
    """The file loaded, but holds no state dict this library recognises."""


class UnsupportedContentError(CheckpointFormatError, TypeError):
    """What was asked to be saved cannot be stored in the format the path's suffix names."""


class CheckpointDeviceError(CheckpointError, ValueError):
    """``map_location`` names a device this machine does not have (the file may be fine)."""


class CheckpointWriteError(CheckpointError, OSError):
    """Nothing was written: the path is not a regular file, or the write failed (e.g. a full
    disk). Whatever was at the path before is unchanged."""


class CheckpointCollisionError(CheckpointError, ValueError):
    """Two checkpoint keys would land on the same target key."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """Strict loading failed: keys missing, unexpected, or of another shape; or the
    optimizer or scheduler state does not fit. Nothing was copied."""


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

    source: str = "a state dict in memory"
    target: str = ""
    total: int = 0
    loaded: int = 0
    renames: list[Rename] = dataclasses.field(default_factory=list)
    missing: list[str] = dataclasses.field(default_factory=list)
    unexpected: list[str] = dataclasses.field(default_factory=list)
    shape_mismatches: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(
        default_factory=list
    )
    non_tensors: list[str] = dataclasses.field(default_factory=list)
    dtype_casts: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    optimizer_loaded: bool = False
    scheduler_loaded: bool = False
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    container: str = BARE
    other_state_dicts: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)  # outside the prefix asked for
    tied: dict[str, str] = dataclasses.field(default_factory=dict)  # absent key -> the key it is tied to
    checksums_verified: bool = False

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
        return not (self.missing or self.unexpected or self.shape_mismatches or self.non_tensors)

    def __str__(self) -> str:
        into = f" into {self.target}" if self.target else ""
        source = Path(self.source).name if os.sep in self.source else self.source  # the full path is in .source
        head = f"compile_ckpt: {self.loaded}/{self.total} tensors from {source}{into}"
        parts = []
        if self.removed_prefixes:
            parts.append("cleaned prefixes: removed " + _fmt_counter(self.removed_prefixes))
        if self.added_prefixes:
            parts.append("added " + _fmt_counter(self.added_prefixes, "to"))
        reordered = sum(1 for r in self.renames if not (r.removed or r.added))
        if reordered:
            parts.append(f"reordered wrapper segments in {reordered} keys")
        if not self.renames:
            parts.append("keys already matched, nothing renamed")
        if self.missing or self.unexpected:
            parts.append(f"{len(self.missing)} missing, {len(self.unexpected)} unexpected")
        if self.shape_mismatches:
            parts.append(f"{len(self.shape_mismatches)} shape mismatches skipped")
        if self.skipped:
            parts.append(f"left {len(self.skipped)} key{'s' if len(self.skipped) != 1 else ''} outside the prefix")
        if self.tied:
            parts.append(f"{len(self.tied)} tied to a loaded tensor ({', '.join(self.tied)})")
        extra = [n for n, ok in (("optimizer", self.optimizer_loaded),
                                 ("scheduler", self.scheduler_loaded)) if ok]
        if extra:
            parts.append("also loaded " + " and ".join(extra))
        if self.checksums_verified:
            parts.append("checksums verified")
        if self.other_state_dicts:
            parts.append(f"the file also holds {', '.join(self.other_state_dicts)} (choose with key=)")
        return head + "; " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form (for ``--json`` and notebook records)."""
        d = dataclasses.asdict(self)
        d["renames"] = [dataclasses.asdict(r) for r in self.renames]
        d["removed_prefixes"] = dict(self.removed_prefixes)
        d["added_prefixes"] = dict(self.added_prefixes)
        d["summary"] = str(self)
        return d


def _fmt_counter(c: Counter[str], word: str = "from") -> str:
    return ", ".join(f"'{k}' {word} {n} key{'s' if n != 1 else ''}" for k, n in c.most_common())


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


# ------------------------------------------------------------------------ writing
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _writable_target(path: Path) -> tuple[Path, os.stat_result | None]:
    """The file a write to ``path`` replaces (a symlink is followed, as ``torch.save``
    follows it) and its current status; refuse anything that is not a regular file."""
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        via = f" (the symlink's target {target})" if target != path else ""
        raise CheckpointWriteError(f"is {kind}{via}, not a regular file; refusing to replace it, "
                                   "nothing was written", path)
    return target, st


def _remove_stale_temps(target: Path) -> None:
    """Delete temporary files that a killed save to ``target`` left behind. The writer's PID
    is in the name; a live writer's file (this process's too) is never touched."""
    for tmp in target.parent.glob(f".{_glob_escape(target.name)}.*.tmp"):
        pid = tmp.name[len(target.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                tmp.unlink()
                log.info("compile_ckpt: removed %s, left by a save that was killed", tmp)
        except PermissionError:  # alive, owned by someone else
            continue


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)``, then move the file onto ``path`` in one step; return ``path``.

    The temporary file sits beside the target, is fsynced, gets the target's mode (a new file
    ``0o666 & ~umask``), then ``os.replace``s it, and the directory is fsynced: a crash at any
    moment leaves the old file or the new one. A symlink is written through to its target;
    anything but a regular file raises :class:`CheckpointWriteError` untouched, and so does a
    failed write (a full disk), after removing its temporary file.
    """
    path = Path(path)
    target, st = _writable_target(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointWriteError(f"its folder cannot be created ({exc.strerror or exc})", path) from exc
    _remove_stale_temps(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise CheckpointWriteError(f"cannot be written ({exc.strerror or exc}); nothing changed", path) from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, stat.S_IMODE(st.st_mode) if st else 0o666 & ~_umask())
        if st is not None and os.geteuid() == 0:
            os.chown(tmp_path, st.st_uid, st.st_gid)
        os.replace(tmp_path, target)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, CheckpointError):
            raise
        free = shutil.disk_usage(target.parent).free
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
        raise CheckpointWriteError(f"could not be written ({why}; {free:,} bytes free on its device); the "
                                   "previous file, if any, is unchanged", path) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return path


def _fsync_dir(folder: Path) -> None:
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def tensor_checksum(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes (dtype and shape are part of what is hashed)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    n = t.numel() * t.element_size()
    if n:  # a zero-copy view of the tensor's memory: no numpy needed
        h.update(memoryview((ctypes.c_char * n).from_address(t.data_ptr())))
    return h.hexdigest()


def content_digest(obj: Any, known: Mapping[int, str] | None = None) -> str:
    """SHA-256 of a checkpoint's whole content: every tensor's bytes (by :func:`tensor_checksum`;
    ``known`` maps ``id(tensor)`` to one already computed), every key, number and string, in a
    canonical order. Torch does not check its zip CRCs, so this is what catches a flipped byte in
    metadata or optimizer state too."""
    h = hashlib.sha256()
    known = known or {}

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            h.update(b"T" + (known.get(id(x)) or tensor_checksum(x)).encode())
        elif isinstance(x, Mapping):
            h.update(b"{")
            for k in sorted(x, key=repr):
                h.update(repr(k).encode() + b":")
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[" if isinstance(x, list) else b"(")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    walk(obj)
    return h.hexdigest()


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def _plain(value: Any, where: str, tensors: bool = True) -> Any:
    """Check that metadata holds only what ``weights_only=True`` (or, with ``tensors=False``,
    JSON) can read back, as plain builtins (subclasses such as TorchVersion would pickle as
    their own class, which a safe load refuses)."""
    if value is None or (tensors and isinstance(value, torch.Tensor)):
        return value
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, where, tensors) for v in value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}", tensors) for k, v in value.items()}
    allowed = "str, int, float, bool, None, " + ("tensors, " if tensors else "") + "lists, tuples and dicts"
    where_to = "and loaded back with weights_only=True" if tensors else "in safetensors metadata (JSON)"
    raise UnsupportedContentError(f"{where} is a {type(value).__name__}; only {allowed} can be stored {where_to}")


def _clean_model_state(model: nn.Module | Mapping[str, Any], path: Path) -> dict[str, Any]:
    if isinstance(model, Mapping):  # a state dict: cleaned without a model (see clean_state_dict)
        try:
            cleaned, _ = clean_state_dict(model)
        except CheckpointCollisionError as exc:
            raise CheckpointCollisionError(exc.message, path) from None
        return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in cleaned.items()}
    paths = wrapper_paths(model)
    state: dict[str, Any] = {}
    for k, v in model.state_dict().items():
        ck = canonical_fqn(k, paths)
        if ck in state:
            raise CheckpointCollisionError(f"model keys clean to the same name {ck!r}", path)
        state[ck] = v.detach() if isinstance(v, torch.Tensor) else v
    return state


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module | Mapping[str, Any], *,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any | None = None,
                    metadata: Mapping[str, Any] | None = None, checksums: bool = True) -> Path:
    """Write a checkpoint with clean keys, atomically; return its path.

    Keys carry no wrapper segment whatever wraps the model or its submodules, so the file
    loads into a plain model with plain ``load_state_dict``. With ``checksums`` a SHA-256 of
    every tensor and of the whole content is stored, and :func:`load_checkpoint` verifies it. ``model`` may also be a
    state dict, cleaned as :func:`clean_state_dict` does without a model. ``.safetensors`` paths
    hold weights, JSON-able metadata and JSON-able non-tensor state; tied tensors are stored
    once and re-tied on load; an optimizer or scheduler there is refused.
    """
    path = Path(path)
    state = _clean_model_state(model, path)
    meta = {"torch_version": str(torch.__version__),
            **({} if isinstance(model, Mapping) else {"model_class": type(unwrap_model(model)).__name__}),
            **_plain(dict(metadata or {}), "metadata", tensors=not _is_safetensors(path))}
    sums = {k: tensor_checksum(v) for k, v in state.items() if isinstance(v, torch.Tensor)} if checksums else {}
    if _is_safetensors(path):
        if optimizer is not None or scheduler is not None:
            raise UnsupportedContentError("safetensors holds weights only; save the optimizer and scheduler "
                                          "to a .pt file", path)
        _save_safetensors(path, state, meta, sums)
    else:
        payload: dict[str, Any] = {"format": FORMAT, "model_state_dict": state, "metadata": meta}
        if sums:
            payload["checksums"] = sums
        if optimizer is not None:
            payload["optimizer_state_dict"] = optimizer.state_dict()
        if scheduler is not None:
            payload["scheduler_state_dict"] = scheduler.state_dict()
        known = {id(v): sums[k] for k, v in state.items() if k in sums}  # each tensor is hashed once
        payload["sha256"] = content_digest(payload, known) if checksums else None
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
    log.info("compile_ckpt: saved %d tensors to %s with clean keys", len(state), path)
    return path


def _save_safetensors(path: Path, state: Mapping[str, Any], meta: dict[str, Any],
                      sums: dict[str, str]) -> None:
    """Tied tensors once (the others become aliases), non-tensor state as JSON, or refuse."""
    try:
        from safetensors.torch import save_file
    except ImportError as exc:
        raise UnsupportedContentError("writing .safetensors needs the safetensors package "
                                      "(pip install 'compile-ckpt[safetensors]')", path) from exc
    tensors, aliases, extra = {}, {}, {}
    seen: dict[tuple[Any, ...], str] = {}
    storages: dict[int, str] = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            extra[k] = _plain(v, f"non-tensor state {k!r}", tensors=False)
            continue
        view = (v.device, v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()),
                v.dtype)
        if view in seen:
            aliases[k] = seen[view]
            continue
        ptr = v.untyped_storage().data_ptr()
        if v.numel() and ptr in storages:
            raise UnsupportedContentError(f"{k!r} shares memory with {storages[ptr]!r} but is a different view "
                                          "of it; safetensors cannot store views. Save to a .pt file", path)
        seen[view], storages[ptr] = k, k
        tensors[k] = v.contiguous()
    ours = json.dumps({"metadata": meta, "aliases": aliases, "extra_state": extra, "checksums": sums})
    back = json.loads(ours)  # what a reader rebuilds, so the digest compares like with like
    logical = {"format": FORMAT, "model_state_dict": {**tensors, **{a: tensors[t] for a, t in aliases.items()},
                                                      **back["extra_state"]}, "metadata": back["metadata"]}
    if sums:
        logical["checksums"] = sums
    header = {"format": FORMAT, "compile_ckpt_version": "2", "compile_ckpt": ours,
              "compile_ckpt_sha256": content_digest(logical, {id(v): sums[k] for k, v in state.items()
                                                              if k in sums}) if sums else ""}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


# ------------------------------------------------------------------------ reading
def _check_map_location(map_location: Any, path: Path) -> None:
    if not isinstance(map_location, (str, torch.device)):
        return
    try:
        dev = torch.device(map_location)
    except (RuntimeError, ValueError) as exc:
        raise CheckpointDeviceError(f"map_location={str(map_location)!r} is not a device ({exc})", path) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointDeviceError(f"map_location={str(map_location)!r}, but this machine has no CUDA GPU "
                                    "(the file was not read; use map_location='cpu')", path)
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CheckpointDeviceError(f"map_location={str(map_location)!r}, but this machine has "
                                    f"{torch.cuda.device_count()} GPU(s)", path)


def read_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu",
                    mmap: bool = False) -> Any:
    """Load a checkpoint file safely (``weights_only=True``), with errors that name the path.

    Raises a :class:`CheckpointError` subclass for a missing path, a directory, an empty,
    truncated or random file, a file that needs globals the safe loader refuses, and a
    ``map_location`` this machine cannot honour.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointNotFoundError("no such file", path)
    if path.is_dir():
        hint = (" (a torch.distributed.checkpoint directory: convert it with "
                "torch.distributed.checkpoint.format_utils.dcp_to_torch_save)"
                if (path / ".metadata").exists() else "")
        raise CheckpointNotFoundError(f"is a directory, not a checkpoint file{hint}", path)
    _check_map_location(map_location, path)
    if path.stat().st_size == 0:
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
    if "CUDA device" in text or "torch.cuda.is_available() is False" in text:
        return CheckpointDeviceError("holds CUDA tensors and this machine has no CUDA GPU; load it with "
                                     "map_location='cpu'", path)
    if isinstance(exc, (EOFError, RuntimeError, OSError)) or "zip" in text.lower():
        return CorruptCheckpointError(
            f"truncated or corrupt torch.save archive ({type(exc).__name__}: "
            f"{text.splitlines()[0][:160] if text else 'no detail'})", path)
    return CorruptCheckpointError(f"could not be read ({type(exc).__name__}: {text[:160]})", path)


def _read_safetensors(path: Path, map_location: Any) -> dict[str, Any]:
    try:
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise CheckpointFormatError("reading .safetensors needs the safetensors package "
                                    "(pip install 'compile-ckpt[safetensors]')", path) from exc
    device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=device) as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            meta = fh.metadata() or {}
        ours = json.loads(meta["compile_ckpt"]) if "compile_ckpt" in meta else None
    except Exception as exc:  # noqa: BLE001 - safetensors and json raise their own error types
        raise CorruptCheckpointError(
            f"not a readable safetensors file ({type(exc).__name__}: {str(exc)[:160]})", path) from exc
    marks = {k for k in ("compile_ckpt", "compile_ckpt_version", "compile_ckpt_sha256") if k in meta}
    if not marks:  # written by another tool: its header entries are the metadata
        return {"model_state_dict": tensors, "metadata": dict(meta)}
    if marks == {"compile_ckpt"} and not (isinstance(ours, dict) and "aliases" in ours):  # version 1
        return {"format": _FORMAT_1, "model_state_dict": tensors, "metadata": ours}
    if len(marks) != 3 or meta["compile_ckpt_version"] != "2" or not isinstance(ours, dict) or \
            not {"metadata", "aliases", "extra_state"} <= set(ours):
        raise CorruptCheckpointError("its compile_ckpt header entries are damaged or of an unknown version", path)
    state: dict[str, Any] = dict(tensors)
    for alias, original in ours["aliases"].items():
        if original not in tensors:
            raise CorruptCheckpointError(f"tied tensor {alias!r} points to {original!r}, which is not in the "
                                         "file", path)
        state[alias] = tensors[original]
    state.update(ours["extra_state"])
    out = {"format": FORMAT, "model_state_dict": state, "metadata": ours["metadata"]}
    if ours.get("checksums"):
        out["checksums"] = ours["checksums"]
    out["sha256"] = meta["compile_ckpt_sha256"] or None
    return out


def _looks_like_state_dict(d: Any) -> bool:
    return (isinstance(d, Mapping) and bool(d) and all(isinstance(k, str) for k in d)
            and any(isinstance(v, torch.Tensor) for v in d.values()))


#: Containers that hold tensors but never a model's state dict (optimizer state, RNG state...).
_NOT_MODEL_STATE = frozenset({"metadata", "checksums", "state", "param_groups", "rng", "rng_state", "optim",
                              *_OPTIMIZER_KEYS, *_SCHEDULER_KEYS})


def _state_dict_paths(obj: Any, where: tuple[str, ...] = ()) -> dict[tuple[str, ...], dict[str, Any]]:
    """State dicts in a loaded checkpoint: the object itself, or under one or two levels of
    container keys (not inside optimizer, scheduler, RNG or metadata entries)."""
    if _looks_like_state_dict(obj):
        return {where: dict(obj)}
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    if isinstance(obj, Mapping) and len(where) < 2:
        for k, v in obj.items():
            if isinstance(k, str) and isinstance(v, Mapping) and k not in _NOT_MODEL_STATE:
                found.update(_state_dict_paths(v, (*where, k)))
    return found


def find_state_dicts(obj: Any) -> dict[str, dict[str, Any]]:
    """Every state dict in a loaded checkpoint, by where it is: ``BARE`` for a file that is
    one, else its container key (nested ones dotted: ``"models.teacher"``), in file order."""
    return {".".join(where) or BARE: sd for where, sd in _state_dict_paths(obj).items()}


def extract_model_state_dict(obj: Any, origin: str | None = None, key: str | None = None
                             ) -> tuple[dict[str, Any], str]:
    """The state dict to load from a loaded checkpoint, and its container name.

    ``key`` names one (see :func:`find_state_dicts`); without it: ``model_state_dict``,
    ``state_dict`` or ``model``, else a bare state dict, else the only one there is. A file
    with several candidates and none of those names asks for ``key``.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"holds a {type(obj).__name__}, not a dict; expected a state dict or a dict "
            f"with one of {list(_MODEL_KEYS)}", origin)
    found = find_state_dicts(obj)
    if key is not None:
        if key not in found:
            raise CheckpointFormatError(f"has no state dict called {key!r}; it has {list(found) or 'none'}", origin)
        return found[key], key
    for name in (*_MODEL_KEYS, BARE):
        if name in found:
            return found[name], name
    if len(found) == 1:
        (name, only), = found.items()
        return only, name
    if found:
        raise CheckpointFormatError(f"holds several state dicts ({', '.join(found)}); choose one with key=",
                                    origin)
    top = ", ".join(repr(k) for k in list(obj)[:8]) or "nothing"
    raise CheckpointFormatError(
        f"no model state dict found; top-level keys are {top}. Expected a state dict or a "
        f"dict with one of {list(_MODEL_KEYS)}", origin)


def _first(obj: Mapping[str, Any], keys: Iterable[str]) -> tuple[str, Any]:
    for k in keys:
        if k in obj and obj[k] is not None:
            value = obj[k]
            if isinstance(value, list) and len(value) == 1:  # Lightning keeps lists of states
                value = value[0]
            return k, value
    return "", None


# ------------------------------------------------------------------------ loading
def _read_source(source: str | os.PathLike[str] | Mapping[str, Any], map_location: Any,
                 mmap: bool) -> tuple[str | None, Any]:
    if isinstance(source, (str, os.PathLike)):
        return str(source), read_checkpoint(source, map_location=map_location, mmap=mmap)
    return None, source  # an already loaded object; checked by the caller


def _take_prefix(state: dict[str, Any], prefix: str, origin: str | None) -> tuple[dict[str, Any], list[str]]:
    """Keys under ``prefix`` with it removed, and the keys that were not under it."""
    taken = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not taken:
        heads = sorted({k.split(".", 1)[0] + "." for k in state})[:6]
        raise CheckpointMismatchError(f"no key starts with prefix={prefix!r} (keys start with {heads})", origin)
    return taken, [k for k in state if not k.startswith(prefix)]


def _verify(obj: Mapping[str, Any], state: Mapping[str, Any], origin: str | None, prefix: str) -> bool:
    """Check a file's whole-content SHA-256; say whether there was one to check. On a mismatch,
    the per-tensor checksums name the tensors that changed, if any did."""
    fmt = obj.get("format")
    if isinstance(fmt, str) and fmt.startswith("compile_ckpt/") and fmt not in (FORMAT, _FORMAT_1):
        raise CorruptCheckpointError(f"its format entry {fmt!r} is damaged or of a newer version", origin)
    if fmt == FORMAT and "sha256" not in obj:
        raise CorruptCheckpointError("its whole-content checksum entry is missing: the file is damaged", origin)
    digest = obj.get("sha256")
    if not digest:
        return False
    if content_digest({k: v for k, v in obj.items() if k != "sha256"}) == digest:
        return True
    sums = obj.get("checksums") if isinstance(obj.get("checksums"), Mapping) else {}
    bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and tensor_checksum(v) != sums.get(prefix + k)]
    where = f"tensor(s) {', '.join(bad[:5])}" if bad else "its metadata, optimizer or scheduler state, or its keys"
    raise ChecksumMismatchError(f"its content differs from the SHA-256 stored when it was saved ({where}): the "
                                "file was damaged after saving; nothing was loaded", origin)


def load_checkpoint(source: str | os.PathLike[str] | Mapping[str, Any], model: nn.Module, *,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any | None = None,
                    strict: bool = True, key: str | None = None, prefix: str | None = None,
                    map_location: Any = "cpu", mmap: bool = False, assign: bool = False,
                    verify: bool = True) -> LoadReport:
    """Load ``source`` into ``model`` (and ``optimizer``/``scheduler``), renaming only the keys
    that must be renamed; all or nothing.

    ``model`` may be plain, compiled, compiled in place, DDP-wrapped or hold compiled or
    checkpoint-wrapped submodules; ``source`` may come from any of those. Keys that already
    match the model are never renamed. ``key`` picks one state dict of a file that holds
    several (``"ema"``); ``prefix`` takes only the keys under a trainer's own prefix
    (Lightning's ``"model."``, ``AveragedModel``'s ``"module."``) and strips it.
    Everything is checked first (keys, shapes, non-tensor values, stored checksums when
    ``verify``, optimizer and scheduler state); with ``strict=True`` a problem raises a
    :class:`CheckpointError` and model, optimizer and scheduler are left exactly as they were.
    The caller's checkpoint object is never mutated.
    """
    origin, obj = _read_source(source, map_location, mmap)
    state, container = extract_model_state_dict(obj, origin, key)
    skipped: list[str] = []
    if prefix:
        state, skipped = _take_prefix(state, prefix, origin)
    checked = verify and isinstance(obj, Mapping) and _verify(obj, state, origin, prefix or "")
    report = _plan(state, model, origin, strict)
    report.container, report.skipped, report.checksums_verified = container, skipped, checked
    report.other_state_dicts = [n for n in find_state_dicts(obj) if n != container]
    report.metadata = dict(obj["metadata"]) if isinstance(obj.get("metadata"), Mapping) else {}
    opt_state = _optional_state(obj, _OPTIMIZER_KEYS, optimizer, "optimizer", strict, origin)
    sched_state = _optional_state(obj, _SCHEDULER_KEYS, scheduler, "scheduler", strict, origin)
    if opt_state is not None:
        _check_optimizer_state(opt_state, optimizer, origin)  # type: ignore[arg-type]
    # Everything that can be checked was: only now is anything copied.
    model.load_state_dict(report._tensors, strict=False, assign=assign)
    if assign:
        _check_no_meta(model, origin)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)  # type: ignore[union-attr]
        report.optimizer_loaded = True
    if sched_state is not None:
        scheduler.load_state_dict(sched_state)
        report.scheduler_loaded = True
    log.info("%s", report)
    return report


def _plan(state: dict[str, Any], model: nn.Module, origin: str | None, strict: bool) -> LoadReport:
    """Match the file's keys to the model's and check every value; copies nothing."""
    target_sd = model.state_dict(keep_vars=True)
    mapping, renames = _match_keys(state.keys(), target_sd.keys(), wrapper_paths(model), origin)
    renamed = {mapping[k]: v for k, v in state.items() if k in mapping}
    shapes, non_tensors, casts = [], [], []
    for k, v in renamed.items():
        want = target_sd[k]
        if k.rsplit(".", 1)[-1] == _EXTRA_STATE or not isinstance(want, torch.Tensor):
            continue
        if not isinstance(v, torch.Tensor):
            non_tensors.append(k)
        elif v.shape != want.shape:
            shapes.append((k, tuple(v.shape), tuple(want.shape)))
        elif v.dtype != want.dtype:
            casts.append((k, str(v.dtype).replace("torch.", ""), str(want.dtype).replace("torch.", "")))
    missing, tied = _missing_unless_tied(target_sd, renamed)
    report = LoadReport(
        source=origin or "a state dict in memory", target=type(unwrap_model(model)).__name__, total=len(state),
        loaded=len(renamed) - len(shapes) - len(non_tensors), renames=renames, missing=missing,
        unexpected=[k for k in state if k not in mapping], shape_mismatches=shapes, non_tensors=non_tensors,
        dtype_casts=casts, tied=tied)
    if strict and not report.ok:
        raise CheckpointMismatchError(_mismatch_message(report), origin)
    report._tensors = {k: v for k, v in renamed.items()
                       if k not in non_tensors and k not in {s[0] for s in shapes}}
    return report


def _missing_unless_tied(target_sd: Mapping[str, Any], renamed: Mapping[str, Any]
                         ) -> tuple[list[str], dict[str, str]]:
    """Target keys the file does not fill, except those tied to one it fills (the same
    parameter under two names, like a head tied to its embedding, which safetensors and
    ``save_pretrained`` store once): those are filled through the tie."""
    owner: dict[int, str] = {}
    for k in renamed:
        if isinstance(target_sd.get(k), torch.Tensor):
            owner.setdefault(id(target_sd[k]), k)
    missing, tied = [], {}
    for k, t in target_sd.items():
        if k in renamed:
            continue
        if isinstance(t, torch.Tensor) and id(t) in owner:
            tied[k] = owner[id(t)]
        else:
            missing.append(k)
    return missing, tied


def _optional_state(obj: Mapping[str, Any], keys: tuple[str, ...], target: Any, what: str, strict: bool,
                 origin: str | None) -> Mapping[str, Any] | None:
    """The optimizer or scheduler state to load into ``target`` (None: nothing to load)."""
    if target is None:
        return None
    where, state = _first(obj, keys)
    if state is None:
        if strict:
            article = "an" if what[0] in "aeiou" else "a"
            raise CheckpointFormatError(f"{article} {what} was passed but the checkpoint holds no {what} state "
                                        f"(looked for {list(keys)}); nothing was loaded", origin)
        return None
    if not isinstance(state, Mapping):
        raise CheckpointFormatError(f"its {where!r} is a {type(state).__name__}, not a {what} state dict; "
                                    "nothing was loaded", origin)
    return state


def _check_optimizer_state(saved: Mapping[str, Any], optimizer: torch.optim.Optimizer, origin: str | None) -> None:
    """What ``optimizer.load_state_dict`` would refuse, plus per-parameter state whose shape
    does not fit the parameter it will be attached to; raises before anything is copied."""
    groups, mine = saved.get("param_groups"), optimizer.param_groups
    if not isinstance(groups, list) or not isinstance(saved.get("state"), Mapping):
        raise CheckpointMismatchError("its optimizer state has no 'param_groups' list and 'state' dict; "
                                      "nothing was loaded", origin)
    sizes, my_sizes = [len(g.get("params", [])) for g in groups], [len(g["params"]) for g in mine]
    if sizes != my_sizes:
        raise CheckpointMismatchError(f"its optimizer state has parameter groups of sizes {sizes}; the optimizer's "
                                      f"are {my_sizes} (another model or optimizer set-up); nothing was loaded", origin)
    params = {pid: p for g, mg in zip(groups, mine, strict=True) for pid, p in zip(g["params"], mg["params"],
                                                                                    strict=True)}
    for pid, per_param in saved["state"].items():
        p = params.get(pid)
        if p is None or not isinstance(per_param, Mapping):
            raise CheckpointMismatchError(f"its optimizer state refers to parameter {pid!r}, which no group "
                                          "lists; nothing was loaded", origin)
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != p.shape:
                raise CheckpointMismatchError(
                    f"its optimizer state {name!r} for parameter {pid} has shape {list(value.shape)}, the "
                    f"parameter has {list(p.shape)}; nothing was loaded", origin)


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
                return (f"a prefix of another trainer: every unexpected key starts with '{head}.'. "
                        f"Pass prefix='{head}.' to load_checkpoint (or strip it with torch.nn.modules.utils."
                        f"consume_prefix_in_state_dict_if_present(sd, '{head}.'))")
        return "another architecture: the checkpoint and the model name different layers"
    if report.shape_mismatches:
        return "another architecture or configuration: same layer names, different sizes"
    if report.non_tensors:
        return "values that are not tensors where the model has tensors (a damaged or hand-edited file)"
    if missing and not unexpected:
        return "a partial checkpoint: it lacks some of the model's tensors (pass strict=False to load the rest)"
    return "extra tensors in the checkpoint that the model does not have (pass strict=False to ignore them)"


def _mismatch_message(report: LoadReport) -> str:
    lines = [f"checkpoint does not fit {report.target} "
             f"({len(report.missing)} missing, {len(report.unexpected)} unexpected, "
             f"{len(report.shape_mismatches)} shape mismatches, {len(report.non_tensors)} non-tensor values); "
             "nothing was loaded"]
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
    if report.non_tensors:
        lines.append(f"  Not tensors: {', '.join(report.non_tensors[:10])}")
    lines.append(f"  Likely cause: {_likely_cause(report)}")
    return "\n".join(lines)


def from_checkpoint(path: str | os.PathLike[str], build: Callable[[], nn.Module], *,
                    strict: bool = True, key: str | None = None, prefix: str | None = None
                    ) -> tuple[nn.Module, LoadReport]:
    """Build a model on the meta device and fill it from a memory-mapped checkpoint.

    ``build()`` constructs the model; no memory is spent on random initial weights, and the
    tensors are the file's mapped pages (``mmap=True, assign=True``), so loading never holds
    two copies of the weights.
    """
    with torch.device("meta"):
        model = build()
    report = load_checkpoint(path, model, strict=strict, key=key, prefix=prefix, mmap=True, assign=True)
    return model, report
