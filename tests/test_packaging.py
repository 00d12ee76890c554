"""A wheel built from this repository, installed into a separate environment outside the
source tree, carries the library, the CLI, the committed GPU results and the solutions."""

from __future__ import annotations

import email
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import textwrap
import zipfile

import pytest

from conftest import ROOT

_BUILT: dict[str, tuple] = {}  # one build per test session: the tests only read it


def build(tmp_path):
    """An sdist and the wheel built *from that sdist* (as pip builds from an index), from a
    copy of the tree: the tree stays untouched. Built once per session."""
    if "dist" not in _BUILT:
        _BUILT["dist"] = _build(tmp_path)
    return _BUILT["dist"]


def _build(tmp_path):
    source, dist = tmp_path / "source", tmp_path / "dist"
    for part in ("src", "results", "notebooks/solutions", "tests", "pyproject.toml", "README.md",
                 "LICENSE", "MANIFEST.in"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        (source / part).parent.mkdir(parents=True, exist_ok=True)
        copy(ROOT / part, source / part, **({"ignore": shutil.ignore_patterns("*.egg-info")}
                                            if (ROOT / part).is_dir() else {}))
    built = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return next(dist.glob("compile_ckpt-*.tar.gz")), next(dist.glob("compile_ckpt-*.whl"))


@pytest.mark.slow
def test_the_sdist_and_the_wheel_carry_what_an_index_needs(tmp_path):
    """The sdist has no tests (they need the whole repository and would not run from it); the
    wheel built from it is typed; its metadata names no URL (nothing of this project is hosted
    anywhere) and its description links only relative to the repository."""
    sdist, wheel = build(tmp_path)
    with tarfile.open(sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
    assert not [n for n in names if n.startswith("tests")] and "MANIFEST.in" in names
    assert "notebooks/solutions/solutions.py" in names and "src/compile_ckpt/py.typed" in names
    with zipfile.ZipFile(wheel) as whl:
        files = whl.namelist()
        meta = email.message_from_bytes(whl.read(next(f for f in files if f.endswith("/METADATA"))))
    assert "compile_ckpt/py.typed" in files
    assert not meta.get_all("Project-URL") and not meta.get("Home-page")
    links = re.findall(r"\]\(([^)]+)\)", meta.get_payload())
    assert links and all("://" not in link for link in links), links
    import compile_ckpt

    assert meta["Version"] == compile_ckpt.__version__
    # the classifiers name exactly the Python that CI and `make test` use
    tested = re.search(r"python(3\.\d+)", (ROOT / "Makefile").read_text()).group(1)
    assert sorted(c.rsplit(" ", 1)[1] for c in meta.get_all("Classifier")
                  if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)) == [tested]
    assert meta["Requires-Python"] == f">={tested}"


@pytest.mark.slow
def test_wheel_installed_outside_the_tree_finds_results_and_solutions(tmp_path):
    _, wheel = build(tmp_path)
    env = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120
    )
    site = next(env.glob("lib/python3*/site-packages"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    # torch and the workshop's packages come from this environment, after the wheel on the path
    (site / "zz_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # every module of the source tree is in the wheel (a subpackage missing from pyproject's
    # package list would not be)
    modules = sorted(".".join(p.relative_to(ROOT / "src").with_suffix("").parts)
                     .removesuffix(".__init__") for p in (ROOT / "src").rglob("*.py")
                     if p.name != "__main__.py")
    probe = textwrap.dedent(f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
    """) + textwrap.dedent("""
        import compile_ckpt, compile_ckpt.workshop.env as env, json, pathlib
        results, solutions = env.shipped("results"), env.shipped("solutions")
        print(json.dumps({"package": compile_ckpt.__file__, "results": str(results),
                          "runs": sorted(p.parent.name for p in results.glob("*/bench.json")),
                          "solutions": (solutions / "solutions.py").exists()}))
    """)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    r = subprocess.run(
        [str(env / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        cwd=outside,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    import json

    found = json.loads(r.stdout)
    assert found["package"].startswith(str(site)) and str(ROOT) not in found["results"]
    assert "h200-2026-11-28" in found["runs"] and found["solutions"] is True
    cli = subprocess.run(
        [str(env / "bin" / "python"), "-m", "compile_ckpt", "--help"],
        capture_output=True,
        text=True,
        cwd=outside,
        timeout=120,
    )
    assert cli.returncode == 0 and "inspect" in cli.stdout
    version = subprocess.run(
        [str(env / "bin" / "python"), "-m", "compile_ckpt", "--version"],
        capture_output=True, text=True, cwd=outside, timeout=120,
    )
    import torch

    import compile_ckpt

    said = f"compile-ckpt {compile_ckpt.__version__} (torch {torch.__version__})"
    assert version.returncode == 0 and version.stdout.strip() == said
