"""``compile-ckpt``: inspect and clean checkpoints (torch only), run the benchmark (workshop extra).

Exit codes: 0 ok; 1 a problem with a checkpoint (unreadable, corrupt, unsafe, cannot be
written) or a benchmark cut short by its budget; 2 a usage error (unknown command or option,
an output that is a directory or of a format that cannot hold the file, an unusable ``--device``,
the workshop extra missing for ``bench``). Errors are one line on stderr, never a traceback;
``--json`` output is strict JSON (RFC 8259) and bounded in size.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .errors import CheckpointError, UnsupportedContentError
from .formats import read_checkpoint, verify_checkpoint
from .integrity import content_digest
from .keys import WRAPPER_SEGMENTS, Rename, clean_state_dict, describe_renames
from .layout import (
    BARE,
    OPTIMIZER_KEYS,
    SCHEDULER_KEYS,
    find_state_dicts,
    first_entry,
    locate_state_dicts,
)
from .save import save_checkpoint

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2
JSON_LIMIT = 64 * 1024  # characters of --json output, at most


class UsageError(Exception):
    """A mistake in the command line (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep its message short
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def bounded(value: Any, depth: int = 0) -> Any:
    """A JSON-safe, size-bounded copy: tensors described, non-finite floats as strings, long
    strings, lists and dicts cut with a marker."""
    if isinstance(value, torch.Tensor):
        return {"tensor": list(value.shape), "dtype": str(value.dtype).replace("torch.", "")}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= 500 else value[:500] + f"... (+{len(value) - 500} chars)"
    if depth >= 6:
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {str(k): bounded(v, depth + 1) for k, v in items[:100]}
        if len(items) > 100:
            out["..."] = f"{len(items) - 100} more entries"
        return out
    if isinstance(value, (list, tuple, set)):
        seq = list(value)
        more = [f"... {len(seq) - 50} more"] if len(seq) > 50 else []
        return [bounded(v, depth + 1) for v in seq[:50]] + more
    return f"<{type(value).__name__}>"


def dumps(obj: Any) -> str:
    """Strict, bounded JSON for ``--json``."""
    text = json.dumps(bounded(obj), indent=2, allow_nan=False)
    if len(text) > JSON_LIMIT and isinstance(obj, dict) and "metadata" in obj:
        omitted = {**obj, "metadata": "<omitted: too large for --json>"}
        text = json.dumps(bounded(omitted), indent=2, allow_nan=False)
    if len(text) > JSON_LIMIT:
        text = json.dumps({"truncated": True, "head": text[: JSON_LIMIT // 2]}, allow_nan=False)
    return text


def _describe(state: Mapping[str, Any]) -> dict[str, Any]:
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    segments: dict[str, Counter[int]] = {}
    for k in state:
        for depth, part in enumerate(k.split(".")[:-1]):
            if part in WRAPPER_SEGMENTS:
                segments.setdefault(part, Counter())[depth] += 1
    dtypes = Counter(str(t.dtype).removeprefix("torch.") for t in tensors.values())
    return {"tensors": len(tensors),
            "bytes": int(sum(t.numel() * t.element_size() for t in tensors.values())),
            "dtypes": dict(dtypes), "first_keys": list(state)[:5],
            "wrapper_segments": {seg: {"keys": sum(c.values()), "at_depths": sorted(c)}
                                 for seg, c in segments.items()}}


def inspect_checkpoint(path: str | Path) -> dict[str, Any]:
    """Every state dict in the file (layout, tensors, bytes, dtypes, wrapper segments and where
    they occur), what else it holds, its metadata and whether tensors carry checksums."""
    obj = read_checkpoint(path)
    found = find_state_dicts(obj)
    if not found:
        raise CheckpointError("holds no state dict (no dict of named tensors at any level)", path)
    container = isinstance(obj, dict) and BARE not in found
    top = [str(k) for k in obj] if container else []
    return {"path": str(path), "state_dicts": {name: _describe(sd) for name, sd in found.items()},
            "top_level_keys": top,
            "optimizer_state": container and first_entry(obj, OPTIMIZER_KEYS)[1] is not None,
            "scheduler_state": container and first_entry(obj, SCHEDULER_KEYS)[1] is not None,
            "checksums": bool(isinstance(obj, dict) and obj.get("sha256")),
            "metadata": obj.get("metadata", {}) if container else {}}


def _cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_checkpoint(args.path)
    if args.json:
        print(dumps(info))
        return EXIT_OK
    print(f"{info['path']}: {len(info['state_dicts'])} state dict(s)"
          + (f"; top-level keys {info['top_level_keys']}" if info["top_level_keys"] else ""))
    for name, d in info["state_dicts"].items():
        print(f"  [{name}] {d['tensors']} tensors, {d['bytes'] / 2**20:.2f} MiB, "
              f"dtypes {d['dtypes']}")
        for seg, where in d["wrapper_segments"].items():
            print(f"    wrapper segment '{seg}.' in {where['keys']} keys "
                  f"(depths {where['at_depths']})")
        if not d["wrapper_segments"]:
            print("    no wrapper segments: keys are clean")
        print(f"    first keys: {d['first_keys']}")
    said = {k: "yes" if info[k] else "no" for k in ("optimizer_state", "scheduler_state",
                                                   "checksums")}
    print(f"  optimizer state: {said['optimizer_state']}; scheduler state: "
          f"{said['scheduler_state']}; checksums: {said['checksums']}")
    return EXIT_OK


def _replaced_at(obj: Any, where: tuple[str, ...], value: Any) -> Any:
    """A copy of ``obj`` with the entry at the path of keys ``where`` replaced (no mutation)."""
    if not where:
        return value
    return {**obj, where[0]: _replaced_at(obj[where[0]], where[1:], value)}


def _clean_all(obj: Any) -> tuple[Any, dict[str, list[Rename]]]:
    """Clean every state dict in ``obj``; return the new object and the renames of each."""
    renames: dict[str, list[Rename]] = {}
    for where, sd in locate_state_dicts(obj).items():
        cleaned, renames[".".join(where) or BARE] = clean_state_dict(sd)
        obj = _replaced_at(obj, where, cleaned)
        sums = obj.get("checksums") if isinstance(obj, dict) else None
        if where == ("model_state_dict",) and isinstance(sums, Mapping):  # keyed like the tensors
            new = {r.source: r.target for r in renames["model_state_dict"]}
            obj = {**obj, "checksums": {new.get(k, k): v for k, v in sums.items()}}
    if isinstance(obj, dict) and obj.get("sha256"):  # the content changed: a new digest
        obj = {**{k: v for k, v in obj.items() if k != "sha256"}, "sha256": None}
        obj["sha256"] = content_digest({k: v for k, v in obj.items() if k != "sha256"})
    return obj, renames


def _plan_write(args: argparse.Namespace, cleaned: Any) -> tuple[Callable[[], None], str]:
    """How OUT is written and what it will hold; a ``UsageError`` before anything is written.
    Without ``--key`` a ``.pt`` OUT keeps everything; with it, any OUT holds that state dict
    alone (and the file's metadata), as ``save_checkpoint`` writes it."""
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"OUT {out} is a directory; give a file path")
    found = find_state_dicts(cleaned)
    if args.key is None and out.suffix != ".safetensors":
        top = ", ".join(map(str, cleaned)) if isinstance(cleaned, dict) else "a bare state dict"
        return (lambda: atomic_write(out, lambda tmp: torch.save(cleaned, tmp)),
                f"everything {args.path} holds ({top}), its {len(found)} state dict(s) cleaned")
    if args.key is not None and args.key not in found:
        raise UsageError(f"--key {args.key}: {args.path} has no such state dict; it has "
                         f"{list(found)}")
    name = args.key or (next(iter(found)) if len(found) == 1 else None)
    if name is None:
        raise UsageError(f"{out.name}: a .safetensors file holds one state dict; {args.path} has "
                         f"{list(found)}: choose one with --key, or write a .pt file")
    left = [k for k in (cleaned if isinstance(cleaned, dict) and name != BARE else {})
            if k not in (name.split(".")[0], "metadata", "format", "checksums", "sha256")]
    if left and not args.key:
        raise UsageError(f"{out.name}: a .safetensors file cannot hold {left} from {args.path}; "
                         f"pass --key {name} to write the weights alone, or write a .pt file")
    meta = cleaned.get("metadata") if isinstance(cleaned, dict) else None
    meta = meta if isinstance(meta, dict) else {}

    def write() -> None:
        try:
            save_checkpoint(out, found[name], metadata=meta)
        except UnsupportedContentError as exc:
            raise UsageError(f"{out.name}: {exc.message}") from None

    return write, (f"the state dict {name!r} alone, saved by save_checkpoint"
                   + (", with the file's metadata" if meta else "")
                   + (f"; left out: {left}" if left else ""))


def _size(path: str | Path) -> str:
    n = Path(path).stat().st_size
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _cmd_clean(args: argparse.Namespace) -> int:
    if not args.dry_run and args.out is None:
        raise UsageError("OUT is required unless --dry-run")
    obj = read_checkpoint(args.path)
    if not locate_state_dicts(obj):
        raise CheckpointError("holds no state dict to clean", args.path)
    verify_checkpoint(obj, args.path)  # a damaged file is refused, never re-signed
    cleaned, found = _clean_all(obj)
    write, holds = _plan_write(args, cleaned) if args.out is not None else (None, "")
    if write is not None and not args.dry_run:
        write()
    if args.dry_run:
        outcome = "dry run: nothing written" + (f"; {args.out} would hold {holds}" if holds else "")
    else:
        outcome = f"wrote {args.out} ({_size(args.out)}): {holds}"
    renames = {name: [{"from": r.source, "to": r.target} for r in rs] for name, rs in found.items()}
    if args.json:
        print(dumps({"renames": renames, "summary": {n: "; ".join(describe_renames(rs))
                                                     for n, rs in found.items()},
                     "dry_run": args.dry_run, "out": None if args.dry_run else str(args.out),
                     "outcome": outcome}))
        return EXIT_OK
    for name, rows in renames.items():
        print(f"[{name}] " + (f"{len(rows)} keys renamed" if rows else "already clean"))
        for r in rows:
            print(f"  {r['from']} -> {r['to']}")
    print(outcome)
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    try:
        from .workshop import bench
        from .workshop.env import resolve_device
    except ImportError as exc:
        raise UsageError(f"bench needs the workshop extra ({exc})") from None
    try:
        resolve_device(args.device)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"--device {args.device}: {exc}") from None
    if args.profile not in ("auto", *bench.profiles(args.workload)):
        known = bench.profiles(args.workload)
        raise UsageError(f"--profile {args.profile}: the {args.workload} workload has {known}")
    return bench.cli(args)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="compile-ckpt", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version",
                    version=f"compile-ckpt {version()} (torch {torch.__version__})")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("inspect", help="describe every state dict in a checkpoint")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_inspect)
    p = sub.add_parser("clean", help="write a copy with wrapper segments removed from every "
                       "state dict, atomically")
    p.add_argument("path")
    p.add_argument("out", nargs="?", help="the format follows its suffix: .safetensors, else "
                   "torch.save")
    p.add_argument("--dry-run", action="store_true", help="list the renames, write nothing")
    p.add_argument("--key", help="write this state dict alone (see inspect), in either format; "
                   "without it a .pt OUT keeps everything")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_clean)
    p = sub.add_parser("bench", help="eager vs compiled pretraining steps (needs the workshop "
                       "extra)")
    p.add_argument("--workload", default="seed", choices=["seed", "gpt"])
    p.add_argument("--profile", default="auto", help="auto, or a profile of the workload "
                   "(cpu-smoke, laptop, gpu, ...)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.add_argument("--cold-warm", action="store_true", help="fresh processes: cold, warm (and "
                   "for gpt mega-cache, regional) compile latency")
    p.add_argument("--budget-s", type=float, default=3600, help="with --cold-warm: seconds for "
                   "all runs; what finished is kept (exit 1 if cut short)")
    p.set_defaults(fn=_cmd_bench)
    return ap


def version() -> str:
    """This distribution's version, as installed (pyproject.toml holds it)."""
    try:
        return importlib.metadata.version("compile-ckpt")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        return args.fn(args)
    except UsageError as exc:
        print(f"compile-ckpt {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except CheckpointError as exc:
        if getattr(args, "json", False):
            print(dumps({"error": type(exc).__name__, "message": str(exc)}))
        print(f"compile-ckpt: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_PROBLEM
    except OSError as exc:
        print(f"compile-ckpt: {type(exc).__name__}: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_PROBLEM
    except KeyboardInterrupt:
        print("compile-ckpt: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback; a bug of ours
        print(f"compile-ckpt: unexpected {type(exc).__name__}: {_one_line(str(exc))} (please "
              "report this with the command that caused it)", file=sys.stderr)
        return EXIT_PROBLEM
