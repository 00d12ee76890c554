"""``.pt`` as ``torch.save`` writes it and ``.safetensors`` as ``save_model`` does, read safely
with errors naming the file, written atomically, with nothing of this library's own. Damage is
found by the formats' own readers; neither checksums tensor bytes (a flipped bit there loads)."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import errors as e
from .atomic import atomic_write

_DCP = (" (a torch.distributed.checkpoint folder: load it with dcp.load, or convert it with "
        "torch.distributed.checkpoint.format_utils.dcp_to_torch_save)")


def _first_bytes(path: Path, map_location: Any) -> bytes:
    """The file's first four bytes, or the named error of why it cannot be read here."""
    try:
        cuda = isinstance(map_location, (str, torch.device)) and torch.device(
            map_location).type == "cuda"
    except (RuntimeError, ValueError) as exc:
        raise e.CheckpointDeviceError(f"map_location={map_location!r} is not a device ({exc})",
                                      path) from None
    if cuda and not torch.cuda.is_available():
        raise e.CheckpointDeviceError(f"map_location={str(map_location)!r}, but this machine has "
                                      "no CUDA GPU; the file was not read", path)
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise e.CheckpointNotFoundError("is a directory, not a checkpoint file"
                                            + _DCP * (path / ".metadata").exists(), path)
        if not stat.S_ISREG(st.st_mode):  # opening a FIFO to read would wait forever
            raise e.CheckpointReadError("is a FIFO, device or socket, not a checkpoint file; it "
                                        "was not opened", path)
        if st.st_size == 0:
            raise e.CorruptCheckpointError("file is empty (0 bytes)", path)
        with open(path, "rb") as fh:
            return fh.read(4)
    except e.CheckpointError:
        raise
    except (FileNotFoundError, NotADirectoryError) as exc:
        where = " (a folder in its path is a file)" * isinstance(exc, NotADirectoryError)
        raise e.CheckpointNotFoundError(f"no such file{where}", path) from None
    except OSError as exc:  # permissions, a symlink loop, an I/O error: the file may be fine
        raise e.CheckpointReadError(f"cannot be read ({exc.strerror or exc}); the file itself "
                                    "may be fine", path) from None


def read_checkpoint(path: e.PathLike, *, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """What ``torch.load(path, weights_only=True)`` returns (the tensors, for ``.safetensors``),
    or a :class:`~compile_ckpt.CheckpointError` naming the file and the cause: missing, a
    directory, unreadable, empty, damaged or not a checkpoint, needing globals a safe load
    refuses (listed; nothing is run), or a ``map_location`` this machine cannot honour."""
    path = Path(path)
    magic = _first_bytes(path, map_location)
    if path.suffix == ".safetensors":
        device = str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu"
        try:
            with _safetensors().safe_open(str(path), framework="pt", device=device) as fh:
                return {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
        except e.UnsupportedContentError as exc:
            raise e.CheckpointFormatError(exc.message, path) from None
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types
            raise e.CorruptCheckpointError(f"is not a readable safetensors file ("
                                           f"{type(exc).__name__}: {str(exc)[:160]})",
                                           path) from exc
    try:  # the legacy (pre-zip) format too, read whole: it cannot be memory-mapped
        return torch.load(path, map_location=map_location, weights_only=True,
                          mmap=mmap and magic == b"PK\x03\x04")
    except Exception as exc:  # noqa: BLE001 - translated into a named error below
        raise _load_error(exc, path, magic) from exc


def _load_error(exc: Exception, path: Path, magic: bytes) -> e.CheckpointError:
    text = str(exc)
    if "Weights only load failed" in text:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        except Exception:  # noqa: BLE001 - not a zip archive: a raw pickle, or the legacy format
            names = list(dict.fromkeys(re.findall(r"GLOBAL ([\w.]+)", text)))
        if names:
            unsafe = e.UnsafeCheckpointError(
                f"needs Python globals that weights_only=True refuses to import: "
                f"{', '.join(names)}. Nothing was executed. If you trust where this file came "
                "from, allow exactly those with `with torch.serialization.safe_globals([...]):` "
                "around the load", path)
            unsafe.globals = names
            return unsafe
        if magic[:1] == b"\x80":  # a pickle (protocol 2 or newer), but not torch.save's
            return e.CheckpointFormatError("is a pickle that torch.save did not write; it was "
                                           "not unpickled, because a pickle can run code. "
                                           "Re-save it with torch.save from a trusted process",
                                           path)
    if "torch.cuda.is_available() is False" in text:
        return e.CheckpointDeviceError("holds CUDA tensors and this machine has no CUDA GPU; "
                                       "load it with map_location='cpu'", path)
    if isinstance(exc, OSError) and exc.errno is not None:
        return e.CheckpointReadError(f"cannot be read ({exc.strerror or exc}); the file itself "
                                     "may be fine", path)
    return e.CorruptCheckpointError(f"is truncated, damaged or not a torch.save file ("
                                    f"{type(exc).__name__}: {(text.splitlines() or [''])[0][:160]}"
                                    ")", path)


def _safetensors() -> Any:
    try:
        import safetensors.torch
    except ImportError as exc:
        raise e.UnsupportedContentError(".safetensors files need safetensors (pip install "
                                        "safetensors)") from exc
    return safetensors


def write_safetensors(path: Path, state: Mapping[str, Any], metadata: Mapping[str, str]) -> None:
    """What ``safetensors.torch.save_model`` writes, from a state dict; or refuse, naming why."""
    st = _safetensors().torch
    for key, v in state.items():
        if not isinstance(v, torch.Tensor) or v.layout != torch.strided or v.is_quantized:
            what = (f"a {type(v).__name__}, not a tensor" if not isinstance(v, torch.Tensor)
                    else "a sparse or quantized tensor")
            raise e.UnsupportedContentError(f"{key!r} is {what}; safetensors holds dense tensors "
                                            "only: save a .pt file", path)
    try:  # safetensors' own checks, on empty tensors of the same dtypes; then its ties rule
        st.save({k: torch.empty(0, dtype=v.dtype) for k, v in state.items()})
        tensors, meta = dict(state), dict(metadata)
        for kept, names in st._remove_duplicate_names(tensors).items():
            meta.update({n: meta.get(n, kept) for n in names})
            for name in names:
                del tensors[name]
    except Exception as exc:  # noqa: BLE001 - a dtype it lacks, memory shared by partial views
        raise e.UnsupportedContentError(f"safetensors cannot store it ({type(exc).__name__}: "
                                        f"{str(exc).strip().splitlines()[0][:200]}); save a .pt "
                                        "file", path) from None
    tensors = {k: v.resolve_conj().resolve_neg().contiguous() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: st.save_file(tensors, str(tmp), metadata=meta))
