"""Each exercise's reveal works as the guide says: the text ``exercises.reveal("NN")`` returns,
pasted into the committed notebook's exercise cell below the stub, makes the check pass when
the notebook runs (papermill, smoke parameters, the notebook's own namespace). An answer that
ends the program first (``exit()``, ``sys.exit()``, ``quit()``, ``raise SystemExit``) is
reported by the check as a problem, and the run goes on."""

from __future__ import annotations

import json
import re

import pytest
import torch

from compile_ckpt.workshop import exercises
from compile_ckpt.workshop.runner import load_parameter_files, notebooks_in, plan, run_notebook
from conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"
SMOKE = load_parameter_files([str(NOTEBOOKS / "params" / "smoke.yaml")])
EXITS = {"01": "exit()", "02": "sys.exit()", "03": "raise SystemExit(1)", "04": "quit()"}


def _with_reveal_pasted(number: str) -> tuple[dict, str]:
    """The committed notebook with the reveal pasted below the stub, and an exiting answer
    checked in a cell before it; and the name of the exercise's check."""
    path = next(NOTEBOOKS.glob(f"{number}_*.ipynb"))
    nb = json.loads(path.read_text(encoding="utf-8"))
    answer = exercises.SOLUTIONS[number]
    index, cell = next(
        (i, c)
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and f"def {answer}(" in "".join(c["source"])
    )
    source = "".join(cell["source"])
    check_line = next(line for line in source.splitlines() if "exercises.check_" in line)
    check = re.search(r"exercises\.(check_\w+)\(", check_line).group(1)
    stub = source[: source.index(check_line)].rstrip()
    pasted = f"{stub}\n\n\n{exercises.reveal(number).strip()}\n\n\n{check_line}\n"
    cell["source"] = pasted.splitlines(keepends=True)
    probe = (
        f"import sys\n\nfrom compile_ckpt.workshop import exercises\n"
        f"from compile_ckpt.workshop.record import record\n\n\ndef exiting(*args):\n"
        f"    {EXITS[number]}\n\n\n"
        f"record('exit_probe', exercises.{check}(exiting).status)\n"
    )
    nb["cells"].insert(
        index,
        {
            "cell_type": "code",
            "execution_count": None,
            "id": f"probe-{number}",
            "metadata": {},
            "outputs": [],
            "source": probe,
        },
    )
    return nb, check


@pytest.mark.slow
@pytest.mark.parametrize("number", sorted(exercises.SOLUTIONS))
def test_the_revealed_solution_pasted_below_the_stub_passes(number, tmp_path):
    nb, _ = _with_reveal_pasted(number)
    name = next(NOTEBOOKS.glob(f"{number}_*.ipynb")).name
    pasted = tmp_path / name
    pasted.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    [(_, params, why)] = plan([pasted], SMOKE, {"device": device}, notebooks_in(NOTEBOOKS))
    assert not why
    run = run_notebook(
        pasted, tmp_path / "run" / name, params, timeout=900, workdir=tmp_path / "artifacts"
    )
    assert run.status == "ok", run.error  # every cell ran: the exiting answer ended nothing
    assert run.records[f"exercise_{number}"] == "passed"
    assert run.records["exit_probe"] == "not yet"
    executed = json.loads((tmp_path / "run" / name).read_text(encoding="utf-8"))
    printed = json.dumps([c.get("outputs", []) for c in executed["cells"]])
    assert "ended the program (SystemExit" in printed and "correct!" in printed
