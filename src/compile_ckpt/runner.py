"""Execute the notebooks with papermill and summarise what they recorded.

Used by ``make run`` (``python -m compile_ckpt.runner``) and by the test suite, so a
notebook runs the same way in both.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .record import read_records

log = logging.getLogger("compile_ckpt")
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


def parameters_cell(notebook: str | Path) -> dict[str, Any]:
    """The literal values of the cell tagged ``parameters`` (raises if absent or not literal)."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook}: expected one cell tagged 'parameters', found {len(cells)}")
    source = "".join(cells[0]["source"])
    values: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, (ast.Assign, ast.AnnAssign))):
            raise ValueError(f"{notebook}: the parameters cell may only assign literals "
                             f"(line {node.lineno})")
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        for t in targets:
            if not isinstance(t, ast.Name):
                raise ValueError(f"{notebook}: parameters cell line {node.lineno} is not a plain name")
            try:
                values[t.id] = ast.literal_eval(node.value)
            except ValueError as exc:
                raise ValueError(f"{notebook}: parameter {t.id!r} is not a literal") from exc
    return values


@dataclasses.dataclass
class NotebookRun:
    """The outcome of one executed notebook."""

    name: str
    output: str
    status: str
    wall_s: float
    records: dict[str, Any]
    error: str = ""


def run_notebook(notebook: str | Path, output: str | Path, parameters: Mapping[str, Any] | None = None,
                 *, timeout: int = 900, kernel: str = "python3", raise_on_error: bool = True
                 ) -> NotebookRun:
    """Execute ``notebook`` into ``output`` with papermill; return its records.

    A parameter that the notebook's parameters cell does not define is an error (papermill
    itself only warns). Figures render inline into the output notebook unless ``MPLBACKEND``
    says otherwise (the tests set ``agg``); the notebook's folder is the working directory.
    """
    import papermill as pm

    notebook, output = Path(notebook), Path(output)
    parameters = dict(parameters or {})
    known = parameters_cell(notebook)
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ValueError(f"{notebook.name}: unknown parameter(s) {unknown}; "
                         f"the parameters cell defines {sorted(known)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    t0 = time.perf_counter()
    status, error = "ok", ""
    try:
        pm.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name=kernel,
                            cwd=str(notebook.parent), progress_bar=False, execution_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - recorded in the summary, re-raised for tests
        status, error = "failed", f"{type(exc).__name__}: {str(exc)[-2000:]}"
        if raise_on_error:
            raise
    wall = time.perf_counter() - t0
    records = read_records(output) if output.exists() else {}
    return NotebookRun(notebook.stem, str(output), status, round(wall, 1), records, error)


def _scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 60)


def write_summary(runs: list[NotebookRun], out_dir: Path) -> tuple[Path, Path]:
    """``summary.json`` (everything) and ``summary.md`` (one row per notebook)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "summary.json"
    js.write_text(json.dumps([dataclasses.asdict(r) for r in runs], indent=2, default=str))
    lines = ["# Notebook run summary", "", f"Written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC}.", "",
             "| notebook | status | wall time (s) | key recorded values |", "|---|---|---|---|"]
    for r in runs:
        keys = "; ".join(f"{k}={_fmt(v)}" for k, v in r.records.items() if _scalar(v)) or "-"
        lines.append(f"| [{r.name}]({Path(r.output).name}) | {r.status} | {r.wall_s:.1f} | {keys} |")
    failed = [r for r in runs if r.status != "ok"]
    if failed:
        lines += ["", "## Failures", ""] + [f"- **{r.name}**: `{r.error[:500]}`" for r in failed]
    md = out_dir / "summary.md"
    md.write_text("\n".join(lines) + "\n")
    return md, js


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_index_html(runs: list[NotebookRun], out_dir: Path) -> Path:
    """``index.html``: the summary table and a link to each executed notebook as HTML."""
    import html

    from nbconvert import HTMLExporter

    exporter = HTMLExporter()
    rows = []
    for r in runs:
        nb_path = Path(r.output)
        link = html.escape(r.name)
        if nb_path.exists():
            body, _ = exporter.from_filename(str(nb_path))
            page = nb_path.with_suffix(".html")
            page.write_text(body, encoding="utf-8")
            link = f'<a href="{html.escape(page.name)}">{html.escape(r.name)}</a>'
        keys = "<br>".join(f"{html.escape(k)} = {html.escape(_fmt(v))}" for k, v in r.records.items() if _scalar(v))
        colour = "#e6f4ea" if r.status == "ok" else "#fce8e6"
        rows.append(f'<tr style="background:{colour}"><td>{link}</td><td>{html.escape(r.status)}</td>'
                    f"<td>{r.wall_s:.1f}</td><td>{keys or '-'}</td></tr>")
    index = out_dir / "index.html"
    index.write_text(
        "<!doctype html><meta charset='utf-8'><title>compile-ckpt notebook run</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px;"
        "vertical-align:top}table{border-collapse:collapse}</style>"
        f"<h1>Notebook run {html.escape(out_dir.name)}</h1>"
        "<table><tr><th>notebook</th><th>status</th><th>wall time (s)</th><th>key recorded values</th></tr>"
        + "".join(rows) + "</table>", encoding="utf-8")
    return index


def notebooks_in(directory: str | Path) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``), in order."""
    return sorted(p for p in Path(directory).glob("[0-9][0-9]_*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    """Run every notebook with its defaults into ``runs/<UTC timestamp>/`` and summarise."""
    ap = argparse.ArgumentParser(prog="python -m compile_ckpt.runner", description=main.__doc__)
    ap.add_argument("--notebooks", default="notebooks")
    ap.add_argument("--out", default=None, help="output folder (default runs/<UTC timestamp>)")
    ap.add_argument("--only", nargs="*", help="notebook name prefixes to run (e.g. 00 03)")
    ap.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out or Path("runs") / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
    out = out.resolve()
    runs = []
    for nb in notebooks_in(args.notebooks):
        if args.only and not any(nb.name.startswith(p) for p in args.only):
            continue
        log.info("running %s ...", nb.name)
        os.environ["COMPILE_CKPT_WORKDIR"] = str(out / "artifacts")
        r = run_notebook(nb, out / nb.name, timeout=args.timeout, raise_on_error=False)
        log.info("  %s in %.1fs (%d records)", r.status, r.wall_s, len(r.records))
        runs.append(r)
    md, _ = write_summary(runs, out)
    index = write_index_html(runs, out)
    print(md.read_text())
    print(f"Report: {index}")
    print(f"Executed notebooks and summary in {out}")
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
