"""compile_ckpt: learn, reproduce and fix how torch.compile interacts with checkpoints.

The core is :mod:`compile_ckpt.checkpoint` (torch and the standard library only); its public
names are re-exported here. The rest of the package (model, data, training, bench, plots,
widgets) builds on it for the notebooks.
"""

from . import checkpoint as _checkpoint
from .checkpoint import *  # noqa: F403 - exactly checkpoint.__all__

__version__ = "0.1.0"
__all__ = [*_checkpoint.__all__, "__version__"]
