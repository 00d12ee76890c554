"""compile_ckpt: learn, reproduce and fix how torch.compile interacts with checkpoints.

The core is :mod:`compile_ckpt.checkpoint` (torch and the standard library only); the rest
of the package (model, data, training, bench, plots) builds on it for the notebooks.
"""

from .checkpoint import (
    FORMAT,
    WRAPPER_SEGMENTS,
    CheckpointCollisionError,
    CheckpointError,
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    LoadReport,
    Rename,
    UnsafeCheckpointError,
    canonical_fqn,
    clean_state_dict,
    extract_model_state_dict,
    from_checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    unwrap_model,
    wrapper_paths,
)

__version__ = "0.1.0"

__all__ = [
    "FORMAT",
    "WRAPPER_SEGMENTS",
    "CheckpointCollisionError",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "LoadReport",
    "Rename",
    "UnsafeCheckpointError",
    "__version__",
    "canonical_fqn",
    "clean_state_dict",
    "extract_model_state_dict",
    "from_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
    "unwrap_model",
    "wrapper_paths",
]
