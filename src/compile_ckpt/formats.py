"""The two file formats, ``.pt`` (``torch.save``) and ``.safetensors``: safe reads with errors
that name the file, and writes that keep everything or refuse.

A ``.pt`` file of this library holds ``{"format", "model_state_dict", "metadata", "checksums",
"sha256", ["optimizer_state_dict"], ["scheduler_state_dict"]}``. A ``.safetensors`` file keeps
the tensors (tied ones once) and, in its header, JSON of the rest; it reads back as the same
dict.
"""

from __future__ import annotations

import functools
import io
import json
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .atomic import atomic_write
from .devices import device_problem
from .errors import (
    CheckpointDeviceError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointReadError,
    CorruptCheckpointError,
    PathLike,
    UnsafeCheckpointError,
    UnsupportedContentError,
)
from .integrity import content_digest, verify_content
from .snapshot import read_snapshot

FORMAT = "compile_ckpt/2"
"""The ``format`` entry of the files this library writes."""
_ZIP_MAGIC = b"PK\x03\x04"
_INSTALL = "(pip install 'compile-ckpt[safetensors]')"


def is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


_KEY_TYPES = (str, int, float, bool)


def plain_value(value: Any, where: str, tensors: bool = True) -> Any:
    """``value`` as plain builtins that come back *exactly* from ``weights_only=True`` (or, with
    ``tensors=False``, from JSON); anything else is refused. Subclasses such as TorchVersion
    become their base type: pickled as themselves, a safe load would refuse them. JSON has no
    tuples and only string keys, so there those are refused rather than changed."""
    if value is None or (tensors and isinstance(value, torch.Tensor)):
        return value
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, tuple) and not tensors:
        raise UnsupportedContentError(f"{where} is a tuple, which JSON gives back as a list; "
                                      "store a list")
    if isinstance(value, (list, tuple)):
        return type(value)(plain_value(v, f"{where}[{i}]", tensors) for i, v in enumerate(value))
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not (isinstance(k, str) if not tensors else k is None or isinstance(k, _KEY_TYPES)):
                kinds = "strings (JSON)" if not tensors else "str, int, float, bool or None"
                raise UnsupportedContentError(f"{where} has the key {k!r}, a {type(k).__name__};"
                                              f" keys must be {kinds} to come back as they are")
            key = k if k is None else next(t(k) for t in (bool, int, float, str)
                                           if isinstance(k, t))
            out[key] = plain_value(v, f"{where}.{k}" if isinstance(k, str) else f"{where}[{k!r}]",
                                   tensors)
        return out
    allowed = ("str, int, float, bool, None, " + ("tensors, " if tensors else "")
               + ("lists, tuples and dicts" if tensors else "lists and dicts"))
    stored = ("and loaded back with weights_only=True" if tensors
              else "in safetensors metadata (JSON)")
    raise UnsupportedContentError(f"{where} is a {type(value).__name__}; only {allowed} can be "
                                  f"stored {stored}")


#: Types that ``torch.load(weights_only=True)`` rebuilds without any allowlisting.
_LOADABLE = (type(None), bool, int, float, complex, str, bytes, torch.Tensor, torch.dtype,
             torch.device, torch.Size, list, tuple, dict, set)


def first_unloadable(obj: Any, where: str = "") -> str | None:
    """Where in ``obj`` the first value sits that a safe load would refuse, and its type."""
    if not isinstance(obj, _LOADABLE):
        kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
        return f"{where or 'the object'} (a {kind})"
    items = (obj.items() if isinstance(obj, Mapping)
             else enumerate(obj) if isinstance(obj, (list, tuple, set)) else ())
    for k, v in items:
        found = first_unloadable(v, f"{where}[{k!r}]" if where else str(k))
        if found:
            return found
    return None


def globals_named(message: str) -> list[str]:
    """The globals a ``weights_only`` error message says it refused, in order, once each."""
    return list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", message)))


def _save_readable(payload: Mapping[str, Any], tmp: Path, path: Path) -> None:
    """``torch.save`` to ``tmp``, then read it back as a load will (``weights_only=True``,
    memory-mapped, so no tensor is copied): what its own load would refuse is never saved."""
    torch.save(dict(payload), tmp)
    try:
        torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - torch's unpickling errors have several types
        where = first_unloadable(payload) or "its content"
        needs = globals_named(str(exc))
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # torch's message has terminal bold
        text = text.splitlines()[0][:160] if text else ""
        why = f"it needs {', '.join(needs)}" if needs else f"{type(exc).__name__}: {text}"
        raise UnsupportedContentError(f"{where} cannot be loaded back with weights_only=True "
                                      f"({why}); nothing was written", path) from None


@functools.cache
def torch_save_keeps(dtype: torch.dtype) -> bool:
    """Whether ``torch.save`` writes ``dtype`` and a safe load gives it back (asked of torch
    itself, once per dtype: some bit-packed dtypes exist in memory only)."""
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():  # experimental and deprecated dtypes warn
            warnings.simplefilter("ignore")
            torch.save(torch.zeros(2, dtype=dtype), buffer)
            buffer.seek(0)
            return torch.load(buffer, weights_only=True).dtype == dtype
    except Exception:  # noqa: BLE001 - an unknown dtype fails in several ways
        return False


def write_torch_file(path: Path, payload: Mapping[str, Any]) -> None:
    for key, t in payload["model_state_dict"].items():
        if isinstance(t, torch.Tensor) and t.layout == torch.strided and not t.is_quantized \
                and not torch_save_keeps(t.dtype):
            raise UnsupportedContentError(f"{key!r} has dtype {str(t.dtype).removeprefix('torch.')}"
                                          ", which torch.save cannot write", path)
    atomic_write(path, lambda tmp: _save_readable(payload, tmp, path))


def write_safetensors(path: Path, payload: Mapping[str, Any], sums: Mapping[str, str]) -> None:
    """Tied tensors once (the others become aliases), non-tensor state as JSON, or refuse."""
    try:
        from safetensors.torch import save_file
    except ImportError as exc:
        raise UnsupportedContentError(f"writing .safetensors needs safetensors {_INSTALL}",
                                      path) from exc
    tensors, aliases, extra = {}, {}, {}
    seen: dict[tuple[Any, ...], str] = {}
    storages: dict[int, str] = {}
    for k, v in payload["model_state_dict"].items():
        if not isinstance(v, torch.Tensor):
            extra[k] = plain_value(v, f"non-tensor state {k!r}", tensors=False)
            continue
        _check_safetensors_tensor(k, v, path)
        ptr = v.untyped_storage().data_ptr()
        view = (v.device, ptr, v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.dtype)
        if view in seen:
            aliases[k] = seen[view]
            continue
        if v.numel() and ptr in storages:
            raise UnsupportedContentError(f"{k!r} shares memory with {storages[ptr]!r} but is a "
                                          "different view of it; safetensors cannot store views. "
                                          "Save to a .pt file", path)
        seen[view], storages[ptr] = k, k
        tensors[k] = v.contiguous()
    ours = json.dumps({"metadata": payload["metadata"], "aliases": aliases, "extra_state": extra,
                       "checksums": dict(sums)})
    digest = ""
    if sums:  # of what a reader rebuilds, so that it compares like with like
        digest = content_digest(_rebuild(tensors, json.loads(ours)),
                                {id(v): sums[k] for k, v in tensors.items()})
    header = {"format": FORMAT, "compile_ckpt_version": "2", "compile_ckpt": ours,
              "compile_ckpt_sha256": digest}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


@functools.cache
def safetensors_keeps(dtype: torch.dtype) -> bool:
    """Whether safetensors stores ``dtype`` and gives it back as it was (asked of safetensors
    itself, once per dtype: its list of types grows with its versions)."""
    from safetensors.torch import load, save

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load(save({"x": torch.zeros(2, dtype=dtype)}))["x"].dtype == dtype
    except Exception:  # noqa: BLE001 - an unknown dtype fails in several ways
        return False


def _check_safetensors_tensor(key: str, t: torch.Tensor, path: Path) -> None:
    why = ("is a sparse tensor (layout " + str(t.layout).removeprefix("torch.") + ")"
           if t.layout != torch.strided
           else "is a quantized tensor" if t.is_quantized
           else f"has dtype {str(t.dtype).removeprefix('torch.')}, which safetensors does not "
                "store" if not safetensors_keeps(t.dtype) else None)
    if why:
        raise UnsupportedContentError(f"{key!r} {why}; save it to a .pt file, which keeps it "
                                      "bit for bit", path)


def _rebuild(tensors: dict[str, torch.Tensor], ours: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = dict(tensors)
    state.update({alias: tensors[original] for alias, original in ours["aliases"].items()})
    state.update(ours["extra_state"])
    out = {"format": FORMAT, "model_state_dict": state, "metadata": ours["metadata"]}
    if ours.get("checksums"):
        out["checksums"] = ours["checksums"]
    return out


def _check_device(path: PathLike, map_location: Any) -> None:
    if isinstance(map_location, (str, torch.device)):
        try:
            problem = device_problem(map_location)
        except ValueError as exc:
            raise CheckpointDeviceError(f"map_location={exc}", path) from None
        if problem:
            raise CheckpointDeviceError(f"map_location {problem}; the file was not read (use "
                                        "map_location='cpu')", path)


def read_checkpoint(path: PathLike, *, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """Load a checkpoint file safely (``weights_only=True``), as one snapshot, with errors that
    name the path.

    The file is opened once and everything (tensors, metadata, checksums) comes from that
    handle: a file replaced while it is read gives the old checkpoint or the new one, never a
    mix. Raises a :class:`CheckpointError` subclass for a missing path, a directory, a file
    that cannot be read, an empty, truncated or random file, a file that needs globals the safe
    loader refuses, and a ``map_location`` this machine cannot honour.
    """
    path = Path(path)
    _check_device(path, map_location)
    if is_safetensors(path):
        def reader(fh: BinaryIO, name: str) -> Any:
            return _read_safetensors(name, path, map_location)
    else:
        def reader(fh: BinaryIO, name: str) -> Any:
            return _read_torch(fh, name, path, map_location, mmap)
    return read_snapshot(path, reader)


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name} refused")


def _is_legacy_torch_file(fh: BinaryIO) -> bool:
    """Whether a pickle is a legacy (pre-zip) ``torch.save`` file: its first pickle is torch's
    magic number. Read with no global allowed, so nothing can run."""
    try:
        return _NoGlobals(fh).load() == torch.serialization.MAGIC_NUMBER
    except Exception:  # noqa: BLE001 - anything else is not that file
        return False
    finally:
        fh.seek(0)


def _read_torch(fh: BinaryIO, name: str, path: Path, map_location: Any, mmap: bool) -> Any:
    magic = fh.read(4)
    fh.seek(0)
    if magic != _ZIP_MAGIC:
        if magic[:1] == b"\x80" and not _is_legacy_torch_file(fh):
            raise CheckpointFormatError("a raw pickle, not a torch.save file; it is not "
                                        "unpickled, because a pickle can run code. Re-save it "
                                        "with torch.save from a trusted process", path)
        if magic[:1] != b"\x80":
            raise CorruptCheckpointError(f"not a torch.save archive (starts with {magic!r}, "
                                         "expected a zip file); the file is corrupt or of "
                                         "another format", path)
        mmap = False  # the legacy format cannot be memory-mapped; it is read whole, safely
    try:
        if mmap:
            return torch.load(name, map_location=map_location, weights_only=True, mmap=True)
        return torch.load(fh, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - translated into a precise error below
        raise _load_error(exc, path, fh) from exc


def _load_error(exc: Exception, path: Path, fh: BinaryIO) -> CheckpointError:
    text = str(exc)
    if "Weights only load failed" in text:
        try:
            fh.seek(0)
            names = torch.serialization.get_unsafe_globals_in_checkpoint(fh)
        except Exception:  # noqa: BLE001
            names = globals_named(text)
        return UnsafeCheckpointError(
            "needs Python globals that weights_only=True refuses to import: "
            f"{', '.join(names) or 'unknown globals'}. Nothing was executed. If you trust where "
            "this file came from, allow exactly those with `with torch.serialization."
            "safe_globals([...]):` around the load (or torch.serialization.add_safe_globals)",
            path, names)
    if "CUDA device" in text or "torch.cuda.is_available() is False" in text:
        return CheckpointDeviceError("holds CUDA tensors and this machine has no CUDA GPU; load "
                                     "it with map_location='cpu'", path)
    if isinstance(exc, OSError) and not isinstance(exc, EOFError) and exc.errno is not None:
        return CheckpointReadError(f"cannot be read ({exc.strerror or exc}); the file itself "
                                   "may be fine", path)
    first = text.splitlines()[0][:160] if text else "no detail"
    if isinstance(exc, (EOFError, RuntimeError, OSError)) or "zip" in text.lower():
        return CorruptCheckpointError(f"truncated or corrupt torch.save archive "
                                      f"({type(exc).__name__}: {first})", path)
    return CorruptCheckpointError(f"could not be read ({type(exc).__name__}: {first})", path)


def _header_problem(ours: Any) -> str | None:
    """What is wrong with this library's JSON entry of a safetensors header, if anything."""
    if not isinstance(ours, dict):
        return "is not a JSON object"
    for name, kind in (("metadata", dict), ("aliases", dict), ("extra_state", dict),
                       ("checksums", dict)):
        if name in ours and not isinstance(ours[name], kind):
            return f"has {name!r} of type {type(ours[name]).__name__}"
    if not {"metadata", "aliases", "extra_state"} <= set(ours):
        return "lacks metadata, aliases or extra_state"
    pairs = [*ours["aliases"].items(), *ours.get("checksums", {}).items()]
    if not all(isinstance(a, str) and isinstance(b, str) for a, b in pairs):
        return "has aliases or checksums that are not strings"
    return None


def _read_safetensors(name: str, path: Path, map_location: Any) -> dict[str, Any]:
    try:
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise CheckpointFormatError(f"reading .safetensors needs safetensors {_INSTALL}",
                                    path) from exc
    device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        with safe_open(name, framework="pt", device=device) as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - not a dict
            meta = fh.metadata() or {}
        ours = json.loads(meta["compile_ckpt"]) if "compile_ckpt" in meta else None
    except Exception as exc:  # noqa: BLE001 - safetensors and json raise their own error types
        raise CorruptCheckpointError(f"not a readable safetensors file ({type(exc).__name__}: "
                                     f"{str(exc)[:160]})", path) from exc
    marks = {"compile_ckpt", "compile_ckpt_version", "compile_ckpt_sha256"} & set(meta)
    if not marks:  # written by another tool: its header entries are the metadata
        return {"model_state_dict": tensors, "metadata": dict(meta)}
    problem = ("entries missing" if len(marks) != 3
               else f"version {meta['compile_ckpt_version']!r}"
               if meta["compile_ckpt_version"] != "2" else _header_problem(ours))
    if problem:
        raise CorruptCheckpointError("its compile_ckpt header entries are damaged or of an "
                                     f"unknown version ({problem})", path)
    for alias, original in ours["aliases"].items():
        if original not in tensors:
            raise CorruptCheckpointError(f"tied tensor {alias!r} points to {original!r}, which "
                                         "is not in the file", path)
    return {**_rebuild(tensors, ours), "sha256": meta["compile_ckpt_sha256"] or None}


def verify_checkpoint(obj: Any, origin: str | None, state: Mapping[str, Any] | None = None,
                      prefix: str = "") -> bool:
    """Refuse a damaged file of this library (format entry, whole-content SHA-256); say
    whether a checksum was verified. ``state``: the state dict whose tensors to name."""
    if not isinstance(obj, Mapping):
        return False
    check_format_entry(obj, origin)
    if state is None:
        found = obj.get("model_state_dict")
        state = found if isinstance(found, Mapping) else {}
    return verify_content(obj, state, origin, prefix)


def check_format_entry(obj: Mapping[str, Any], origin: str | None) -> None:
    """Refuse a file of this library whose ``format`` entry is damaged or newer, or that lost
    its whole-content checksum entry."""
    fmt = obj.get("format")
    if isinstance(fmt, str) and fmt.startswith("compile_ckpt/") and fmt != FORMAT:
        raise CorruptCheckpointError(f"its format entry {fmt!r} is damaged or of a newer version",
                                     origin)
    if fmt == FORMAT and "sha256" not in obj:
        raise CorruptCheckpointError("its whole-content checksum entry is missing: the file is "
                                     "damaged", origin)
