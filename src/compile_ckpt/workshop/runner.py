"""Execute the notebooks with papermill and summarise what they recorded.

``make run`` and the tests run notebooks through here, so a notebook runs the same way in
both. Parameters come from the notebook's cell tagged ``parameters`` (read by papermill's
``inspect_notebook``), from YAML files (``-f notebooks/params/smoke.yaml``) and from ``-p NAME
VALUE``; a name no selected notebook defines, or a value of the wrong type, is refused before
anything runs (``--check`` stops there). Each run writes the files of :mod:`.summary`.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import difflib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .record import read_records
from .runfiles import (
    CLAIM,
    RunnerError,
    claim_folder,
    held_by_a_run,
    load_parameter_files,
    refuse_a_used,
    yaml_value,
)
from .summary import SCHEMA, NotebookRun, git_commit, one_line, write_index_html, write_summary

__all__ = ["CLAIM", "SCHEMA", "NotebookRun", "RunnerError", "claim_folder", "held_by_a_run",
           "load_parameter_files", "main", "notebooks_in", "parameters_cell", "plan",
           "run_notebook", "this_python_kernel", "yaml_value"]
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
KERNEL = "compile-ckpt"
_TYPES = {"int": int, "float": (int, float), "str": str, "bool": bool, "list": list, "dict": dict}
Plan = list[tuple[Path, dict[str, Any] | None, str]]


def _hint(name: str, known: list[str]) -> str:
    """`` (did you mean 'batch_size'?)`` for a name close to a known one (or, failing that,
    the known names that contain it), else ``""``."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.7)
    close = close or sorted(k for k in known if name.lower() in k)[:3]
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def parameters_cell(notebook: str | Path) -> dict[str, tuple[Any, str]]:
    """``name -> (default, annotated type)`` of the cell tagged ``parameters``, as papermill
    reads it; ``ValueError`` naming the notebook unless there is exactly one such cell and it
    holds only ``name: type = literal`` lines."""
    import papermill as pm

    try:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError) as exc:
        raise ValueError(f"{notebook}: not a readable notebook ({exc})") from None
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{notebook}: expected one cell tagged 'parameters', found {len(tagged)}")
    for node in ast.parse("".join(tagged[0]["source"])).body:  # papermill skips these silently
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name):
            raise ValueError(f"{notebook}: parameters cell line {node.lineno}: write `name: type "
                             "= literal`")
    values = {}
    for name, p in pm.inspect_notebook(str(notebook)).items():
        try:
            values[name] = (ast.literal_eval(p["default"]), p["inferred_type_name"])
        except (ValueError, SyntaxError):
            raise ValueError(f"{notebook}: parameter {name!r} is not a literal") from None
    return values


def check_parameters(notebook: Path, given: Mapping[str, Any]) -> None:
    """Refuse names the notebook does not define and values of another type than annotated."""
    known = parameters_cell(notebook)
    unknown = sorted(set(given) - set(known))
    if unknown:
        named = ", ".join(f"{n!r}{_hint(n, list(known))}" for n in unknown)
        raise RunnerError(f"{notebook.name}: unknown parameter(s) {named}; it defines "
                          f"{sorted(known)}")
    for name, value in given.items():
        kind, want = _TYPES.get(known[name][1]), known[name][1]
        if kind and (not isinstance(value, kind) or (want != "bool" and isinstance(value, bool))):
            raise RunnerError(f"{notebook.name}: parameter {name!r} must be {want}, got {value!r}")


@contextmanager
def this_python_kernel(env: Mapping[str, str] | None = None) -> Iterator[str]:
    """A kernelspec named ``compile-ckpt`` that runs *this* interpreter with figures inline
    and ``env`` set (in the kernel, not here), found first on ``JUPYTER_PATH`` while inside."""
    with tempfile.TemporaryDirectory(prefix="compile-ckpt-kernel-") as tmp:
        spec = Path(tmp) / "kernels" / KERNEL
        spec.mkdir(parents=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python (compile-ckpt)", "language": "python",
            "env": {"MPLBACKEND": INLINE_BACKEND, **(env or {})}}))
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = os.pathsep.join([tmp, *([old] if old else [])])
        try:
            yield KERNEL
        finally:
            if old is None:
                del os.environ["JUPYTER_PATH"]
            else:
                os.environ["JUPYTER_PATH"] = old


def _ipc_kernel_manager(sockets: str) -> type:
    """papermill's kernel manager, talking to the kernel over local sockets (IPC) in the private
    folder ``sockets`` instead of TCP on localhost: nothing listens on the network, concurrent
    runs cannot collide, and ipykernel has no reason to warn that TCP is unencrypted. TCP where
    the folder's path is too long for a socket's name."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    if len(sockets) > 80:  # a Unix socket's path holds about 104 bytes
        return AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        def _ip_default(self) -> str:  # the sockets' path prefix (jupyter_client's default
            return os.path.join(sockets, "kernel")  # is relative: the notebook's folder)

    return IPCKernelManager


def failure(exc: BaseException) -> tuple[str, int | None]:
    """``("RuntimeError: <its message>", 3)``: what a failed run raised and the cell it ran in
    (its ``In [3]`` label), not papermill's banner; the cell is None when no cell raised."""
    if getattr(exc, "ename", None):  # papermill's PapermillExecutionError: the cell's exception
        return f"{exc.ename}: {exc.evalue}"[:2000], getattr(exc, "exec_count", None)
    return f"{type(exc).__name__}: {exc}"[:2000], None


def _unexecuted(output: Path) -> int:
    cells = json.loads(output.read_text(encoding="utf-8"))["cells"]
    return sum(1 for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()
               and c.get("execution_count") is None)


def run_notebook(notebook: str | Path, output: str | Path,
                 parameters: Mapping[str, Any] | None = None, *, timeout: int = 900,
                 raise_on_error: bool = True, workdir: str | Path | None = None) -> NotebookRun:
    """Execute ``notebook`` into ``output`` with papermill in this interpreter's kernel (whose
    ``COMPILE_CKPT_WORKDIR`` is ``workdir``, if given); return its records. A notebook whose
    cells did not all run (a ``sys.exit``) is "stopped early"."""
    import papermill as pm

    notebook, output, parameters = Path(notebook), Path(output), dict(parameters or {})
    check_parameters(notebook, parameters)
    output.parent.mkdir(parents=True, exist_ok=True)
    t0, status, error, cell = time.perf_counter(), "ok", "", None
    env = {"COMPILE_CKPT_WORKDIR": str(workdir)} if workdir else {}
    try:
        with this_python_kernel(env) as kernel, tempfile.TemporaryDirectory(
                prefix="ckpt-ipc-") as sockets:
            pm.execute_notebook(str(notebook), str(output), parameters=parameters,
                                kernel_name=kernel, cwd=str(notebook.parent), progress_bar=False,
                                execution_timeout=timeout,
                                kernel_manager_class=_ipc_kernel_manager(sockets))
        left = _unexecuted(output)
        if left:
            status, error = "stopped early", f"{left} code cell(s) never ran (a cell ended the run)"
    except Exception as exc:  # noqa: BLE001 - recorded in the summary, re-raised for tests
        (error, cell), status = failure(exc), "failed"
        if raise_on_error:
            raise
    records = read_records(output) if output.exists() else {}
    return NotebookRun(notebook.stem, str(output), status, round(time.perf_counter() - t0, 1),
                       records, parameters, error, cell)


def notebooks_in(directory: str | Path) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``), in order."""
    return sorted(Path(directory).glob("[0-9][0-9]_*.ipynb"))


def plan(selected: list[Path], files: dict[str, dict[str, Any]], overrides: dict[str, Any],
         every: list[Path] | None = None) -> Plan:
    """Each selected notebook with its parameters (``all`` < file entry by number < by name <
    ``-p``), or ``None`` and why it cannot run (no readable parameters cell: a failed row; the
    others still run). Refused before anything runs: a file entry for no existing notebook, a
    name no notebook defines, a ``-p`` no selected notebook defines, a value of a wrong type."""
    every = every or selected
    known, broken = {}, {}
    for nb in sorted(set(every) | set(selected)):
        try:
            known[nb] = parameters_cell(nb)
        except (ValueError, SyntaxError) as exc:
            broken[nb] = str(exc)
    stray = sorted(set(files) - {nb.stem for nb in every} - {nb.stem[:2] for nb in every} - {"all"})
    if stray:
        raise RunnerError(f"parameter files name notebooks that do not exist: {stray}")
    every_name = sorted({n for k in known.values() for n in k})
    for name in files.get("all", {}):
        if name not in every_name:
            raise RunnerError(f"no notebook defines a parameter {name!r}{_hint(name, every_name)}"
                              " (parameter file, 'all')")
    chosen_names = sorted({n for nb in selected for n in known.get(nb, {})})
    for name in overrides:
        if name not in chosen_names:
            raise RunnerError(f"-p {name}: no selected notebook defines it"
                              f"{_hint(name, chosen_names)}")
    out: Plan = []
    for nb in selected:
        if nb in broken:
            out.append((nb, None, broken[nb]))
            continue
        params = {k: v for k, v in files.get("all", {}).items() if k in known[nb]}
        params.update({**files.get(nb.stem[:2], {}), **files.get(nb.stem, {})})
        params.update({k: v for k, v in overrides.items() if k in known[nb]})
        check_parameters(nb, params)
        out.append((nb, params, ""))
    return out


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m compile_ckpt.workshop.runner",
                                 description="Run the notebooks with papermill; summarise them.")
    ap.add_argument("--notebooks", default="notebooks", help="folder of NN_name.ipynb notebooks")
    ap.add_argument("--out", default=None,
                    help="output folder (default runs/<UTC timestamp>); one that holds a run "
                         "already is refused")
    ap.add_argument("--only", nargs="*", default=[], help="notebook name prefixes (e.g. 00 03)")
    ap.add_argument("-f", "--parameters-file", action="append", default=[],
                    help="YAML parameter file (repeatable)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                    metavar=("NAME", "VALUE"),
                    help="a parameter for every selected notebook that defines it (read as YAML)")
    ap.add_argument("--timeout", type=int, default=1800, help="per-cell timeout in seconds")
    ap.add_argument("--check", action="store_true",
                    help="check notebooks and parameters, print the plan, run nothing")
    return ap.parse_args(argv)


def _prepare(args: argparse.Namespace, started: dt.datetime) -> tuple[Plan, Path]:
    """What to run and where, or ``RunnerError``/``OSError``: nothing runs."""
    folder = Path(args.notebooks)
    if not folder.is_dir():
        raise RunnerError(f"--notebooks {folder}: no such folder")
    found = notebooks_in(folder)
    chosen = [nb for nb in found if not args.only or any(nb.name.startswith(p) for p in args.only)]
    if not chosen:
        raise RunnerError(f"no notebook matches {args.only or 'NN_*.ipynb'} in {folder}; there "
                          f"are {[nb.stem for nb in found] or 'none'}")
    overrides = {name: yaml_value(name, value) for name, value in args.parameter}
    todo = plan(chosen, load_parameter_files(args.parameters_file), overrides, found)
    if args.check:  # a check writes nothing, but says what a run would refuse
        if args.out and Path(args.out).is_dir():
            refuse_a_used(Path(args.out).resolve())
        return todo, Path(args.out or "runs").resolve()
    return todo, claim_folder(args.out, started)


def devices(todo: Plan) -> tuple[str, str]:
    """The ``device`` values the notebooks were given (their default where not) and what they
    are on this machine: ``("auto", "cpu")``, ``("cuda", "none ('cuda' was asked for, but this
    machine has no CUDA GPU …)")``."""
    from .env import device_problem, resolve_device

    def used(value: str) -> str:
        if value == "auto":
            return str(resolve_device("auto"))
        try:
            problem = device_problem(value)
        except ValueError as exc:
            problem = str(exc)
        return f"none ({problem})" if problem else value

    given = [(p, parameters_cell(nb)) for nb, p, _ in todo if p is not None]
    asked = sorted({str(p.get("device", known["device"][0])) for p, known in given
                    if "device" in known})
    if not asked:
        return "none (no notebook here has a device parameter)", "-"
    return ", ".join(asked), ", ".join(dict.fromkeys(map(used, asked)))


def _console(r: NotebookRun) -> str:
    """The line a job's log shows for a finished notebook, with the cause when it failed."""
    where = f" at cell [{r.error_cell}]" if r.error_cell is not None else ""
    cause = f": {one_line(r.error, 400)}" if r.error else ""
    return f"  {r.status} in {r.wall_s:.1f}s ({len(r.records)} records){where}{cause}"


def _flat(exc: BaseException) -> str:
    return " ".join(str(exc).splitlines())


def main(argv: list[str] | None = None) -> int:
    """Run the selected notebooks into ``runs/<UTC timestamp>/`` and summarise them
    (``--check``: only check and print the plan)."""
    from .env import versions

    args, started = _arguments(argv), dt.datetime.now(dt.UTC)
    try:
        todo, out = _prepare(args, started)
    except (RunnerError, ValueError) as exc:  # one line: a log's last line says it all
        print(f"runner: error: {_flat(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"runner: error: cannot write the output folder: {_flat(exc)}", file=sys.stderr)
        return 2
    asked, used = devices(todo)
    if args.check:
        for nb, params, why in todo:
            print(f"would run {nb.name}" + (f" {params}" if params else "") if params is not None
                  else f"cannot run {nb.name}: {why}")
        print(f"device asked for: {asked}; on this machine: {used}")
        return 0 if all(params is not None for _, params, _ in todo) else 1
    runs = []
    for nb, params, why in todo:
        if params is None:
            print(f"not running {nb.name}: {why}", flush=True)
            runs.append(NotebookRun(nb.stem, str(out / nb.name), "failed", 0.0, {}, {}, why))
            continue
        print(f"running {nb.name}" + (f" {params}" if params else "") + " ...", flush=True)
        r = run_notebook(nb, out / nb.name, params, timeout=args.timeout, raise_on_error=False,
                         workdir=out / "artifacts")
        print(_console(r), flush=True)
        runs.append(r)
    meta = {"started_utc": started.isoformat(timespec="seconds"),
            "finished_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git_commit": git_commit(), "versions": versions(),
            "device": used, "device_asked": asked,
            "parameters": {"files": args.parameters_file, "overrides": dict(args.parameter)}}
    md, _ = write_summary(runs, out, meta)
    index = write_index_html(runs, out, meta)
    print(md.read_text(encoding="utf-8"))
    print(f"Report: {index}")
    return 0 if all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
