"""A wheel built from this repository, installed into a separate environment outside the
source tree, carries the library, the CLI, the committed GPU results and the solutions."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_wheel_installed_outside_the_tree_finds_results_and_solutions(tmp_path):
    # build from a copy: the tree stays untouched
    source, dist = (
        tmp_path / "source",
        tmp_path / "dist",
    )
    for part in ("src", "results", "notebooks/solutions", "pyproject.toml", "README.md", "LICENSE"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copy
        (source / part).parent.mkdir(parents=True, exist_ok=True)
        copy(ROOT / part, source / part)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(dist),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(dist.glob("compile_ckpt-*.whl"))
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
