"""One list of packages: requirements.txt (exact pins), environment.yml installs it,
pyproject.toml's lower bounds are satisfied by the pins."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def pins() -> dict[str, str]:
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"requirements.txt: {line!r} is not pinned exactly"
            out[name.lower()] = version
    return out


def test_requirements_pin_torch_exactly():
    assert pins()["torch"] == "2.13.0"


def test_environment_yml_installs_requirements_and_package():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"][0] == "conda-forge" and "defaults" not in env["channels"]
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == ["-r requirements.txt", "-e ."]
    conda_names = {re.split(r"[=<>]", d)[0] for d in deps if isinstance(d, str)}
    assert conda_names <= {"python", "pip"}, "packages belong in requirements.txt, not twice"


def test_pyproject_bounds_are_met_by_the_pins():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    p = pins()
    reqs = [Requirement(r) for r in meta["dependencies"]]
    for extra in meta["optional-dependencies"].values():
        reqs += [Requirement(r) for r in extra]
    for r in reqs:
        assert r.name.lower() in p, f"{r.name} is in pyproject.toml but not pinned in requirements.txt"
        assert p[r.name.lower()] in r.specifier, f"{r.name}=={p[r.name.lower()]} violates {r.specifier}"
    assert meta["scripts"]["compile-ckpt"] == "compile_ckpt.cli:main"
