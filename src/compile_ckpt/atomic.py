"""Atomic writes: a temporary file beside the target, fsynced, moved in by ``os.replace``. A new
file gets ``torch.save``'s mode (the umask is never changed), an old one keeps its own; only this
call's temporary file is deleted (a killed save can leave ``.<name>.<hex>.tmp``: delete it)."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from .errors import CheckpointError, CheckpointWriteError, PathLike


def atomic_write(path: PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)``, then ``tmp`` onto ``path`` (through a symlink) in one step; a failed write or
    a path that is not a regular file: :class:`CheckpointWriteError`, the old file unchanged."""
    path, tmp = Path(path), None
    try:
        target = Path(os.path.realpath(path))
        try:
            mode: int | None = os.stat(target).st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None and not stat.S_ISREG(mode):
            kind = "directory" if stat.S_ISDIR(mode) else "FIFO, device or socket"
            raise CheckpointWriteError(f"is a {kind}, not a regular file; nothing written", path)
        target.parent.mkdir(parents=True, exist_ok=True)
        stem = os.fsencode(target.name)[:200].decode("utf-8", "ignore")  # fits 255-byte names
        tmp = target.with_name(f".{stem}.{secrets.token_hex(8)}.tmp")
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies
        mode = stat.S_IMODE(os.stat(tmp if mode is None else target).st_mode)
        write(tmp)  # a writer may replace the file (safetensors makes its own, 0o600)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
        with contextlib.suppress(OSError):  # the rename made durable, where a folder opens
            folder = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch, safetensors and the OS raise their own
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else (
            f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}")
        raise CheckpointWriteError(f"could not be written ({why}); the previous file, if any, is "
                                   "unchanged", path) from exc
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path
