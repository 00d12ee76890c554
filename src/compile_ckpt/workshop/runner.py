"""Execute the notebooks with papermill and summarise what they recorded.

``make run`` and the tests run notebooks through here, so a notebook runs the same way in
both. Parameters come from the notebook's cell tagged ``parameters``, from YAML files
(``-f notebooks/params/smoke.yaml``) and from ``-p NAME VALUE``; a name that no selected
notebook defines, or a value of the wrong type, is refused before anything runs. Each run
writes ``summary.json`` (schema :data:`SCHEMA`), ``summary.md``, ``index.html`` and one
HTML page per notebook.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .record import MIME, RECORDED, read_records
from .record import TAG as RECORD_TAG

SCHEMA = "compile-ckpt/run-summary/1"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
KERNEL = "compile-ckpt"
_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": list, "dict": dict}


class RunnerError(Exception):
    """A problem with what was asked (exit 2): nothing was run."""


def parameters_cell(notebook: str | Path) -> dict[str, tuple[Any, str]]:
    """``name -> (default, annotated type name)`` from the cell tagged ``parameters``; raises
    ``ValueError`` naming the notebook if there is none, or it holds anything but literals."""
    try:
        nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{notebook}: not a readable notebook ({exc})") from None
    cells = [c for c in nb.get("cells", []) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook}: expected one cell tagged 'parameters', found {len(cells)}")
    values: dict[str, tuple[Any, str]] = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            raise ValueError(f"{notebook}: parameters cell line {node.lineno}: write `name: type = literal`")
        try:
            values[node.target.id] = (ast.literal_eval(node.value), ast.unparse(node.annotation))
        except ValueError:
            raise ValueError(f"{notebook}: parameter {node.target.id!r} is not a literal") from None
    return values


def check_parameters(notebook: Path, given: Mapping[str, Any]) -> None:
    """Refuse names the notebook does not define and values of another type than annotated."""
    known = parameters_cell(notebook)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise RunnerError(f"{notebook.name}: unknown parameter(s) {unknown}; it defines {sorted(known)}")
    for name, value in given.items():
        kind = _TYPES.get(known[name][1])
        if kind and (not isinstance(value, kind) or (known[name][1] != "bool" and isinstance(value, bool))):
            raise RunnerError(f"{notebook.name}: parameter {name!r} must be {known[name][1]}, got {value!r}")


@contextmanager
def this_python_kernel() -> Iterator[str]:
    """A kernelspec named ``compile-ckpt`` that runs *this* interpreter, found first on
    ``JUPYTER_PATH`` while inside, whatever other kernels of that name exist."""
    with tempfile.TemporaryDirectory(prefix="compile-ckpt-kernel-") as tmp:
        spec = Path(tmp) / "kernels" / KERNEL
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python (compile-ckpt)", "language": "python"}))
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.pathsep.join([tmp, *([old] if old else [])])
        try:
            yield KERNEL
        finally:
            if old is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = old


@dataclasses.dataclass
class NotebookRun:
    """The outcome of one executed notebook."""

    name: str
    output: str
    status: str  # ok, failed, stopped early, not run
    wall_s: float
    records: dict[str, Any]
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str = ""


def _unexecuted(output: Path) -> int:
    nb = json.loads(output.read_text(encoding="utf-8"))
    return sum(1 for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()
               and c.get("execution_count") is None)


def run_notebook(notebook: str | Path, output: str | Path, parameters: Mapping[str, Any] | None = None,
                 *, timeout: int = 900, raise_on_error: bool = True) -> NotebookRun:
    """Execute ``notebook`` into ``output`` with papermill, in this interpreter's kernel; return
    its records. A notebook whose cells did not all run (a ``sys.exit``) is "stopped early"."""
    import papermill as pm

    notebook, output = Path(notebook), Path(output)
    parameters = dict(parameters or {})
    check_parameters(notebook, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MPLBACKEND", INLINE_BACKEND)
    t0 = time.perf_counter()
    status, error = "ok", ""
    try:
        with this_python_kernel() as kernel:
            pm.execute_notebook(str(notebook), str(output), parameters=parameters, kernel_name=kernel,
                                cwd=str(notebook.parent), progress_bar=False, execution_timeout=timeout)
        left = _unexecuted(output)
        if left:
            status, error = "stopped early", f"{left} code cell(s) never ran (a cell ended the kernel's run)"
    except Exception as exc:  # noqa: BLE001 - recorded in the summary, re-raised for tests
        status, error = "failed", f"{type(exc).__name__}: {str(exc)[-2000:]}"
        if raise_on_error:
            raise
    records = read_records(output) if output.exists() else {}
    return NotebookRun(notebook.stem, str(output), status, round(time.perf_counter() - t0, 1), records,
                       parameters, error)


def run_cells(notebook: str | Path, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run a notebook's code cells as plain Python in this process (no Jupyter: for a GPU image
    that has only torch) and return what it recorded. ``%%writefile PATH`` cells write their
    file; ``display`` prints."""
    notebook = Path(notebook)
    parameters = dict(parameters or {})
    check_parameters(notebook, parameters)
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    namespace: dict[str, Any] = {"__name__": "__main__", "display": lambda *objs: print(*objs)}
    RECORDED.clear()
    cwd = os.getcwd()
    os.chdir(notebook.parent)
    try:
        for i, cell in enumerate(c for c in nb["cells"] if c["cell_type"] == "code"):
            source = "".join(cell["source"])
            if source.startswith("%%writefile"):
                line, _, body = source.partition("\n")
                Path(eval(f"f{line.split(None, 1)[1]!r}", namespace)).write_text(body + "\n")  # noqa: S307
                continue
            exec(compile(source, f"{notebook.name}[{i}]", "exec"), namespace)  # noqa: S102
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                namespace.update(parameters)
    finally:
        os.chdir(cwd)
    return dict(RECORDED)


def _run_plain(notebook: Path, out: Path, parameters: dict[str, Any]) -> NotebookRun:
    t0 = time.perf_counter()
    try:
        records, status, error = run_cells(notebook, parameters), "ok", ""
    except Exception as exc:  # noqa: BLE001 - recorded in the summary
        records, status, error = dict(RECORDED), "failed", f"{type(exc).__name__}: {str(exc)[-2000:]}"
    return NotebookRun(notebook.stem, str(out / notebook.name), status, round(time.perf_counter() - t0, 1), records,
                       parameters, error)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except OSError:
        return ""


def write_summary(runs: list[NotebookRun], out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """``summary.json`` (schema :data:`SCHEMA`: run metadata, parameters, paths relative to the
    run folder, every record) and ``summary.md`` (one row per notebook)."""
    def rel(path: str) -> str:
        return os.path.relpath(path, out_dir)

    notebooks = [{**dataclasses.asdict(r), "output": rel(r.output), "html": rel(str(Path(r.output).with_suffix(
        ".html")))} for r in runs]
    js = out_dir / "summary.json"
    js.write_text(json.dumps({"schema": SCHEMA, **meta, "notebooks": notebooks}, indent=2, default=str))
    lines = ["# Notebook run summary", "", f"{meta['finished_utc']} UTC, commit {meta['git_commit'][:10] or '?'}, "
             f"torch {meta['versions'].get('torch')}, {meta['device']}.", "",
             "| notebook | status | wall time (s) | key recorded values |", "|---|---|---|---|"]
    for r in runs:
        keys = "; ".join(f"{k}={_fmt(v)}" for k, v in r.records.items() if _scalar(v)) or "-"
        lines.append(f"| [{r.name}]({Path(r.output).with_suffix('.html').name}) | {r.status} | {r.wall_s:.1f} | "
                     f"{keys} |")
    failed = [r for r in runs if r.status != "ok"]
    if failed:
        lines += ["", "## Not ok", ""] + [f"- **{r.name}** ({r.status}): `{r.error[:500]}`" for r in failed]
    md = out_dir / "summary.md"
    md.write_text("\n".join(lines) + "\n")
    return md, js


def _scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 60)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_index_html(runs: list[NotebookRun], out_dir: Path) -> Path:
    """``index.html``: the summary table and, per executed notebook, an HTML page of what a
    learner sees (the trailing cells tagged ``record`` and their outputs left out)."""
    import html

    import nbformat
    from nbconvert import HTMLExporter

    rows = []
    for r in runs:
        link = html.escape(r.name)
        if Path(r.output).exists():
            nb = nbformat.read(r.output, as_version=4)
            nb.cells = [c for c in nb.cells if RECORD_TAG not in c.get("metadata", {}).get("tags", [])]
            for cell in nb.cells:
                cell["outputs"] = [o for o in cell.get("outputs", []) if MIME not in o.get("data", {})]
            body, _ = HTMLExporter().from_notebook_node(nb)
            page = Path(r.output).with_suffix(".html")
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
    return sorted(Path(directory).glob("[0-9][0-9]_*.ipynb"))


def load_parameter_files(files: list[str]) -> dict[str, dict[str, Any]]:
    """``{"all" | notebook stem or number: {name: value}}`` merged from YAML files, later wins."""
    import yaml

    merged: dict[str, dict[str, Any]] = {}
    for f in files:
        try:
            data = yaml.safe_load(Path(f).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise RunnerError(f"-f {f}: cannot read it ({exc})") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise RunnerError(f"-f {f}: expected a mapping of notebook (or 'all') to a mapping of parameters")
        for key, values in data.items():
            merged.setdefault(str(key), {}).update(values)
    return merged


def _readable(notebooks: list[Path]) -> tuple[dict[Path, dict[str, tuple[Any, str]]], dict[Path, str]]:
    known, broken = {}, {}
    for nb in notebooks:
        try:
            known[nb] = parameters_cell(nb)
        except (ValueError, SyntaxError) as exc:
            broken[nb] = str(exc)
    return known, broken


def plan(selected: list[Path], files: dict[str, dict[str, Any]], overrides: dict[str, Any],
         every: list[Path] | None = None) -> list[tuple[Path, dict[str, Any] | None, str]]:
    """Each selected notebook with its parameters (``all`` < file entry by number < by name <
    ``-p``), or ``None`` and why it cannot run (no readable parameters cell: a failed row, the
    others still run). Refused before anything runs: a file entry for a notebook that does not
    exist, a name that no notebook defines, a ``-p`` that no selected notebook defines, a value
    of the wrong type."""
    every = every or selected
    known, broken = _readable(sorted(set(every) | set(selected)))
    stray = sorted(set(files) - ({nb.stem for nb in every} | {nb.stem[:2] for nb in every} | {"all"}))
    if stray:
        raise RunnerError(f"parameter files name notebooks that do not exist: {stray}")
    for name in files.get("all", {}):
        if not any(name in k for k in known.values()):
            raise RunnerError(f"no notebook defines a parameter {name!r} (parameter file, 'all')")
    for name in overrides:
        if not any(name in known.get(nb, {}) for nb in selected):
            raise RunnerError(f"-p {name}: no selected notebook defines it")
    out: list[tuple[Path, dict[str, Any] | None, str]] = []
    for nb in selected:
        if nb in broken:
            out.append((nb, None, broken[nb]))
            continue
        params = {k: v for k, v in files.get("all", {}).items() if k in known[nb]}
        params.update(files.get(nb.stem[:2], {}))
        params.update(files.get(nb.stem, {}))
        params.update({k: v for k, v in overrides.items() if k in known[nb]})
        check_parameters(nb, params)
        out.append((nb, params, ""))
    return out


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m compile_ckpt.workshop.runner",
                                 description="Run the notebooks with papermill and summarise them.")
    ap.add_argument("--notebooks", default="notebooks", help="folder of NN_name.ipynb notebooks")
    ap.add_argument("--out", default=None, help="output folder (default runs/<UTC timestamp>)")
    ap.add_argument("--only", nargs="*", default=[], help="notebook name prefixes to run (e.g. 00 03)")
    ap.add_argument("-f", "--parameters-file", action="append", default=[], help="YAML parameter file (repeatable)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter for every selected notebook that defines it (value read as YAML)")
    ap.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")
    ap.add_argument("--no-jupyter", action="store_true",
                    help="run the code cells as plain Python in this process (a GPU image without Jupyter); "
                         "records go to summary.json, no executed notebooks are written")
    return ap.parse_args(argv)


def _selected(folder: Path, only: list[str]) -> list[Path]:
    if not folder.is_dir():
        raise RunnerError(f"--notebooks {folder}: no such folder")
    found = notebooks_in(folder)
    chosen = [nb for nb in found if not only or any(nb.name.startswith(p) for p in only)]
    if not chosen:
        raise RunnerError(f"no notebook matches {only or 'NN_*.ipynb'} in {folder}; "
                          f"there are {[nb.stem for nb in found] or 'none'}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    """Run the selected notebooks into ``runs/<UTC timestamp>/`` and summarise them."""
    import yaml

    from .env import resolve_device, versions

    args = _arguments(argv)
    started = dt.datetime.now(dt.UTC)
    try:
        todo = plan(_selected(Path(args.notebooks), args.only), load_parameter_files(args.parameters_file),
                    {name: yaml.safe_load(value) for name, value in args.parameter}, notebooks_in(args.notebooks))
        out = Path(args.out or Path("runs") / started.strftime("%Y%m%dT%H%M%SZ")).resolve()
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".writable"
        probe.write_text("")
        probe.unlink()
    except (RunnerError, ValueError) as exc:
        print(f"runner: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"runner: error: cannot write the output folder: {exc}", file=sys.stderr)
        return 2
    os.environ["COMPILE_CKPT_WORKDIR"] = str(out / "artifacts")
    runs = []
    for nb, params, why in todo:
        if params is None:
            print(f"not running {nb.name}: {why}", flush=True)
            runs.append(NotebookRun(nb.stem, str(out / nb.name), "failed", 0.0, {}, {}, why))
            continue
        print(f"running {nb.name} {params or ''} ...", flush=True)
        r = (_run_plain(nb, out, params) if args.no_jupyter
             else run_notebook(nb, out / nb.name, params, timeout=args.timeout, raise_on_error=False))
        print(f"  {r.status} in {r.wall_s:.1f}s ({len(r.records)} records){': ' + r.error[:300] if r.error else ''}")
        runs.append(r)
    meta = {"started_utc": started.isoformat(timespec="seconds"),
            "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "git_commit": _git_commit(),
            "versions": versions(), "device": str(resolve_device("auto")),
            "parameters": {"files": args.parameters_file, "overrides": dict(args.parameter)}}
    md, _ = write_summary(runs, out, meta)
    if not args.no_jupyter:
        write_index_html(runs, out)
    print(md.read_text())
    print(f"Report: {out / 'index.html'}")
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
