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
    """SHA-256 of a tensor's values (dtype and shape are part of what is hashed; a sparse
    tensor's layout, indices and values, a quantized one's scheme, scales and integers)."""
    t = t.detach()
    head = f"{t.dtype}{tuple(t.shape)}"
    parts = [t]
    if t.layout != torch.strided:
        head += str(t.layout)
        parts = _sparse_parts(t)
    elif t.is_quantized:
        qscheme = t.qscheme()
        if qscheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            head += f"{qscheme}{t.q_scale()!r}{t.q_zero_point()}"
            parts = [t.int_repr()]
        else:
            head += f"{qscheme}{t.q_per_channel_axis()}"
            parts = [t.int_repr(), t.q_per_channel_scales(), t.q_per_channel_zero_points()]
    h = hashlib.sha256(head.encode())
    for part in parts:
        _update(h, part)
    return h.hexdigest()


def _sparse_parts(t: torch.Tensor) -> list[torch.Tensor]:
    if t.layout == torch.sparse_coo:
        return [t._indices(), t._values()]
    if t.layout in (torch.sparse_csr, torch.sparse_bsr):
        return [t.crow_indices(), t.col_indices(), t.values()]
    return [t.ccol_indices(), t.row_indices(), t.values()]


def _update(h: Any, t: torch.Tensor) -> None:
    """Feed a strided tensor's values to ``h``: a zero-copy view of its memory (no numpy)."""
    t = t.cpu().resolve_conj().resolve_neg().contiguous()
    n = t.numel() * t.element_size()
    if n:
        h.update(memoryview((ctypes.c_char * n).from_address(t.data_ptr())))


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
