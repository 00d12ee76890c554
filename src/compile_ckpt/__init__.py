"""compile_ckpt: save and load PyTorch checkpoints whatever wraps the model.

The library is :mod:`compile_ckpt.checkpoint` (torch and the standard library only); its
public names are re-exported here, and ``compile-ckpt`` (:mod:`compile_ckpt.cli`) is its
command line. Importing this package never imports the workshop: the notebooks' helpers live
in :mod:`compile_ckpt.workshop`, which needs the ``workshop`` extra.
"""

from . import checkpoint as _checkpoint
from .checkpoint import *  # noqa: F403 - exactly checkpoint.__all__

__version__ = "0.2.0"
__all__ = [*_checkpoint.__all__, "__version__"]
