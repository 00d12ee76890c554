"""Every way a checkpoint operation fails: one family of exceptions that name the file."""

from __future__ import annotations

import os

from .keys import KeyCollisionError

PathLike = str | os.PathLike[str]


class CheckpointError(Exception):
    """Base class: something is wrong with a checkpoint. ``path`` names the file."""

    def __init__(self, message: str, path: PathLike | None = None) -> None:
        self.path, self.message = (None if path is None else str(path)), message
        super().__init__(str(self))

    def __str__(self) -> str:  # OSError subclasses would otherwise format errno-style
        return f"{self.path}: {self.message}" if self.path else self.message


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The path does not exist, or is a directory rather than a checkpoint file."""


class CheckpointReadError(CheckpointError, OSError):
    """The file cannot be read (permissions, a loop, I/O, a FIFO): it may be fine, not corrupt."""


class CorruptCheckpointError(CheckpointError):
    """Empty, truncated or not a checkpoint, as the format's own reader finds it."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs Python globals (listed in ``globals``) that ``weights_only=True`` refuses."""

    globals: list[str] | tuple[()] = ()  # set on each instance; never a shared, mutable list


class CheckpointFormatError(CheckpointError, ValueError):
    """The file loaded, but holds no state dict where one was looked for."""


class UnsupportedContentError(CheckpointFormatError, TypeError):
    """The format cannot hold it, a safe load could not read it back, or the model is sharded."""


class CheckpointDeviceError(CheckpointError, ValueError):
    """``map_location`` names a device this machine does not have (the file may be fine)."""


class CheckpointWriteError(CheckpointError, OSError):
    """Nothing was written (not a regular file, a full disk); what was there is unchanged."""


class CheckpointCollisionError(CheckpointError, KeyCollisionError):
    """Two checkpoint keys would land on one target key, or tied keys disagree."""


class CheckpointMismatchError(CheckpointError, RuntimeError):
    """The checkpoint does not fit the model, optimizer or scheduler. Nothing was loaded."""


__all__ = [n for n in dir() if n.startswith(("Checkpoint", "Corrupt", "Unsafe", "Unsupported"))]
