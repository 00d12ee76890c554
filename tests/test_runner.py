"""record/read_records, and the runner's rules: parameters, exit codes, a summary that tells
the truth, and a kernel that leaves the caller's environment as it was."""

from __future__ import annotations

import json
import os
import sys

import nbformat
import pandas as pd
import pytest

from compile_ckpt.workshop.record import MIME, TAG, read_records, record, to_jsonable
from compile_ckpt.workshop.runner import (
    SCHEMA,
    RunnerError,
    main,
    parameters_cell,
    plan,
    run_notebook,
)


def notebook(folder, name="00_t", params="n: int = 1  # a number", body="", tagged=True):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params)
    if tagged:
        p.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# t: what you will learn"),
        p,
        nbformat.v4.new_code_cell(body),
    ]
    nb.metadata["kernelspec"] = {
        "name": "compile-ckpt",
        "display_name": "Python (compile-ckpt)",
        "language": "python",
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


RECORD = "from compile_ckpt.workshop.record import record\n"


def test_to_jsonable_handles_frames_and_scalars():
    import numpy as np
    import torch

    df = pd.DataFrame({"a": [1, 2], "b": [0.5, float("nan")]})
    assert to_jsonable(df)[0] == {"a": 1, "b": 0.5}
    assert to_jsonable(np.float32(1.5)) == 1.5 and to_jsonable(torch.tensor([1, 2])) == [1, 2]
    with pytest.raises(TypeError):
        record("bad", object())


def test_read_records_last_value_wins():
    nb = {
        "cells": [
            {"outputs": [{"data": {MIME: {"name": "x", "value": 1}}}]},
            {"outputs": [{"data": {MIME: {"name": "x", "value": 2}, "text/plain": ""}}]},
        ]
    }
    assert read_records(nb) == {"x": 2}


def test_parameters_must_be_typed_literals(tmp_path):
    assert parameters_cell(notebook(tmp_path, params="a: int = 1  # help\nb: str = 'x'")) == {
        "a": (1, "int"),
        "b": ("x", "str"),
    }
    with pytest.raises(ValueError, match="write `name: type = literal`"):
        parameters_cell(notebook(tmp_path, params="a = 1"))
    with pytest.raises(ValueError, match="not a literal"):
        parameters_cell(notebook(tmp_path, params="a: int = len('x')"))
    with pytest.raises(ValueError, match="expected one cell tagged 'parameters'"):
        parameters_cell(notebook(tmp_path, tagged=False))


def test_plan_merges_files_and_overrides_and_refuses_what_goes_nowhere(tmp_path):
    a = notebook(tmp_path, "00_a", "n: int = 1\nname: str = 'x'")
    b = notebook(tmp_path, "01_b", "n: int = 1\nrate: float = 0.5")
    files = {"all": {"n": 2}, "01": {"n": 3}, "01_b": {"rate": 1}}
    assert plan([a, b], files, {"name": "y"}) == [
        (a, {"n": 2, "name": "y"}, ""),
        (b, {"n": 3, "rate": 1}, ""),
    ]
    with pytest.raises(RunnerError, match="-p nope: no selected notebook defines it"):
        plan([a, b], {}, {"nope": 1})
    with pytest.raises(RunnerError, match="do not exist: \\['99'\\]"):
        plan([a], {"99": {"n": 1}}, {})
    with pytest.raises(RunnerError, match="'n' must be int, got 'three'"):
        plan([a], {}, {"n": "three"})
    # entries for others are fine
    assert plan([a], {"01_b": {"rate": 2.0}}, {}, every=[a, b]) == [
        (a, {}, "")
    ]


@pytest.mark.slow
def test_run_notebook_records_silently_and_refuses_unknown_parameters(tmp_path):
    path = notebook(
        tmp_path, body=RECORD + "record('double', n * 2)\nimport sys\nprint(sys.executable)"
    )
    with pytest.raises(RunnerError, match=r"unknown parameter\(s\) \['m'\]"):
        run_notebook(path, tmp_path / "out.ipynb", {"m": 3})
    run = run_notebook(path, tmp_path / "out.ipynb", {"n": 21}, timeout=120)
    assert run.status == "ok" and run.records == {"double": 42}
    outputs = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[-1].outputs
    shown = [o for o in outputs if MIME in o.get("data", {})]
    # nothing for the learner to read
    assert shown and all(
        o["data"]["text/plain"] == "" for o in shown
    )
    # the kernel is this interpreter
    assert sys.executable in "".join(
        o.get("text", "") for o in outputs
    )


@pytest.mark.slow
def test_main_runs_the_rest_reports_the_truth_and_writes_a_schema(tmp_path, capsys):
    folder = tmp_path / "nbs"
    notebook(folder, "00_ok", body=RECORD + "record('n', n)")
    exits = notebook(folder, "01_exits", body="import sys\nsys.exit(0)")
    nb = nbformat.read(exits, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("print('never')"))
    nbformat.write(nb, exits)
    notebook(folder, "02_broken", tagged=False)
    notebook(folder, "03_ok", body=RECORD + "record('n', n)\nimport os\n"
             "record('workdir', os.environ['COMPILE_CKPT_WORKDIR'])\n"
             "record('backend', os.environ['MPLBACKEND'])")
    out = tmp_path / "run"
    environment = dict(os.environ)
    code = main(["--notebooks", str(folder), "--out", str(out), "-p", "n", "5"])
    # The kernels got the work folder and the inline backend; this process kept its own
    # environment (before, COMPILE_CKPT_WORKDIR and MPLBACKEND were set here and left).
    assert dict(os.environ) == environment
    report = capsys.readouterr().out.rsplit("Report: ", 1)[1].strip()
    assert report == str(out / "index.html") and (out / "index.html").exists()  # said, and there
    summary = json.loads((out / "summary.json").read_text())
    assert code == 1 and summary["schema"] == SCHEMA
    rows = {r["name"]: r for r in summary["notebooks"]}
    assert rows["00_ok"]["status"] == "ok" and rows["00_ok"]["records"] == {"n": 5}
    assert (
        rows["01_exits"]["status"] == "stopped early" and "never ran" in rows["01_exits"]["error"]
    )
    assert (
        rows["02_broken"]["status"] == "failed"
        and "expected one cell tagged 'parameters'" in rows["02_broken"]["error"]
    )
    # the ones after still ran
    assert (
        rows["03_ok"]["status"] == "ok" and rows["03_ok"]["output"] == "03_ok.ipynb"
    )
    assert summary["parameters"]["overrides"] == {"n": "5"} and summary["versions"]["torch"]
    assert {"started_utc", "finished_utc", "git_commit", "device"} <= set(summary)
    assert '<a href="00_ok.html">00_ok</a>' in (out / "index.html").read_text()
    assert rows["03_ok"]["records"] == {"n": 5, "workdir": str(out / "artifacts"),
                                        "backend": "module://matplotlib_inline.backend_inline"}
    assert (
        "| 02_broken" in (out / "summary.md").read_text()
        or "02_broken" in (out / "summary.md").read_text()
    )


def test_main_exit_codes_for_what_cannot_run(tmp_path, capsys):
    folder = tmp_path / "nbs"
    notebook(folder, "00_ok")
    assert main(["--notebooks", str(folder), "--only", "99"]) == 2
    err = capsys.readouterr().err
    assert "no notebook matches ['99']" in err and "there are ['00_ok']" in err
    assert main(["--notebooks", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    if os.geteuid() != 0:  # root can write anywhere
        readonly = tmp_path / "ro"
        readonly.mkdir(mode=0o500)
        assert main(["--notebooks", str(folder), "--out", str(readonly / "x")]) == 2
    (tmp_path / "afile").write_text("")
    assert main(["--notebooks", str(folder), "--out", str(tmp_path / "afile" / "x")]) == 2
    assert "cannot write the output folder" in capsys.readouterr().err


@pytest.mark.slow
def test_the_runner_takes_the_smoke_parameter_file(tmp_path):
    from conftest import ROOT

    out = tmp_path / "run"
    code = main(
        [
            "--notebooks",
            str(ROOT / "notebooks"),
            "--out",
            str(out),
            "--only",
            "01",
            "-f",
            str(ROOT / "notebooks" / "params" / "smoke.yaml"),
            "-p",
            "compile_backend",
            "eager",
        ]
    )
    [row] = json.loads((out / "summary.json").read_text())["notebooks"]
    assert code == 0 and row["status"] == "ok"
    assert row["parameters"] == {"epochs": 1, "pretrain_samples": 256, "compile_backend": "eager"}
    assert (
        row["records"]["fresh_load_missing"] == 12
        and (out / "01_reproduce_the_failure.html").exists()
    )


def test_papermill_shows_every_parameter_with_its_type_and_help():
    """What `papermill --help-notebook` prints: papermill's inspection of the parameters cell."""
    import papermill as pm

    from compile_ckpt.workshop.runner import notebooks_in
    from conftest import ROOT

    for nb in notebooks_in(ROOT / "notebooks"):
        inferred = pm.inspect_notebook(str(nb))
        for name, (_, kind) in parameters_cell(nb).items():
            assert inferred[name]["inferred_type_name"] == kind and inferred[name]["help"], (
                f"{nb.name}: {name}"
            )


def test_html_pages_leave_out_the_record_cells(tmp_path):
    """The lesson's page shows the lesson: the trailing cells tagged ``record`` are not on it."""
    folder = tmp_path / "nbs"
    path = notebook(folder, "00_page", body="print('the lesson ' + str(n))")
    nb = nbformat.read(path, as_version=4)
    hidden = nbformat.v4.new_code_cell(
        RECORD.replace("record\n", "record_all\n") + "record_all(secret_value=n)"
    )
    hidden.metadata.update(tags=[TAG], jupyter={"source_hidden": True})
    heading = nbformat.v4.new_markdown_cell("Recorded for the automated checks")
    heading.metadata["tags"] = [TAG]
    nb.cells += [heading, hidden]
    nbformat.write(nb, path)
    assert main(["--notebooks", str(folder), "--out", str(tmp_path / "run")]) == 0
    page = (tmp_path / "run" / "00_page.html").read_text()
    assert (
        "the lesson 1" in page
        and "record_all" not in page
        and "Recorded for the automated" not in page
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["notebooks"][0]["records"] == {"secret_value": 1}
