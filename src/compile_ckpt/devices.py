"""Whether this machine has a device: the one check the loader and the workshop share."""

from __future__ import annotations

import torch


def device_problem(device: str | torch.device) -> str | None:
    """Why ``device`` cannot be used on this machine, or None when it can. Raises
    ``ValueError`` for a string that names no device at all."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{str(device)!r} is not a device ({exc})") from None
    if dev.type != "cuda":
        return None
    if not torch.cuda.is_available():
        return (f"{str(device)!r} was asked for, but this machine has no CUDA GPU (torch "
                f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'})")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        return f"{str(device)!r} was asked for, but this machine has {n} GPU(s)"
    return None
