"""The two file formats, ``.pt`` (``torch.save``) and ``.safetensors``: safe reads with errors
that name the file, and writes that keep everything or refuse.

A ``.pt`` file of this library holds ``{"format", "model_state_dict", "metadata", "checksums",
"sha256", ["optimizer_state_dict"], ["scheduler_state_dict"]}``. A ``.safetensors`` file keeps
the tensors (tied ones once) and, in its header, JSON of the rest; it reads back as the same
dict.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .devices import device_problem
from .errors import (
    CheckpointDeviceError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    PathLike,
    UnsafeCheckpointError,
    UnsupportedContentError,
)
from .integrity import content_digest

FORMAT = "compile_ckpt/2"
"""The ``format`` entry of the files this library writes."""
_ZIP_MAGIC = b"PK\x03\x04"
_INSTALL = "(pip install 'compile-ckpt[safetensors]')"


def is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def plain_value(value: Any, where: str, tensors: bool = True) -> Any:
    """``value`` as plain builtins that ``weights_only=True`` (or, with ``tensors=False``,
    JSON) reads back; anything else is refused. Subclasses such as TorchVersion become their
    base type: pickled as themselves, a safe load would refuse them."""
    if value is None or (tensors and isinstance(value, torch.Tensor)):
        return value
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, (list, tuple)):
        return type(value)(plain_value(v, where, tensors) for v in value)
    if isinstance(value, Mapping):
        return {str(k): plain_value(v, f"{where}.{k}", tensors) for k, v in value.items()}
    allowed = ("str, int, float, bool, None, " + ("tensors, " if tensors else "")
               + "lists, tuples and dicts")
    stored = ("and loaded back with weights_only=True" if tensors
              else "in safetensors metadata (JSON)")
    raise UnsupportedContentError(f"{where} is a {type(value).__name__}; only {allowed} can be "
                                  f"stored {stored}")


def write_torch_file(path: Path, payload: Mapping[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(dict(payload), tmp))


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


def _rebuild(tensors: dict[str, torch.Tensor], ours: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, Any] = dict(tensors)
    state.update({alias: tensors[original] for alias, original in ours["aliases"].items()})
    state.update(ours["extra_state"])
    out = {"format": FORMAT, "model_state_dict": state, "metadata": ours["metadata"]}
    if ours.get("checksums"):
        out["checksums"] = ours["checksums"]
    return out


def _check_path(path: Path, map_location: Any) -> None:
    if not path.exists():
        raise CheckpointNotFoundError("no such file", path)
    if path.is_dir():
        hint = (" (a torch.distributed.checkpoint directory: convert it with torch.distributed."
                "checkpoint.format_utils.dcp_to_torch_save)" if (path / ".metadata").exists()
                else "")
        raise CheckpointNotFoundError(f"is a directory, not a checkpoint file{hint}", path)
    if isinstance(map_location, (str, torch.device)):
        try:
            problem = device_problem(map_location)
        except ValueError as exc:
            raise CheckpointDeviceError(f"map_location={exc}", path) from None
        if problem:
            raise CheckpointDeviceError(f"map_location {problem}; the file was not read (use "
                                        "map_location='cpu')", path)
    if path.stat().st_size == 0:
        raise CorruptCheckpointError("file is empty (0 bytes)", path)


def read_checkpoint(path: PathLike, *, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """Load a checkpoint file safely (``weights_only=True``), with errors that name the path.

    Raises a :class:`CheckpointError` subclass for a missing path, a directory, an empty,
    truncated or random file, a file that needs globals the safe loader refuses, and a
    ``map_location`` this machine cannot honour.
    """
    path = Path(path)
    _check_path(path, map_location)
    if is_safetensors(path):
        return _read_safetensors(path, map_location)
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != _ZIP_MAGIC:
        if magic[:1] == b"\x80":
            raise CheckpointFormatError("a raw pickle, not a torch.save archive; it is not "
                                        "unpickled, because a pickle can run code. Re-save it "
                                        "with torch.save from a trusted process", path)
        raise CorruptCheckpointError(f"not a torch.save archive (starts with {magic!r}, expected "
                                     "a zip file); the file is corrupt or of another format", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as exc:  # noqa: BLE001 - translated into a precise error below
        raise _load_error(exc, path) from exc


def _load_error(exc: Exception, path: Path) -> CheckpointError:
    text = str(exc)
    if "Weights only load failed" in text:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # noqa: BLE001
            names = re.findall(r"GLOBAL ([\w.]+)", text)
        return UnsafeCheckpointError(
            "needs Python globals that weights_only=True refuses to import: "
            f"{', '.join(names) or 'unknown globals'}. Nothing was executed. If you trust where "
            "this file came from, allow exactly those with `with torch.serialization."
            "safe_globals([...]):` around the load (or torch.serialization.add_safe_globals)",
            path, names)
    if "CUDA device" in text or "torch.cuda.is_available() is False" in text:
        return CheckpointDeviceError("holds CUDA tensors and this machine has no CUDA GPU; load "
                                     "it with map_location='cpu'", path)
    first = text.splitlines()[0][:160] if text else "no detail"
    if isinstance(exc, (EOFError, RuntimeError, OSError)) or "zip" in text.lower():
        return CorruptCheckpointError(f"truncated or corrupt torch.save archive "
                                      f"({type(exc).__name__}: {first})", path)
    return CorruptCheckpointError(f"could not be read ({type(exc).__name__}: {first})", path)


def _read_safetensors(path: Path, map_location: Any) -> dict[str, Any]:
    try:
        from safetensors import safe_open
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise CheckpointFormatError(f"reading .safetensors needs safetensors {_INSTALL}",
                                    path) from exc
    device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
    try:
        with safe_open(str(path), framework="pt", device=device) as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - not a dict
            meta = fh.metadata() or {}
        ours = json.loads(meta["compile_ckpt"]) if "compile_ckpt" in meta else None
    except Exception as exc:  # noqa: BLE001 - safetensors and json raise their own error types
        raise CorruptCheckpointError(f"not a readable safetensors file ({type(exc).__name__}: "
                                     f"{str(exc)[:160]})", path) from exc
    marks = {"compile_ckpt", "compile_ckpt_version", "compile_ckpt_sha256"} & set(meta)
    if not marks:  # written by another tool: its header entries are the metadata
        return {"model_state_dict": tensors, "metadata": dict(meta)}
    if (len(marks) != 3 or meta["compile_ckpt_version"] != "2" or not isinstance(ours, dict)
            or not {"metadata", "aliases", "extra_state"} <= set(ours)):
        raise CorruptCheckpointError("its compile_ckpt header entries are damaged or of an "
                                     "unknown version", path)
    for alias, original in ours["aliases"].items():
        if original not in tensors:
            raise CorruptCheckpointError(f"tied tensor {alias!r} points to {original!r}, which "
                                         "is not in the file", path)
    return {**_rebuild(tensors, ours), "sha256": meta["compile_ckpt_sha256"] or None}


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
