"""The workshop's helpers: model, data, training loop, benchmark harness, notebook runner,
widgets and exercise checks, built on the library. Importing it needs pandas, tqdm, psutil and
PyYAML (what a GPU image has); the notebooks, the runner and the widgets need the rest of the
``workshop`` extra: ``pip install -e '.[workshop]'`` or ``pip install -r requirements.txt``.
"""

import importlib.util

_NEEDS = ("pandas", "tqdm", "psutil", "yaml")
_missing = [m for m in _NEEDS if importlib.util.find_spec(m) is None]
if _missing:
    raise ImportError(
        f"compile_ckpt.workshop needs {', '.join(_missing)}, which this Python does not have; "
        "install the workshop extra: pip install -e '.[workshop]' (from the repository) or pip "
        "install 'compile-ckpt[workshop]'. The library itself (import compile_ckpt) needs only "
        "torch.")
