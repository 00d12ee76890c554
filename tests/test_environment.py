"""One list of packages and honest packaging: requirements.txt pins exactly, environment.yml
installs it, pyproject's bounds are met by the pins, every test import is declared, and the
licence and Python versions are stated as tested."""

from __future__ import annotations

import ast
import re
import sys
import tomllib

import yaml
from packaging.requirements import Requirement

from conftest import ROOT

META = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned exactly"
            out[name.lower()] = version
    return out


def test_requirements_pin_torch_exactly_and_notebook_00_expects_that_pin():
    """One fact, one place: the pin is requirements.txt's; notebook 00 checks against it (no
    version is written here, so upgrading torch means editing requirements.txt and 00 only)."""
    import json

    assert re.fullmatch(r"\d+\.\d+\.\d+", pins()["torch"])
    cells = json.loads((ROOT / "notebooks" / "00_check_setup.ipynb").read_text())["cells"]
    params = next(c for c in cells if "parameters" in c["metadata"].get("tags", []))
    assert f'expected_torch: str = "{pins()["torch"]}"' in "".join(params["source"])


def test_environment_yml_installs_requirements_and_package():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"][0] == "conda-forge" and "defaults" not in env["channels"]
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == ["-r requirements.txt", "-e .[workshop,trainers,test]"]
    assert {re.split(r"[=<>]", d)[0] for d in deps if isinstance(d, str)} <= {"python", "pip"}


def test_pyproject_bounds_are_met_by_the_pins():
    p = pins()
    reqs = [Requirement(r) for r in META["project"]["dependencies"]]
    for extra in META["project"]["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    for r in reqs:
        assert r.name.lower() in p, (
            f"{r.name} is in pyproject.toml but not pinned in requirements.txt"
        )
        assert p[r.name.lower()] in r.specifier, (
            f"{r.name}=={p[r.name.lower()]} violates {r.specifier}"
        )
    assert META["project"]["scripts"]["compile-ckpt"] == "compile_ckpt.cli:main"


def test_every_test_import_is_declared():
    declared = {
        Requirement(r).name.lower().replace("-", "_")
        for extra in ("workshop", "trainers", "test")
        for r in META["project"]["optional-dependencies"][extra]
    } | {"torch"}
    aliases = {"yaml": "pyyaml", "ipywidgets": "ipywidgets", "nbformat": "nbformat"}
    stdlib = set(sys.stdlib_module_names)
    for path in (ROOT / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                else []
            )
            for name in names:
                top = name.split(".")[0]
                if top in stdlib or top in ("compile_ckpt", "conftest", "__future__"):
                    continue
                assert aliases.get(top, top).lower() in declared, (
                    f"{path.name} imports {top}, not declared"
                )


def test_licence_and_python_versions_are_stated():
    project = META["project"]
    assert project["license"] == "BSD-3-Clause" and (ROOT / "LICENSE").read_text().startswith(
        "BSD 3-Clause"
    )
    assert project["requires-python"] == ">=3.11"
    versions = {
        c.rsplit(" ", 1)[-1]
        for c in project["classifiers"]
        if c.startswith("Programming Language :: Python :: 3.")
    }
    assert "3.11" in versions and all(re.fullmatch(r"3\.\d+", v) for v in versions)
    # the SPDX string says it
    assert not any(
        c.startswith("License ::") for c in project["classifiers"]
    )


def test_hygiene_runs_in_ci():
    """The pre-commit hooks lint .py and .ipynb and strip notebook outputs; `make test` runs
    them."""
    hooks = {
        h["id"]: h
        for repo in yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
        for h in repo["hooks"]
    }
    assert set(hooks["ruff"]["types_or"]) == {"python", "jupyter"}
    assert hooks["nbstripout"]["entry"].startswith("nbstripout")
    assert all(
        repo["repo"] == "local"
        for repo in yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    ), "hooks must not need a download"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: lint$", makefile, re.M) and "pre-commit run --all-files" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "*.ipynb" in META["tool"]["ruff"]["extend-include"]


def test_one_line_length_for_the_whole_project():
    """100 columns for the library, workshop, tests, scripts and notebook code, by ruff's E501."""
    ruff = META["tool"]["ruff"]
    assert ruff["line-length"] == 100 and "E" in ruff["lint"]["select"]
    assert "E501" not in str(ruff["lint"].get("ignore", [])) + str(ruff["lint"]["per-file-ignores"])


def test_the_install_line_has_one_home():
    """`make install` holds the pip line; the other-Pythons script calls it."""
    script = (ROOT / "scripts" / "test_pythons.sh").read_text()
    assert "pip install" not in script and "make --no-print-directory install" in script
    assert (ROOT / "Makefile").read_text().count("-m pip install") == 1
