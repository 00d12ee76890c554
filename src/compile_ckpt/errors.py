"""Every way a checkpoint operation fails, as one family of exceptions that name the file."""

from __future__ import annotations

import os
from collections.abc import Iterable

from .keys import KeyCollisionError

PathLike = str | os.PathLike[str]


class CheckpointError(Exception):
    """Base class: something is wrong with a checkpoint. ``path`` names the file."""

    def __init__(self, message: str, path: PathLike | None = None) -> None:
        self.path = None if path is None else str(path)
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:  # OSError subclasses would otherwise format errno-style
        return f"{self.path}: {self.message}" if self.path else self.message


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path does not exist, or is a directory rather than a checkpoint file."""


class CheckpointReadError(CheckpointError, OSError):
    """The file exists but cannot be opened or read (permissions, a symlink loop, an I/O error):
    the file itself may be fine, so it is never called corrupt."""


class CorruptCheckpointError(CheckpointError):
    """The file is empty, truncated or not a checkpoint at all."""


class ChecksumMismatchError(CorruptCheckpointError):
    """The content differs from the SHA-256 that was stored when the file was saved."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs Python globals that ``weights_only=True`` refuses to import."""

    def __init__(self, message: str, path: PathLike | None = None,
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
    """Nothing was written: the path is not a regular file, or the write failed (a full disk).
    Whatever was at the path before is unchanged."""


class CheckpointCollisionError(CheckpointError, KeyCollisionError):
    """Two checkpoint keys would land on the same target key."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """Strict loading failed: keys missing, unexpected, or of another shape; or the optimizer
    or scheduler state does not fit. Nothing was copied."""
