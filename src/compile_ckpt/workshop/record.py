"""Named results that a notebook records in its own output, and a reader for them.

``record("final_loss", 0.12)`` adds an output that carries the value as JSON under a custom
MIME type and shows nothing to the reader. The executed ``.ipynb`` then holds the value, and
``read_records(path)`` returns every recorded value by name, last one winning. Outside
IPython (notebook 06 run as plain Python by ``scripts/gpu_run.py``) values go to
:data:`RECORDED` instead.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MIME = "application/vnd.compile-ckpt.record+json"
#: The tag of a notebook's trailing cells that record values for the tests: collapsed in
#: JupyterLab, left out of the runner's HTML pages, kept out of the lesson cells.
TAG = "record"
#: Values recorded in this process when there is no IPython kernel to display them.
RECORDED: dict[str, Any] = {}


def to_jsonable(value: Any) -> Any:
    """Convert numpy, pandas and torch scalars/tables into plain JSON values."""
    if hasattr(value, "to_dict") and hasattr(value, "columns"):  # pandas DataFrame
        return [to_jsonable(r) for r in value.to_dict(orient="records")]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy / torch
        return to_jsonable(value.tolist())
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        return to_jsonable(value.item())
    return value


def record(name: str, value: Any) -> None:
    """Store ``value`` under ``name`` in this notebook's output (as JSON), silently.

    Raises ``TypeError`` if the value cannot be written as JSON.
    """
    plain = to_jsonable(value)
    json.dumps(plain)  # fail here, in the notebook, not later in the reader
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None  # noqa: N806 - plain Python: no kernel
    if get_ipython is None or get_ipython() is None:
        RECORDED[name] = plain
        return
    display({MIME: {"name": name, "value": plain}, "text/plain": ""}, raw=True)


def record_all(**values: Any) -> None:
    """``record(name, value)`` for each keyword: a notebook's one trailing recording cell."""
    for name, value in values.items():
        record(name, value)


def read_records(notebook: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Every value recorded in an executed notebook (a path or a loaded notebook dict)."""
    if isinstance(notebook, Mapping):
        nb = notebook
    else:
        with open(notebook, encoding="utf-8") as fh:
            nb = json.load(fh)
    found: dict[str, Any] = {}
    for cell in nb.get("cells", []):
        for out in cell.get("outputs", []) or []:
            data = out.get("data") or {}
            if MIME in data:
                payload = data[MIME]
                if isinstance(payload, str):
                    payload = json.loads(payload)
                found[payload["name"]] = payload["value"]
    return found
