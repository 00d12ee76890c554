"""Reading a file as one snapshot: it is opened once, and whatever reads it by name (torch's
memory map, safetensors) is given a name that opens that same file. A checkpoint replaced
while it is read (an atomic save next door) gives the old one or the new one, never a mix
of the two and never a false "damaged"."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

from .errors import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointReadError,
    CorruptCheckpointError,
)

T = TypeVar("T")


def _open_error(exc: OSError, path: Path) -> CheckpointError:
    if isinstance(exc, FileNotFoundError):
        return CheckpointNotFoundError("no such file", path)
    if isinstance(exc, IsADirectoryError) or path.is_dir():
        hint = (" (a torch.distributed.checkpoint directory: convert it with torch.distributed."
                "checkpoint.format_utils.dcp_to_torch_save)" if (path / ".metadata").exists()
                else "")
        return CheckpointNotFoundError(f"is a directory, not a checkpoint file{hint}", path)
    if isinstance(exc, NotADirectoryError):
        return CheckpointNotFoundError("no such file (a folder in its path is a file)", path)
    return CheckpointReadError(f"cannot be read ({exc.strerror or exc}); the file itself may be "
                               "fine", path)


class _Replaced(Exception):
    """The path named another file by the end of a read (only where no fd path exists)."""


def _fd_name(fh: BinaryIO, st: os.stat_result) -> str | None:
    """A name that opens the very file ``fh`` has open (Linux's ``/proc/self/fd/N``), so that
    what opens by name (torch's mmap, safetensors) reads this snapshot; None where there is none."""
    name = f"/proc/self/fd/{fh.fileno()}"
    try:
        same = os.stat(name)
    except OSError:
        return None
    return name if (same.st_dev, same.st_ino) == (st.st_dev, st.st_ino) else None


def _replaced(path: Path, st: os.stat_result) -> bool:
    try:
        now = os.stat(path)
    except OSError:
        return True
    return (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)


def _read_snapshot(path: Path, reader: Callable[[BinaryIO, str], T]) -> T:
    """Open ``path`` once and call ``reader(handle, name)``; ``name`` opens that same file.
    Where no such name exists the path is used, and a read during which the path came to name
    another file raises ``_Replaced`` (the caller reads again), never a mix or a false alarm."""
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # opening a FIFO would block
            raise CheckpointReadError("is a FIFO, device or socket, not a checkpoint file; it "
                                      "was not opened", path)
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the read
    except CheckpointError:
        raise
    except OSError as exc:
        raise _open_error(exc, path) from exc
    with fh:
        st = os.fstat(fh.fileno())
        if stat.S_ISDIR(st.st_mode):
            raise _open_error(IsADirectoryError(), path)
        if st.st_size == 0:
            raise CorruptCheckpointError("file is empty (0 bytes)", path)
        name = _fd_name(fh, st)
        try:
            result = reader(fh, name or str(path))
        except CheckpointError:
            if name is None and _replaced(path, st):
                raise _Replaced from None
            raise
        if name is None and _replaced(path, st):
            raise _Replaced
        return result


def read_snapshot(path: Path, reader: Callable[[BinaryIO, str], T], tries: int = 3) -> T:
    """``reader(handle, name)`` on one snapshot of ``path``; read again (up to ``tries``
    times) where the platform has no fd name and the path was replaced during the read."""
    for _ in range(tries):
        with contextlib.suppress(_Replaced):
            return _read_snapshot(path, reader)
    raise CheckpointReadError(f"was replaced while it was being read, {tries} times in a row; "
                              "read it again", path)
