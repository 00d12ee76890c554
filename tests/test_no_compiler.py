"""A room without a working C++ compiler: Inductor is made to fail (``CXX=/bin/false``, an empty
Inductor cache, so nothing compiled earlier is reused), and every notebook but 05 runs to its end
with ``notebooks/params/no-compiler.yaml``, teaching what it teaches with the defaults. Notebook
00, run with its defaults, diagnoses the failure and finishes."""

from __future__ import annotations

import pytest

from compile_ckpt.workshop.runner import load_parameter_files, notebooks_in
from conftest import ROOT
from test_notebooks import CHECKS, run_ok

NOTEBOOKS = ROOT / "notebooks"
PARAMS = NOTEBOOKS / "params"
NO_COMPILER = load_parameter_files([str(PARAMS / "smoke.yaml"), str(PARAMS / "no-compiler.yaml")])
# 05 measures Inductor itself; no-compiler.yaml says to watch it on the instructor's screen
ROOM = [nb for nb in notebooks_in(NOTEBOOKS) if not nb.name.startswith("05")]


@pytest.fixture
def broken_compiler(monkeypatch, tmp_path):
    """The kernel papermill starts, and every process it starts, finds a compiler that fails."""
    monkeypatch.setenv("CXX", "/bin/false")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "empty-inductor-cache"))
    # (Inductor reads $CXX when it is imported: the kernels see it, this process need not;
    # notebook 00's records below show the kernel found no working compiler)


@pytest.mark.slow
def test_check_setup_with_its_defaults_diagnoses_and_finishes(broken_compiler, tmp_path):
    r = run_ok(NOTEBOOKS / "00_check_setup.ipynb", {}, tmp_path)
    assert r["cxx_compiler_works"] is False and r["inductor_ok"] is False
    assert r["compile_backend"] == "inductor" and r["backend_used"] == "eager"
    assert "InvalidCxxCompiler" in r["compile_error"]
    assert "no-compiler.yaml" in r["verdict"]  # the way out, named
    assert r["compile_adds_orig_mod_prefix"] is True
    assert r["compiled_vs_eager_max_abs_diff"] < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("path", ROOM, ids=lambda p: p.stem)
def test_every_notebook_but_05_runs_without_a_compiler(path, broken_compiler, tmp_path):
    r = run_ok(path, NO_COMPILER, tmp_path)
    if path.stem.startswith("00"):
        assert r["backend_used"] == "eager" and not r["compile_error"]
        assert r["cxx_compiler_works"] is False and "no-compiler.yaml" in r["verdict"]
    else:
        CHECKS[path.stem](r)  # the same lessons as with a compiler


def _check_in(env_cxx: str) -> dict:
    """cxx_compiler_check() in a fresh process (Inductor reads $CXX when it is imported)."""
    import json
    import os
    import subprocess
    import sys

    code = ("import json; from compile_ckpt.workshop.env import cxx_compiler_check; "
            "print(json.dumps(cxx_compiler_check()._asdict()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CXX": env_cxx})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_compiler_check_finds_what_inductor_would_and_says_why_it_fails():
    import shutil

    broken = _check_in("/bin/false")  # answers --version with a failure: Inductor rejects it
    assert broken["works"] is False and broken["compiler"] == "/bin/false"
    assert "--version failed" in broken["detail"]
    missing = _check_in("no-such-compiler-here")
    assert missing["works"] is False and "not found" in missing["detail"]
    if shutil.which("g++"):
        working = _check_in("g++")
        assert working["works"] is True and working["compiler"] == shutil.which("g++")
