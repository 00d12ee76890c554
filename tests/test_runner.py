"""record/read_records, and the runner's rules: parameters, exit codes, a summary that tells
the truth, and a kernel that leaves the caller's environment as it was."""

from __future__ import annotations

import json
import os
import re
import sys

import nbformat
import pandas as pd
import pytest
import torch

from compile_ckpt.workshop.record import MIME, TAG, read_records, record, to_jsonable
from compile_ckpt.workshop.runner import (
    SCHEMA,
    RunnerError,
    devices,
    main,
    notebooks_in,
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
GPU = torch.cuda.is_available()


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
        tmp_path, body=RECORD + "record('double', n * 2)\nimport sys\nprint(sys.executable)\n"
        "import os\nfrom ipykernel.kernelapp import IPKernelApp\n"
        "record('transport', IPKernelApp.instance().transport)\n"
        "record('here', sorted(os.listdir('.')))"
    )
    with pytest.raises(RunnerError, match=r"unknown parameter\(s\) 'm'"):
        run_notebook(path, tmp_path / "out.ipynb", {"m": 3})
    run = run_notebook(path, tmp_path / "out.ipynb", {"n": 21}, timeout=120)
    assert run.status == "ok" and run.records["double"] == 42
    # local sockets in a private folder: no TCP (ipykernel warned on every run), and no socket
    # files in the notebook's folder (jupyter_client's default for IPC), where two runs collide
    assert run.records["transport"] == "ipc"
    assert set(run.records["here"]) <= {"00_t.ipynb", "out.ipynb"}
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
    notebook(folder, "04_raises", body="print('before')\nraise ValueError(f'the cause: n is {n}')")
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
    assert "| [02_broken](02_broken.html) | failed: " in (out / "summary.md").read_text()


@pytest.mark.slow
def test_a_failure_is_told_where_a_job_looks(tmp_path, capsys):
    """The console line, summary.md and index.html give the exception, its message and the
    cell; not papermill's banner (before, all three stopped at "Exception encountered at")."""
    folder, out = tmp_path / "nbs", tmp_path / "run"
    notebook(folder, "00_raises", params="device: str = 'auto'  # d\nn: int = 1  # n",
             body="print('before')\nraise ValueError(f'the cause:\\n n is {n} | and more')")
    assert main(["--notebooks", str(folder), "--out", str(out), "-p", "n", "5"]) == 1
    console = capsys.readouterr().out
    executed = nbformat.read(out / "00_raises.ipynb", as_version=4)
    [cell] = [c for c in executed.cells if any(o.get("ename") for o in c.get("outputs", []))]
    [row] = json.loads((out / "summary.json").read_text())["notebooks"]
    assert row["error"] == "ValueError: the cause:\n n is 5 | and more"
    assert row["error_cell"] == cell.execution_count
    said = f"failed in cell [{cell.execution_count}]"
    assert re.search(rf"  failed in [\d.]+s \(0 records\) at cell \[{cell.execution_count}\]: "
                     r"ValueError: the cause: n is 5 \| and more\n", console)
    md = (out / "summary.md").read_text()
    assert f"| {said}: ValueError: the cause: n is 5 \\| and more |" in md
    assert "n is 5 | and more" in md  # the Not ok section has it whole
    page = (out / "index.html").read_text()
    assert f"{said}: ValueError: the cause:\n n is 5 | and more" not in page  # escaped, one line
    assert f"{said}: ValueError: the cause: n is 5 | and more" in page
    for text in (console, md, page):
        assert "PapermillExecutionError" not in text and "Exception encountered" not in text
    assert f"Device asked for: auto; used: {'cuda' if GPU else 'cpu'}." in md and md in console
    assert "Device asked for: auto" in page


def test_the_summary_names_the_device_asked_for_and_the_one_used(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    a = notebook(tmp_path, "00_a", "device: str = 'auto'  # d")
    b = notebook(tmp_path, "01_b", "device: str = 'auto'  # d")
    assert devices(plan([a, b], {}, {})) == ("auto", "cpu")
    asked, used = devices(plan([a, b], {}, {"device": "cuda"}))
    assert asked == "cuda" and used.startswith("none ('cuda' was asked for, but this machine "
                                               "has no CUDA GPU")
    assert devices(plan([a, b], {"01": {"device": "cpu"}}, {})) == ("auto, cpu", "cpu")
    assert devices(plan([notebook(tmp_path, "02_c")], {}, {}))[0].startswith("none")


def test_a_typo_gets_the_closest_name(tmp_path):
    a = notebook(tmp_path, "00_a", "epochs: int = 1\nrate: float = 0.5")
    with pytest.raises(RunnerError, match="-p epoch: no selected notebook defines it "
                                          "\\(did you mean 'epochs'\\?\\)"):
        plan([a], {}, {"epoch": 3})
    with pytest.raises(RunnerError, match="'rat' \\(did you mean 'rate'\\?\\) \\(parameter file"):
        plan([a], {"all": {"rat": 1.0}}, {})
    with pytest.raises(RunnerError, match="unknown parameter\\(s\\) 'rat' \\(did you mean 'rate'"):
        plan([a], {"00_a": {"rat": 1.0}}, {})
    with pytest.raises(RunnerError, match="-p zzz: no selected notebook defines it$"):
        plan([a], {}, {"zzz": 3})
    with pytest.raises(RunnerError, match="-p ate: .* \\(did you mean 'rate'\\?\\)"):
        plan([a], {}, {"ate": 3})  # contained in a name, if none is close


def test_the_documented_example_of_a_typo_is_what_the_runner_says(capsys):
    from conftest import ROOT

    assert main(["--notebooks", str(ROOT / "notebooks"), "-p", "epoch", "3", "--check"]) == 2
    said = " ".join(capsys.readouterr().err.removeprefix("runner: error: ").split())
    assert f"`{said}`" in " ".join((ROOT / "docs" / "automation.md").read_text().split())


def test_check_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    folder, out = tmp_path / "nbs", tmp_path / "run"
    notebook(folder, "00_a")
    assert main(["--notebooks", str(folder), "--out", str(out), "-p", "n", "2", "--check"]) == 0
    said = capsys.readouterr().out
    assert "would run 00_a.ipynb {'n': 2}" in said and "device asked for:" in said
    assert not out.exists()
    assert main(["--notebooks", str(folder), "-p", "m", "2", "--check"]) == 2


def test_every_notebook_takes_the_shared_parameters():
    """One name, one meaning: `-p device cpu` (and each shared name) reaches every notebook
    that the README's table says defines it."""
    from conftest import ROOT

    every = notebooks_in(ROOT / "notebooks")
    todo = plan(every, {}, {"device": "cpu"})
    assert all(params == {"device": "cpu"} for _, params, _ in todo)
    defined = {nb.stem[:2]: parameters_cell(nb) for nb in every}
    section = (ROOT / "README.md").read_text().split("### Parameters the notebooks share")[1]
    rows = [line.split("|")[1:3] for line in section.split("\n#")[0].splitlines()
            if line.startswith("| `")]
    assert len(rows) >= 5
    for names, where in rows:
        listed = sorted(n.strip() for n in where.replace("all", ",".join(defined)).split(","))
        for name in (n.strip(" `") for n in names.split(",")):
            assert listed == sorted(k for k, p in defined.items() if name in p), name


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
    assert row["parameters"] == {
        "pretrain_epochs": 1, "pretrain_samples": 256, "compile_backend": "eager"
    }
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


def test_html_pages_show_the_lesson_as_it_ended(tmp_path):
    """The lesson's page shows the lesson: the trailing cells tagged ``record`` are not on it,
    and a progress bar reads as it ended, not as it began (0%)."""
    folder = tmp_path / "nbs"
    path = notebook(folder, "00_page", body="print('the lesson ' + str(n))\n"
                    "from tqdm.auto import tqdm\nfor _ in tqdm(range(3), desc='steps'):\n    pass")
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
    executed = nbformat.read(tmp_path / "run" / "00_page.ipynb", as_version=4)
    assert "widget-view" in json.dumps(executed.cells[2].outputs)  # the bar was a widget
    assert "steps: 100%|" in page and "3/3" in page and "steps:   0%" not in page
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["notebooks"][0]["records"] == {"secret_value": 1}


# ------------------------------------------------------------- run folders are claims
def test_two_runs_in_the_same_second_never_share_a_folder(tmp_path, monkeypatch):
    import datetime as dt

    from compile_ckpt.workshop.runner import claim_folder

    monkeypatch.chdir(tmp_path)
    same = dt.datetime(2026, 12, 3, 10, 0, 0, tzinfo=dt.UTC)
    first, second = claim_folder(None, same), claim_folder(None, same)
    assert first != second and first.parent == second.parent == (tmp_path / "runs").resolve()


def test_a_second_run_into_a_used_out_is_refused_and_the_first_kept(tmp_path, capsys):
    folder, out = tmp_path / "nbs", tmp_path / "out"
    notebook(folder, "00_ok")
    assert main(["--notebooks", str(folder), "--out", str(out)]) == 0
    kept = (out / "summary.json").read_bytes()
    capsys.readouterr()
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    assert main(["--notebooks", str(folder), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0]
    assert (out / "summary.json").read_bytes() == kept
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before
    assert main(["--notebooks", str(folder), "--out", str(out), "--check"]) == 2  # said there too
    assert str(out) in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["--notebooks", str(folder), "--out", str(empty)]) == 0  # an empty one is fine


def test_what_shows_a_folder_holds_a_run(tmp_path):
    from compile_ckpt.workshop.runner import held_by_a_run

    assert held_by_a_run(tmp_path) is None
    (tmp_path / "notes.txt").write_text("mine")
    assert held_by_a_run(tmp_path) is None  # files no run writes do not make it a run's
    for made in ("00_a.ipynb", "00_a.html", "summary.md", "index.html", "artifacts", ".run"):
        used = tmp_path / made.replace(".", "_")
        used.mkdir()
        (used / made).mkdir() if made == "artifacts" else (used / made).write_text("")
        assert held_by_a_run(used) == made


@pytest.mark.parametrize("out", [None, "out"])
def test_a_run_folder_is_claimed_even_by_two_at_once(tmp_path, monkeypatch, out):
    """The claim (creating it, or its .run file, exclusively) is what decides: a second claim
    of the same folder, even one that looked before the first wrote anything, is refused."""
    import datetime as dt

    from compile_ckpt.workshop.runner import CLAIM, claim_folder

    monkeypatch.chdir(tmp_path)
    now = dt.datetime(2026, 12, 3, 10, 0, 0, tzinfo=dt.UTC)
    first = claim_folder(out, now)
    assert (first / CLAIM).exists()
    if out is None:
        assert [claim_folder(None, now).name for _ in range(2)] == [f"{first.name}-2",
                                                                   f"{first.name}-3"]
    else:
        with pytest.raises(RunnerError, match=f"--out {re.escape(str(first))}: it holds a run"):
            claim_folder(out, now)


# ------------------------------------------------------- input errors: exit 2, one line
@pytest.mark.parametrize(("value", "said"), [
    ("[1", "-p s: '[1' is not a YAML value"),
    ('!!python/object/apply:os.system ["touch pwned"]', "-p s:"),
    ('!!python/object/apply:os.system ["touch pwned"]\n', "-p s:"),
    ("[" * 5000, "-p s:"),  # deeper than PyYAML's recursion: RecursionError before
    ("2024-13-45", "-p s: '2024-13-45' is not a YAML value"),  # ValueError before
    ("2024-01-01", "-p s: datetime.date(2024, 1, 1) is a date"),  # quote a date to pass text
    ("!!binary aGk=", "-p s: b'hi' is a bytes"),
    ('"\\ud83d"', "-p s: '\\ud83d' holds a lone surrogate"),  # an escape YAML decodes
    ("\udcff", "-p s:"),  # a byte argv could not decode (surrogateescape)
    ("3", "parameter 's' must be str, got 3"),
    ("[a, b]", "parameter 's' must be str, got ['a', 'b']"),
])
def test_a_bad_value_is_one_line_and_exit_2_before_anything_runs(tmp_path, capsys, value, said,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "nbs"
    notebook(folder, "00_ok", params='s: str = "a"  # text')
    out = tmp_path / "out"
    assert main(["--notebooks", str(folder), "--out", str(out), "-p", "s", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0] and "Traceback" not in err[0]
    assert not out.exists() and not (tmp_path / "pwned").exists()
    assert not (tmp_path / "runs").exists()  # nor the default one
    assert main(["--notebooks", str(folder), "-p", "s", value]) == 2


@pytest.mark.parametrize(("text", "said"), [
    ("all: {s: [[[[" + "[" * 5000 + "}", "cannot read it"),
    ("all: {s: 2024-13-45}", "cannot read it"),
    ("all: {s: !!python/object/apply:os.system [touch pwned]}", "cannot read it"),
    ("all: {s: !!set {a}}", "is a set"),
    ("all: {s: 1}", "parameter 's' must be str, got 1"),
    (json.dumps({"all": {"s\ud83d": "x"}}), "lone surrogate"),  # in a name, too
])
def test_a_bad_parameter_file_is_one_line_and_exit_2(tmp_path, capsys, text, said, monkeypatch):
    monkeypatch.chdir(tmp_path)
    notebook(tmp_path / "nbs", "00_ok", params='s: str = "a"  # text')
    (tmp_path / "p.yaml").write_text(text)
    assert main(["--notebooks", "nbs", "--out", "out", "-f", "p.yaml"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and said in err[0] and "Traceback" not in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nbs", "p.yaml"]


def test_an_emoji_written_by_json_dumps_reaches_the_notebook_and_a_lone_half_is_refused(
        tmp_path, capsys):
    folder = tmp_path / "nbs"
    notebook(folder, "00_ok", params='s: str = "a"  # text', body=RECORD + "record('s', s)")
    params = tmp_path / "p.yaml"
    params.write_text(json.dumps({"all": {"s": "smile \U0001F600"}}))  # "\ud83d\ude00"
    assert main(["--notebooks", str(folder), "--out", str(tmp_path / "o"), "-f", str(params)]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["notebooks"][0]["records"]["s"] == "smile \U0001F600"
    # the same through -p: YAML's escapes for the two halves, as json.dumps writes them
    assert main(["--notebooks", str(folder), "--out", str(tmp_path / "p"), "-p", "s",
                 json.dumps("smile \U0001F600")]) == 0
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert summary["notebooks"][0]["records"]["s"] == "smile \U0001F600"
    assert "smile \U0001F600" in (tmp_path / "p" / "summary.md").read_text(encoding="utf-8")
    capsys.readouterr()
    params.write_text('{"all": {"s": "half \\ud83d"}}')
    assert main(["--notebooks", str(folder), "--out", str(tmp_path / "o2"), "-f",
                 str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "surrogate" in err[0] and not (tmp_path / "o2").exists()


# ----------------------------------------------------------------- reports are escaped
HOSTILE = "bad | row <script>alert(1)</script> <img src=x onerror=alert(2)> ``` end"


def test_summary_md_escapes_every_cell_and_fences_errors_safely(tmp_path):
    folder, out = tmp_path / "nbs", tmp_path / "out"
    notebook(folder, "00_hostile", body=RECORD + f"record('note', {HOSTILE[:58]!r})\n"
             f"raise RuntimeError({HOSTILE!r})")
    assert main(["--notebooks", str(folder), "--out", str(out)]) == 1
    md = (out / "summary.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| [00_hostile]"))
    assert len(re.findall(r"(?<!\\)\|", row)) == 5  # the row's own five bars, no more
    assert "<script>" not in md.split("## Not ok")[0] and "<img" not in md.split("## Not ok")[0]
    fence = re.search(r"^  (`{4,})text$", md, re.M)
    assert fence, "the error's fence is longer than the backticks inside it"
    body = md.split(fence.group(0), 1)[1]
    assert HOSTILE in body and body.index(HOSTILE) < body.index(f"  {fence.group(1)}\n")
    index = (out / "index.html").read_text()
    assert "<script>" not in index and "<img" not in index
    summary = json.loads((out / "summary.json").read_text())
    assert summary["versions"]["torch"] in index
    assert (summary["git_commit"][:10] or "?") in index


def test_the_reports_survive_any_name_and_any_recorded_text(tmp_path):
    """A page's link in summary.md is a valid link target whatever the notebook is called, and
    a record that UTF-8 cannot hold (a lone surrogate) does not crash the reports."""
    from compile_ckpt.workshop.summary import NotebookRun, write_index_html, write_summary

    meta = {"finished_utc": "2026-01-01T00:00:00+00:00", "git_commit": "0123456789abcdef",
            "versions": {"torch": "9.9.9"}, "device": "cpu", "device_asked": "auto"}
    run = NotebookRun("00_a b) <c>", str(tmp_path / "00_a b) <c>.ipynb"), "ok", 1.0,
                      {"half": "x \ud83d y", "pipe": "a|b"})
    md, js = write_summary([run], tmp_path, meta)
    row = next(line for line in md.read_text(encoding="utf-8").splitlines()
               if line.startswith("| ["))
    assert row.startswith("| [00_a b) &lt;c&gt;](00_a%20b%29%20%3Cc%3E.html) |")
    assert "pipe=a\\|b" in row and "\\ud83d" in row
    assert json.loads(js.read_text(encoding="utf-8"))["notebooks"][0]["records"]["half"] == (
        "x \ud83d y")
    page = write_index_html([run], tmp_path, meta).read_text(encoding="utf-8")
    assert "commit 0123456789, torch 9.9.9." in page and "&lt;c&gt;" in page


def test_the_runner_has_a_console_script():
    from importlib.metadata import entry_points

    from compile_ckpt.workshop import runner

    [script] = [e for e in entry_points(group="console_scripts") if e.name == "compile-ckpt-run"]
    assert script.load() is runner.main
    # what the script's wrapper does with main's return value: sys.exit(main()) -> exit 2
    with pytest.raises(SystemExit) as exited:
        sys.exit(script.load()(["--notebooks", "no-such-folder"]))
    assert exited.value.code == 2
