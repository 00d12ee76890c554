"""docs/hosted.md's route, as written: one notebook copied out of the repository alone, with the
wheel beside it, in a bare environment that has only PyTorch, Jupyter's kernel and papermill
(what a hosted Jupyter gives); its first cell is the documented ``%pip install``."""

from __future__ import annotations

import json
import shutil
import subprocess
import venv

import pytest
import torch

from conftest import ROOT
from test_packaging import build

NOTEBOOK = "03_alternatives.ipynb"  # quick with its defaults, and it imports the whole workshop


def pip(python, *args: str) -> None:
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_a_notebook_copied_alone_runs_with_the_documented_install(tmp_path):
    _, wheel = build(tmp_path)
    bare = tmp_path / "hosted-python"
    venv.create(bare, with_pip=True)
    python = bare / "bin" / "python"
    pip(python, f"torch=={torch.__version__.split('+')[0]}", "ipykernel", "papermill")
    alone = tmp_path / "uploaded"
    alone.mkdir()
    shutil.copy(wheel, alone / wheel.name)
    nb = json.loads((ROOT / "notebooks" / NOTEBOOK).read_text())
    nb["cells"].insert(
        1,
        {
            "cell_type": "code",
            "execution_count": None,
            "id": "hosted-install",
            "metadata": {},
            "outputs": [],
            "source": [f"%pip install {wheel.name}[workshop]"],
        },
    )  # docs/hosted.md
    (alone / NOTEBOOK).write_text(json.dumps(nb))
    done = subprocess.run(
        [
            str(bare / "bin" / "papermill"),
            NOTEBOOK,
            "executed.ipynb",
            "-k",
            "python3",
            "--cwd",
            str(alone),
        ],
        cwd=alone,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    executed = json.loads((alone / "executed.ipynb").read_text())
    code = [c for c in executed["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code)  # every cell ran, the record cell included
    outputs = "".join(
        o.get("text", "") if isinstance(o.get("text"), str) else "".join(o.get("text", []))
        for c in code
        for o in c["outputs"]
    )
    assert "Successfully installed" in outputs and "compile_ckpt" in outputs
    shown = subprocess.run(
        [str(python), "-c", "import compile_ckpt, sys; print(compile_ckpt.__file__)"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert str(bare) in shown.stdout  # the wheel's copy, not this checkout's
