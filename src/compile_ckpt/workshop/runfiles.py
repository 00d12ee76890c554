"""What the runner reads and where it writes: parameter values (``-p``) and files (``-f``),
checked to be plain data and text, and run folders, each claimed by one run alone. Every
problem is a :class:`RunnerError`: one line, exit 2, before anything runs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from .summary import one_line


class RunnerError(Exception):
    """A problem with what was asked (exit 2): nothing was run."""


_PLAIN = (type(None), bool, int, float, str, list, dict)


def _text(value: Any, where: str) -> Any:
    """``value`` with every string made valid text: a surrogate pair (what ``json.dumps`` writes
    for an emoji, which YAML reads as two halves) joined into its character; a lone half
    refused, naming ``where``, and so is a value that is not plain data (a YAML date, set or
    ``!!binary``: a notebook's parameters cell and ``summary.json`` hold none of them)."""
    if not isinstance(value, _PLAIN):
        raise RunnerError(f"{where}: {value!r} is a {type(value).__name__}, not a parameter "
                          "value (text, number, true/false, null, list or mapping; quote it "
                          "to pass it as text)")
    if isinstance(value, str):
        try:
            return value.encode("utf-16", "surrogatepass").decode("utf-16")
        except UnicodeError:
            raise RunnerError(f"{where}: {value!r} holds a lone surrogate, not text") from None
    if isinstance(value, list):
        return [_text(v, where) for v in value]
    if isinstance(value, dict):
        return {_text(k, where): _text(v, where) for k, v in value.items()}
    return value


def yaml_value(name: str, text: str) -> Any:
    """A ``-p NAME VALUE`` value read as YAML (safely: tags never run); ``RunnerError`` in one
    line when it is not YAML or not text."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # 2024-13-45, [[[[…
        raise RunnerError(f"-p {name}: {one_line(repr(text), 120)} is not a YAML value "
                          f"({one_line(str(exc), 160)})") from None
    return _text(value, f"-p {name}")


def load_parameter_files(files: list[str]) -> dict[str, dict[str, Any]]:
    """``{"all" | notebook stem or number: {name: value}}`` merged from YAML files, later wins."""
    import yaml

    merged: dict[str, dict[str, Any]] = {}
    for f in files:
        try:
            data = _text(yaml.safe_load(Path(f).read_text(encoding="utf-8")) or {}, f"-f {f}")
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError) as exc:
            raise RunnerError(f"-f {f}: cannot read it ({one_line(str(exc), 200)})") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise RunnerError(f"-f {f}: expected a mapping of notebook (or 'all') to a mapping "
                              "of parameters")
        for key, values in data.items():
            merged.setdefault(str(key), {}).update(values)
    return merged


CLAIM = ".run"  # created exclusively in a run folder: two runs never share one
RUN_FILES = (CLAIM, "summary.json", "summary.md", "index.html", "artifacts")


def held_by_a_run(folder: Path) -> str | None:
    """What in ``folder`` shows that a run wrote there (its claim, a report, its artifacts, an
    executed notebook or its page), or None: it is free."""
    held = [n for n in RUN_FILES if (folder / n).exists()]
    held += sorted(p.name for p in (*folder.glob("*.ipynb"), *folder.glob("*.html")))
    return held[0] if held else None


def claim_folder(out: str | None, started: dt.datetime) -> Path:
    """The run's folder, claimed for it alone: the default ``runs/<UTC timestamp>`` (``-2``,
    ``-3``, … when a run started in the same second holds it), or ``out``, refused
    (``RunnerError``) when it holds a run already. ``OSError``: it cannot be written."""
    if out is None:
        base = (Path("runs") / started.strftime("%Y%m%dT%H%M%SZ")).resolve()
        base.parent.mkdir(parents=True, exist_ok=True)
        for n in range(1, 1000):
            folder = base if n == 1 else base.with_name(f"{base.name}-{n}")
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            (folder / CLAIM).touch(exist_ok=False)
            return folder
        raise RunnerError(f"{base}: 999 runs started in this second already")
    folder = Path(out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    refuse_a_used(folder)
    try:
        (folder / CLAIM).touch(exist_ok=False)  # the claim itself: only one run creates it
    except FileExistsError:  # another run claimed it since the look just before
        refuse_a_used(folder)
        raise
    return folder


def refuse_a_used(folder: Path) -> None:
    """``RunnerError`` when ``folder`` holds a run already."""
    held = held_by_a_run(folder)
    if held:
        raise RunnerError(f"--out {folder}: it holds a run already ({held}); nothing was "
                          "changed. Choose a new folder, or delete that one first")
