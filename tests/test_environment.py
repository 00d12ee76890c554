"""One list of packages and honest packaging: requirements.txt pins exactly, environment.yml
installs it, pyproject's bounds are met by the pins, every test import is declared, and the
licence and Python versions are stated as tested."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import ROOT

META = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins() -> dict[str, str]:
    out = {}
    for file in ("requirements.txt", "requirements-dev.txt"):
        for line in (ROOT / file).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                name, _, version = line.partition("==")
                assert version, f"{file}: {line!r} is not pinned exactly"
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
    # both requirement files and the package; PyTorch's CPU index added, never replacing the
    # default one
    assert [d for d in pip if not d.startswith("--")] == [
        "-r requirements.txt", "-r requirements-dev.txt", "-e .[workshop,trainers,test]"]
    assert [d for d in pip if d.startswith("--")] == [
        "--extra-index-url https://download.pytorch.org/whl/cpu"]
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
                local = (ROOT / "tests" / f"{top}.py").is_file()  # conftest, another test file
                if top in stdlib or local or top in ("compile_ckpt", "__future__"):
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


def hooks() -> dict[str, dict]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    return {h["id"]: h for repo in config["repos"] for h in repo["hooks"]}


def test_hygiene_runs_in_ci():
    """The pre-commit hooks lint .py and .ipynb and strip notebook outputs; `make test` runs
    them; each installs its own tool at the pin of the requirements files."""
    assert set(hooks()["ruff"]["types_or"]) == {"python", "jupyter"}
    assert hooks()["nbstripout"]["entry"].startswith("nbstripout")
    for hook in hooks().values():
        assert hook["language"] == "python", "a system hook needs an activated venv"
        [dep] = hook["additional_dependencies"]
        name, version = dep.split("==")
        assert pins()[name] == version, f"{name}: hook {version}, pin {pins()[name]}"
    assert "*.ipynb" in META["tool"]["ruff"]["extend-include"]


@pytest.mark.slow
def test_the_hooks_work_in_a_fresh_repository_without_an_activated_venv(tmp_path):
    """As a contributor gets them: `pre-commit install`, PATH without the venv, `git commit`.
    Before, every commit failed with "Executable `ruff` not found"."""
    repo = tmp_path / "clone"
    (repo / "notebooks").mkdir(parents=True)
    for name in (".pre-commit-config.yaml", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    nb = json.loads((ROOT / "notebooks" / "03_alternatives.ipynb").read_text())
    nb["cells"][1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["x\n"]}]
    (repo / "notebooks" / "03_alternatives.ipynb").write_text(json.dumps(nb, indent=1))
    (repo / "bad.py").write_text("import os\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", **{k: v for k, v in os.environ.items()
                                           if k.startswith(("PIP_", "PRE_COMMIT"))}}

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)

    assert run("git", "init", "-q").returncode == 0
    assert run(str(ROOT / ".venv" / "bin" / "pre-commit"), "install").returncode == 0
    run("git", "add", "-A")
    first = run("git", "commit", "-qm", "x")
    said = first.stdout + first.stderr
    assert first.returncode != 0 and "not found" not in said
    assert "F401" in said and "`os` imported but unused" in said  # ruff ran, and found it
    stripped = json.loads((repo / "notebooks" / "03_alternatives.ipynb").read_text())
    assert stripped["cells"][1]["outputs"] == []  # nbstripout ran, and stripped it
    (repo / "bad.py").write_text("import os\n\nprint(os.sep)\n")
    run("git", "add", "-A")
    second = run("git", "commit", "-qm", "x")
    assert second.returncode == 0, second.stdout + second.stderr


def torch_build():
    import importlib.util

    path = ROOT / "scripts" / "torch_build.py"
    spec = importlib.util.spec_from_file_location("torch_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_torch_wheel(folder, version: str, requires: list[str]):
    """A wheel that pip can resolve offline: metadata only."""
    import zipfile

    info = f"torch-{version}.dist-info"
    path = folder / f"torch-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: torch\nVersion: "
                     f"{version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires))
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                     "Tag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    return path


@pytest.mark.parametrize(("version", "requires", "cuda"), [
    ("PIN+cpu", [], None),
    ("PIN", ['cuda-toolkit[cublas,cudart]==13.0.3; platform_system == "Linux"',
                'nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"'], "13.0"),  # PyPI's
    ("PIN+cu128", ['nvidia-cublas-cu12==12.8.4.1; platform_system == "Linux"'], "12.8"),
    ("PIN", ['nvidia-cublas-cu12==12.4.5.8; platform_system == "Linux"'], "12"),
])
def test_the_install_says_which_torch_build_comes_before_downloading(tmp_path, capsys, version,
                                                                      requires, cuda):
    """What `make install` prints first, from pip's own resolution of the pin (offline here: a
    wheel of metadata in a local folder stands in for the index)."""
    from urllib.parse import quote

    build = torch_build()
    version = version.replace("PIN", build.torch_pin().removeprefix("torch=="))
    wheel = fake_torch_wheel(tmp_path, version, requires)
    assert build.main(["--isolated", "--no-index", "--find-links", str(tmp_path),
                       "--target", str(tmp_path / "t")]) == 0
    said = capsys.readouterr().out
    assert f"torch: pip will install torch {version}, the " in said
    assert f"{quote(wheel.name)} ({build.megabytes(wheel.stat().st_size)})" in said
    if cuda:
        assert f"the CUDA {cuda} build, with NVIDIA's libraries" in said
        assert "For the CPU build, interrupt (Ctrl-C) and run:" in said
        assert build.CPU_INDEX in said
        assert build.MEASURED["CUDA"] in said
    else:
        assert "the CPU build" in said and build.MEASURED["CPU"] in said and "Ctrl-C" not in said
    assert not (tmp_path / "t").exists()  # a dry run: nothing installed


def test_an_unresolvable_torch_is_said_and_does_not_stop_the_install(tmp_path, capsys):
    assert torch_build().main(["--isolated", "--no-index", "--find-links", str(tmp_path),
                               "--target", str(tmp_path / "t")]) == 0
    assert "pip could not resolve torch==" in capsys.readouterr().out


def test_notebook_times_agree_between_the_readmes():
    """The instructor's plan quotes the README's cold-cache times, notebook by notebook."""
    readme = (ROOT / "README.md").read_text()
    guide = (ROOT / "notebooks" / "README.md").read_text()
    measured = {m[0]: int(m[1]) for m in
                re.findall(r"^\| `(\d\d)_\w+`[^\n]*\| (\d+) s \|$", readme, re.M)}
    quoted = {m[0]: int(m[1]) for m in re.findall(r"^\| [^|]+ \| (\d\d) [^|]+ \| ~(\d+) s \|",
                                                   guide, re.M)}
    quoted.update(re.findall(r"\*\*(\d\d) [^*]+, ~(\d+) s run\)", guide))
    quoted = {k: int(v) for k, v in quoted.items()}
    notebooks = {p.name[:2] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    assert set(measured) == notebooks and set(quoted) <= set(measured) and len(quoted) >= 7
    assert quoted == {k: measured[k] for k in quoted}
    total = re.search(r"\((\d+) min (\d+) s in all,", readme)
    assert abs(int(total[1]) * 60 + int(total[2]) - sum(measured.values())) <= 30, (
        "the per-notebook times and the total come from one run")


# The hosts of the default package index, and a project address that was never created: no
# committed file names them. Spelled in pieces, so that this file does not name them either.
FORBIDDEN = tuple("".join(parts) for parts in (("pypi", ".org"), ("python", "hosted.org"),
                                                ("github.com/", "compile-ckpt")))


def committed_text_files():
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split("\0")
    for name in filter(None, names):
        path = ROOT / name
        if path.is_file():
            data = path.read_bytes()
            if b"\0" not in data[:8192]:  # text, not a PNG or a wheel
                yield name, data.decode("utf-8", "replace")


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout")
def test_no_committed_file_names_the_default_index_or_an_address_that_does_not_exist():
    found = [(name, host) for name, text in committed_text_files() for host in FORBIDDEN
             if host in text]
    assert not found, found


def test_every_relative_link_in_the_docs_points_at_a_file():
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md",
             ROOT / "notebooks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target or target.startswith(("#", "mailto:")):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append((page.relative_to(ROOT).as_posix(), target))
    assert not broken, broken
