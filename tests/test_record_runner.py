"""record/read_records and the papermill runner's own rules."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest

from compile_ckpt.record import MIME, read_records, record, to_jsonable
from compile_ckpt.runner import NotebookRun, parameters_cell, run_notebook, write_index_html, write_summary


def _nb(tmp_path, params_src: str, body: str):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params_src)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# t"), p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    return path


def test_to_jsonable_handles_frames_and_scalars():
    import numpy as np
    import torch

    df = pd.DataFrame({"a": [1, 2], "b": [0.5, float("nan")]})
    assert to_jsonable(df)[0] == {"a": 1, "b": 0.5}
    assert to_jsonable(np.float32(1.5)) == 1.5 and to_jsonable(torch.tensor([1, 2])) == [1, 2]
    with pytest.raises(TypeError):
        record("bad", object())


def test_read_records_last_value_wins():
    nb = {"cells": [{"outputs": [{"data": {MIME: {"name": "x", "value": 1}}}]},
                    {"outputs": [{"data": {MIME: {"name": "x", "value": 2}, "text/plain": "x"}}]}]}
    assert read_records(nb) == {"x": 2}


def test_parameters_cell_must_be_literal(tmp_path):
    assert parameters_cell(_nb(tmp_path, "a = 1\nb = 'x'", "")) == {"a": 1, "b": "x"}
    with pytest.raises(ValueError, match="not a literal"):
        parameters_cell(_nb(tmp_path, "a = len('x')", ""))


def test_run_notebook_records_and_refuses_unknown_parameters(tmp_path):
    path = _nb(tmp_path, "n = 1", "from compile_ckpt.record import record\nrecord('double', n * 2)")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['m'\]"):
        run_notebook(path, tmp_path / "out.ipynb", {"m": 3})
    run = run_notebook(path, tmp_path / "out.ipynb", {"n": 21}, timeout=120)
    assert run.status == "ok" and run.records == {"double": 42}


def test_write_summary(tmp_path):
    runs = [NotebookRun("00_a", str(tmp_path / "00_a.ipynb"), "ok", 1.5, {"x": 0.123456, "big": list(range(99))}),
            NotebookRun("01_b", str(tmp_path / "01_b.ipynb"), "failed", 2.0, {}, "boom")]
    md, js = write_summary(runs, tmp_path)
    text = md.read_text()
    assert "| [00_a](00_a.ipynb) | ok | 1.5 | x=0.1235 |" in text and "boom" in text
    assert json.loads(js.read_text())[0]["records"]["big"][-1] == 98


def test_index_html_links_each_executed_notebook(tmp_path):
    path = _nb(tmp_path, "n = 1", "from compile_ckpt.record import record\nrecord('answer', 42)")
    run = run_notebook(path, tmp_path / "run" / "t.ipynb", {}, timeout=120)
    index = write_index_html([run], tmp_path / "run")
    text = index.read_text()
    assert '<a href="t.html">t</a>' in text and "answer = 42" in text
    assert "recorded answer = 42" in (tmp_path / "run" / "t.html").read_text()  # the notebook, with outputs


def test_make_run_backend_puts_figures_in_the_notebook(tmp_path, monkeypatch):
    """make run executes with the inline backend, so plots are saved as PNG outputs."""
    from compile_ckpt.runner import INLINE_BACKEND

    monkeypatch.setenv("MPLBACKEND", INLINE_BACKEND)
    path = _nb(tmp_path, "n = 3", "import matplotlib.pyplot as plt\nplt.plot(range(n))\nplt.show()")
    run = run_notebook(path, tmp_path / "out.ipynb", {}, timeout=120)
    outputs = [o for c in json.loads((tmp_path / "out.ipynb").read_text())["cells"] for o in c.get("outputs", [])]
    assert run.status == "ok" and any("image/png" in o.get("data", {}) for o in outputs)
