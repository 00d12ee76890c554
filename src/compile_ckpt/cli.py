"""compile-ckpt: inspect checkpoints and clean wrapper segments out of their keys (torch alone).

Exit codes: 0 ok; 1 a problem with a checkpoint; 2 a usage error. Errors are one line on stderr;
``inspect`` prints strict, bounded JSON."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import layout
from .atomic import atomic_write
from .errors import CheckpointError, UnsupportedContentError
from .formats import read_checkpoint
from .keys import WRAPPER_SEGMENTS, KeyCollisionError, clean_state_dict
from .resume import rename_param_names
from .save import save_checkpoint


class UsageError(Exception):
    """A mistake in the command line (exit 2)."""


def inspect_checkpoint(path: str | Path) -> dict[str, Any]:
    """Each state dict (tensors, bytes, dtypes, wrapper segments), the top-level entries, and
    whether the file holds optimizer or scheduler state."""
    obj = read_checkpoint(path)
    if not (found := layout.find_state_dicts(obj)):
        raise CheckpointError("holds no state dict (no dict of named tensors at any level)", path)
    info: dict[str, Any] = {"path": str(path), "state_dicts": {}}
    for name, sd in found.items():
        tensors = [v for v in sd.values() if isinstance(v, torch.Tensor)]
        info["state_dicts"][name] = {
            "tensors": len(tensors), "bytes": sum(t.numel() * t.element_size() for t in tensors),
            "dtypes": dict(Counter(str(t.dtype).removeprefix("torch.") for t in tensors)),
            "first_keys": list(sd)[:5], "wrapper_segments": dict(Counter(
                p for k in sd for p in k.split(".")[:-1] if p in WRAPPER_SEGMENTS))}
    top = [str(k) for k in obj] if layout.BARE not in found else []
    return {**info, "top_level_keys": top, **{
        f"{w}_state": bool(top) and layout.first_entry(obj, keys)[1] is not None for w, keys in
        (("optimizer", layout.OPTIMIZER_KEYS), ("scheduler", layout.SCHEDULER_KEYS))}}


def clean_checkpoint(obj: Any) -> tuple[Any, dict[str, int]]:
    """A copy of ``obj``, every state dict (and ``param_names``) cleaned by names; the renames."""
    renamed: dict[str, int] = {}

    def clean(value: Any, where: str) -> Any:
        if layout.is_state_dict(value):
            cleaned, renames = clean_state_dict(value)
            renamed[where or layout.BARE] = len(renames)
            return cleaned
        if layout.is_optimizer_state(value) and isinstance(value["param_groups"], list):
            return rename_param_names(value, lambda _, names: list(clean_state_dict(
                dict.fromkeys(names))[0]))
        return {k: clean(v, f"{where}.{k}".lstrip(".")) for k, v in value.items()} \
            if isinstance(value, Mapping) else value

    return clean(obj, ""), renamed


def _clean(args: argparse.Namespace) -> None:
    if args.out is None and not args.dry_run:
        raise UsageError("OUT is required unless --dry-run")
    cleaned, renamed = clean_checkpoint(read_checkpoint(args.path))
    if not renamed:
        raise CheckpointError("holds no state dict to clean", args.path)
    for name, n in renamed.items():
        print(f"[{name}] " + (f"{n} keys renamed" if n else "already clean"))
    out, found = Path(args.out or "."), layout.find_state_dicts(cleaned)
    if args.dry_run:
        return print("dry run: nothing written")
    if out.is_dir():
        raise UsageError(f"OUT {out} is a directory; give a file path")
    if out.suffix != ".safetensors":
        atomic_write(out, lambda tmp: torch.save(cleaned, tmp))
    elif len(found) > 1 or [*found] not in ([layout.BARE], [*map(str, cleaned)]):  # not one
        raise UsageError(f"{out.name}: a .safetensors file holds one state dict alone, and "
                         f"{args.path} holds more ({list(cleaned)}): write a .pt file")
    else:
        try:
            save_checkpoint(out, next(iter(found.values())))
        except UnsupportedContentError as exc:
            raise UsageError(f"{out.name}: {exc.message}") from None
    print(f"wrote {out}: everything {args.path} holds, its {len(found)} state dict(s) cleaned")


def build_parser() -> argparse.ArgumentParser:
    try:
        version = importlib.metadata.version("compile-ckpt")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown (not installed)"
    ap = argparse.ArgumentParser(prog="compile-ckpt", description=__doc__.split("\n\n")[0])
    ap.add_argument("--version", action="version",
                    version=f"compile-ckpt {version} (torch {torch.__version__})")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="describe every state dict in a checkpoint, as JSON")
    p.add_argument("path")
    p.set_defaults(fn=lambda args: print(json.dumps(
        layout.describe(inspect_checkpoint(args.path)), indent=2, allow_nan=False)))
    p = sub.add_parser("clean", help="write a copy without wrapper segments in its keys")
    p.add_argument("path")
    p.add_argument("out", nargs="?", help="a .safetensors or (else) torch.save file")
    p.add_argument("--dry-run", action="store_true", help="list the renames, write nothing")
    p.set_defaults(fn=_clean)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        args.fn(args)
        return 0
    except UsageError as exc:
        print(f"compile-ckpt {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        known = isinstance(exc, (CheckpointError, KeyCollisionError, OSError))
        print(f"compile-ckpt: {'' if known else 'unexpected '}{type(exc).__name__}: "
              f"{' '.join(str(exc).split())}" + " (a bug: please report it)" * (not known),
              file=sys.stderr)
        return 1
