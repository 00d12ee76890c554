"""compile_ckpt: save and load PyTorch checkpoints whatever wraps the model. Torch alone, one
concern a module, each built on those before it (``keys`` stands alone: copy it into a trainer);
importing it never imports the workshop."""

import warnings

with warnings.catch_warnings():  # scoped: the caller's warning filters are left as they were
    # torch warns at import when NumPy is missing; this library never uses NumPy, and a
    # torch-only install (its one dependency) has none: the warning would only alarm
    warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)
    import torch  # noqa: F401

from . import errors, keys
from .atomic import atomic_write
from .errors import *  # noqa: F403 - every error class, as errors.__all__ names them
from .formats import read_checkpoint
from .keys import *  # noqa: F403 - as keys.__all__ names them
from .layout import find_state_dicts
from .load import LoadReport, from_checkpoint, load_checkpoint
from .save import save_checkpoint

__version__ = "0.3.0"
#: The documented API (docs/library.md); everything else is reached by its module.
__all__ = [*errors.__all__, *keys.__all__, "LoadReport", "atomic_write", "find_state_dicts",
           "from_checkpoint", "load_checkpoint", "read_checkpoint", "save_checkpoint"]
