"""compile_ckpt: save and load PyTorch checkpoints whatever wraps the model.

The library imports torch and the standard library only, one concern a module, each built
only on those before it:

- :mod:`~compile_ckpt.keys`: wrapper segments in keys and how to take them out (stands alone:
  the file to copy into a trainer);
- :mod:`~compile_ckpt.errors`: every failure, named; :mod:`~compile_ckpt.devices`: whether a
  device is here;
- :mod:`~compile_ckpt.integrity`: checksums; :mod:`~compile_ckpt.atomic`: atomic writes;
  :mod:`~compile_ckpt.snapshot`: a file read as one snapshot;
- :mod:`~compile_ckpt.formats`: ``.pt`` and ``.safetensors``; :mod:`~compile_ckpt.layout`:
  where state dicts, optimizer and scheduler state sit in a file;
- :mod:`~compile_ckpt.resume`: optimizer and scheduler state checked before it is loaded;
- :mod:`~compile_ckpt.report`, :mod:`~compile_ckpt.save`, :mod:`~compile_ckpt.load`: the entry
  points; :mod:`~compile_ckpt.cli`: ``compile-ckpt``.

Importing this package never imports the workshop (:mod:`compile_ckpt.workshop`, the
notebooks' helpers, which need the ``workshop`` extra).
"""

import warnings

with warnings.catch_warnings():  # scoped: the caller's warning filters are left as they were
    # torch warns at import when NumPy is missing; this library never uses NumPy, and a
    # torch-only install (its one dependency) has none: the warning would only alarm
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
    import torch  # noqa: F401

from .atomic import atomic_write
from .errors import (
    CheckpointCollisionError,
    CheckpointDeviceError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CheckpointReadError,
    CheckpointWriteError,
    ChecksumMismatchError,
    CorruptCheckpointError,
    UnsafeCheckpointError,
    UnsupportedContentError,
)
from .formats import FORMAT, read_checkpoint
from .keys import (
    WRAPPER_SEGMENTS,
    KeyCollisionError,
    Rename,
    canonical_fqn,
    clean_state_dict,
    unwrap_model,
    wrapper_paths,
)
from .layout import find_state_dicts
from .load import from_checkpoint, load_checkpoint
from .report import LoadReport
from .save import save_checkpoint

__version__ = "0.2.0"
#: The documented API (README, "The library's API"); everything else is reached by its module.
__all__ = [
    "FORMAT",
    "WRAPPER_SEGMENTS",
    "CheckpointCollisionError",
    "CheckpointDeviceError",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointReadError",
    "CheckpointWriteError",
    "ChecksumMismatchError",
    "CorruptCheckpointError",
    "KeyCollisionError",
    "LoadReport",
    "Rename",
    "UnsafeCheckpointError",
    "UnsupportedContentError",
    "atomic_write",
    "canonical_fqn",
    "clean_state_dict",
    "find_state_dicts",
    "from_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "unwrap_model",
    "wrapper_paths",
]
