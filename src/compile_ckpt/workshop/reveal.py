"""``reveal``: an exercise's reference solution from ``notebooks/solutions/solutions.py``,
with the imports it uses, ready to paste below the stub."""

from __future__ import annotations

import ast

from .env import shipped

#: Exercise number -> the function in ``notebooks/solutions/solutions.py`` that solves it.
SOLUTIONS = {
    "01": "portable_save",
    "02": "strip_compile_prefix",
    "03": "portable_state_dict",
    "04": "resume_save",
}


def _imports_for(node: ast.FunctionDef, module: ast.Module, source: str) -> list[str]:
    """The module's top-level imports whose names the function uses, as source lines."""
    used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
    lines = []
    for stmt in module.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            bound = {(a.asname or a.name).split(".")[0] for a in stmt.names}
            if bound & used:
                lines.append(ast.get_source_segment(source, stmt) or "")
    return lines


def reveal(exercise: str | int) -> str:
    """Print (and return) the reference solution of an exercise, from ``solutions.py``, with
    the imports it needs: pasted below the stub, the check passes."""
    number = f"{int(exercise):02d}"
    if number not in SOLUTIONS:
        raise ValueError(f"no exercise {exercise!r}; the exercises are {', '.join(SOLUTIONS)}")
    path = shipped("solutions") / "solutions.py"
    source = path.read_text(encoding="utf-8")
    module = ast.parse(source)
    node = next(
        n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == SOLUTIONS[number]
    )
    imports = "\n".join(_imports_for(node, module, source))
    text = (
        f"# Exercise {number}, a solution ({path.name}): paste it below your stub, run the cell"
        f"\n{imports}\n\n\n{ast.get_source_segment(source, node)}"
    )
    print(text)
    return text
