"""The library is torch-only in fact: with every workshop dependency made unimportable, it
imports, saves, loads, and its CLI inspects and cleans."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib

import pytest

from conftest import ROOT, not_installed

BLOCKED = (
    "pandas",
    "matplotlib",
    "tqdm",
    "psutil",
    "ipywidgets",
    "IPython",
    "papermill",
    "nbformat",
    "nbconvert",
    "yaml",
    "numpy",
    "safetensors",
    "lightning",
    "accelerate",
    "transformers",
)
PRELUDE = not_installed(BLOCKED)


def python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def compiled_checkpoint(tmp_path_factory):
    import torch

    path = tmp_path_factory.mktemp("torch_only") / "seed.pt"
    torch.save(
        {"model_state_dict": torch.compile(torch.nn.Linear(3, 3), backend="eager").state_dict()},
        path,
    )
    return path


def test_library_imports_saves_and_loads_with_torch_alone(tmp_path, compiled_checkpoint):
    r = python(
        """
        import sys, torch, compile_ckpt
        from compile_ckpt import load_checkpoint, save_checkpoint
        model = torch.nn.Linear(3, 3)
        print(load_checkpoint(sys.argv[1], model))
        save_checkpoint(sys.argv[2], torch.compile(model, backend="eager"))
        heavy = ("pandas", "numpy", "tqdm", "psutil")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
    """,
        str(compiled_checkpoint),
        str(tmp_path / "clean.pt"),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "removed '_orig_mod.' from 2 keys" in r.stdout and r.stdout.strip().endswith("[]")


@pytest.mark.parametrize("command", ["inspect", "clean"])
def test_cli_inspect_and_clean_with_torch_alone(tmp_path, compiled_checkpoint, command):
    args = [str(compiled_checkpoint)] + ([str(tmp_path / "out.pt")] if command == "clean" else [])
    r = python(
        "import runpy, sys; sys.argv = ['compile-ckpt', *sys.argv[1:]]; "
        "runpy.run_module('compile_ckpt', run_name='__main__')",
        command,
        *args,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert ("_orig_mod" in r.stdout) if command == "inspect" else (tmp_path / "out.pt").exists()
    # torch warns "Failed to initialize NumPy" when it is missing; the CLI's user sees nothing
    assert r.stderr == "", r.stderr


def test_the_numpy_warning_is_silenced_only_while_torch_imports():
    r = python("""
        import warnings
        warnings.simplefilter("error")  # the caller's own filter
        before = list(warnings.filters)
        import compile_ckpt
        assert warnings.filters == before, "the caller's warning filters changed"
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip() == "ok" and r.stderr == "", r.stderr


def test_the_core_dependency_is_torch_alone():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["dependencies"] == ["torch>=2.5"]
    assert {"workshop", "safetensors", "trainers", "test"} <= set(project["optional-dependencies"])
