"""Checksums: the SHA-256 of each tensor and of a checkpoint's whole content, and their check.

Torch does not check its zip CRCs, so a flipped byte in a tensor, in metadata or in optimizer
state would otherwise load silently.
"""

from __future__ import annotations

import ctypes
import hashlib
from collections.abc import Mapping
from typing import Any

import torch

from .errors import ChecksumMismatchError


def tensor_checksum(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes (dtype and shape are part of what is hashed)."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    n = t.numel() * t.element_size()
    if n:  # a zero-copy view of the tensor's memory: no numpy needed
        h.update(memoryview((ctypes.c_char * n).from_address(t.data_ptr())))
    return h.hexdigest()


def content_digest(obj: Any, known: Mapping[int, str] | None = None) -> str:
    """SHA-256 of a checkpoint's whole content: every tensor (by :func:`tensor_checksum`;
    ``known`` maps ``id(tensor)`` to one already computed), key, number and string, in a
    canonical order."""
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


def verify_content(obj: Mapping[str, Any], state: Mapping[str, Any], origin: str | None,
                   prefix: str = "") -> bool:
    """Check a loaded file's ``sha256`` entry; say whether it had one. On a mismatch the
    per-tensor ``checksums`` name the tensors of ``state`` that changed, if any did."""
    digest = obj.get("sha256")
    if not digest:
        return False
    if content_digest({k: v for k, v in obj.items() if k != "sha256"}) == digest:
        return True
    sums = obj.get("checksums") if isinstance(obj.get("checksums"), Mapping) else {}
    bad = [k for k, v in state.items()
           if isinstance(v, torch.Tensor) and tensor_checksum(v) != sums.get(prefix + k)]
    where = (f"tensor(s) {', '.join(bad[:5])}" if bad
             else "its metadata, optimizer or scheduler state, or its keys")
    raise ChecksumMismatchError(f"its content differs from the SHA-256 stored when it was saved "
                                f"({where}): the file was damaged after saving; nothing was "
                                "loaded", origin)
