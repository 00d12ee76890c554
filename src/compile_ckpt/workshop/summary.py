"""What a notebook run leaves for people and machines: ``summary.json`` (schema
:data:`SCHEMA`), ``summary.md``, ``index.html`` and one HTML page per executed notebook."""

from __future__ import annotations

import dataclasses
import html
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .record import MIME
from .record import TAG as RECORD_TAG

SCHEMA = "compile-ckpt/run-summary/1"


@dataclasses.dataclass
class NotebookRun:
    """The outcome of one executed notebook."""

    name: str
    output: str
    status: str  # ok, failed, stopped early
    wall_s: float
    records: dict[str, Any]
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str = ""  # "RuntimeError: <message>": what the failing cell raised
    error_cell: int | None = None  # the failing cell's execution count: "In [3]" on its page

    def headline(self) -> str:
        """``failed in cell [3]``, or the status alone."""
        cell = self.error_cell
        return self.status + (f" in cell [{cell}]" if cell is not None else "")

    def outcome(self, width: int = 200) -> str:
        """``failed in cell [3]: RuntimeError: …`` on one line, cut to ``width``."""
        return self.headline() + (f": {one_line(self.error, width)}" if self.error else "")


def one_line(text: str, width: int) -> str:
    """``text`` with its whitespace runs made single spaces, cut to ``width`` with "…"."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def git_commit() -> str:
    """The commit this package runs from, or "" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


def md_cell(text: str) -> str:
    """``text`` safe in a Markdown table cell: one line, HTML escaped, ``|`` escaped."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def md_fence(text: str) -> list[str]:
    """``text`` as a fenced block that no backticks inside it can close."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [f"  {fence}text", *(f"  {line}" for line in text.splitlines()), f"  {fence}"]


def run_line(meta: dict[str, Any]) -> str:
    """``<finished> UTC, commit <sha>, torch <version>.``: the run's first line everywhere."""
    return (f"{meta['finished_utc']} UTC, commit {meta['git_commit'][:10] or '?'}, torch "
            f"{meta['versions'].get('torch')}.")


def _shown(records: dict[str, Any]) -> dict[str, str]:
    """The scalar records, formatted for a table."""
    return {k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in records.items()
            if isinstance(v, (bool, int, float)) or (isinstance(v, str) and len(v) <= 60)}


def write_summary(runs: list[NotebookRun], out_dir: Path, meta: dict[str, Any]
                  ) -> tuple[Path, Path]:
    """``summary.json`` (run metadata, parameters, paths relative to the run folder, every
    record) and ``summary.md`` (one row per notebook, then what was not ok and why)."""
    def rel(path: str | Path) -> str:
        return os.path.relpath(path, out_dir)

    notebooks = [{**dataclasses.asdict(r), "output": rel(r.output),
                  "html": rel(Path(r.output).with_suffix(".html"))} for r in runs]
    js = out_dir / "summary.json"
    js.write_text(json.dumps({"schema": SCHEMA, **meta, "notebooks": notebooks}, indent=2,
                             default=str), encoding="utf-8")
    lines = ["# Notebook run summary", "",
             md_cell(f"{run_line(meta)} {device_line(meta)}"), "",
             "| notebook | status | wall time (s) | key recorded values |", "|---|---|---|---|"]
    for r in runs:
        keys = md_cell("; ".join(f"{k}={v}" for k, v in _shown(r.records).items()) or "-")
        page = quote(Path(r.output).with_suffix(".html").name)  # a link target: no ) or space
        lines.append(f"| [{md_cell(r.name)}]({page}) | {md_cell(r.outcome())} | "
                     f"{r.wall_s:.1f} | {keys} |")
    failed = [r for r in runs if r.status != "ok"]
    if failed:
        lines += ["", "## Not ok", ""]
        for r in failed:
            lines += [f"- **{md_cell(r.name)}** {md_cell(r.headline())}:", "",
                      *md_fence(r.error), ""]
    md = out_dir / "summary.md"
    # backslashreplace: a notebook can record a lone surrogate, which UTF-8 cannot hold
    md.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="backslashreplace")
    return md, js


def write_page(output: Path) -> Path:
    """The HTML page of an executed notebook as a learner sees it: the trailing cells tagged
    ``record`` and the recorded values left out."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(output, as_version=4)
    nb.cells = [c for c in nb.cells if RECORD_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in nb.cells:
        cell["outputs"] = [o for o in cell.get("outputs", []) if MIME not in o.get("data", {})]
    widgets_as_text(nb)
    body, _ = HTMLExporter().from_notebook_node(nb)
    page = output.with_suffix(".html")
    page.write_text(body, encoding="utf-8", errors="backslashreplace")
    return page


def _widget_text(state: dict[str, Any], model_id: str) -> str:
    """A widget's last state as text: a tqdm bar as tqdm prints it, anything else named."""
    model = state.get(model_id, {})
    parts = [state.get(c.removeprefix("IPY_MODEL_"), {})
             for c in model.get("state", {}).get("children", [])]
    names = [p.get("model_name") for p in parts]
    if names != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return "[an interactive widget: open the notebook in JupyterLab to use it]"
    left, bar, right = (p.get("state", {}) for p in parts)
    done = (bar.get("value") or 0) / (bar.get("max") or 1)
    filled = min(10, max(0, round(10 * done)))
    text = f"{left.get('value', '')}|{'█' * filled}{' ' * (10 - filled)}|{right.get('value', '')}"
    return html.unescape(text).replace("\u2007", " ")


def widgets_as_text(nb: Any) -> None:
    """Replace each widget output by the text of its last state (a static page cannot run
    widgets: without this a progress bar reads 0%, the state it had when first displayed)."""
    view = "application/vnd.jupyter.widget-view+json"
    state = nb.metadata.pop("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if view in data:
                text = _widget_text(state.get("state", {}), data[view].get("model_id", ""))
                out["data"] = {"text/plain": text}


def device_line(meta: dict[str, Any]) -> str:
    """``Device asked for: cuda; used: none (…).`` from a run's metadata."""
    return f"Device asked for: {meta.get('device_asked', '?')}; used: {meta.get('device', '?')}."


def write_index_html(runs: list[NotebookRun], out_dir: Path, meta: dict[str, Any]) -> Path:
    """``index.html``: the device line, the summary table (a failed notebook's exception and
    cell in its status) linking each executed notebook's page."""
    rows = []
    for r in runs:
        link = html.escape(r.name)
        if Path(r.output).exists():
            page = write_page(Path(r.output))
            link = f'<a href="{html.escape(page.name)}">{link}</a>'
        keys = "<br>".join(f"{html.escape(k)} = {html.escape(v)}"
                           for k, v in _shown(r.records).items())
        colour = "#e6f4ea" if r.status == "ok" else "#fce8e6"
        status = html.escape(r.outcome(2000))
        rows.append(f'<tr style="background:{colour}"><td>{link}</td><td class="status">{status}'
                    f"</td><td>{r.wall_s:.1f}</td><td>{keys or '-'}</td></tr>")
    index = out_dir / "index.html"
    index.write_text(
        "<!doctype html><meta charset='utf-8'><title>compile-ckpt notebook run</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:4px 8px;vertical-align:top}table{border-collapse:collapse}"
        ".status{max-width:60em}</style>"
        f"<h1>Notebook run {html.escape(out_dir.name)}</h1>"
        f"<p>{html.escape(run_line(meta))} {html.escape(device_line(meta))}"
        "</p><table><tr><th>notebook</th>"
        "<th>status</th><th>wall time (s)</th><th>key recorded values</th></tr>"
        + "".join(rows) + "</table>", encoding="utf-8", errors="backslashreplace")
    return index
