"""``compile-ckpt``: inspect and clean checkpoints, run the benchmark.

Exit codes: 0 ok, 1 a problem in the checkpoint (or a benchmark cut short by its budget), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    BARE,
    WRAPPER_SEGMENTS,
    CheckpointError,
    atomic_write,
    clean_state_dict,
    extract_model_state_dict,
    read_checkpoint,
)

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse exits 2 already; keep its message short
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def inspect_checkpoint(path: str | Path) -> dict[str, Any]:
    """Layout, tensor count and bytes, dtypes, wrapper segments and where they occur."""
    obj = read_checkpoint(path)
    state, container = extract_model_state_dict(obj, str(path))
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    segments: dict[str, Counter[int]] = {}
    for k in state:
        for depth, part in enumerate(k.split(".")[:-1]):
            if part in WRAPPER_SEGMENTS:
                segments.setdefault(part, Counter())[depth] += 1
    top = list(obj.keys()) if isinstance(obj, dict) else []
    return {
        "path": str(path),
        "container": container,
        "top_level_keys": [str(k) for k in top],
        "tensors": len(tensors),
        "bytes": int(sum(t.numel() * t.element_size() for t in tensors.values())),
        "dtypes": dict(Counter(str(t.dtype).replace("torch.", "") for t in tensors.values())),
        "wrapper_segments": {seg: {"keys": sum(c.values()), "at_depths": sorted(c)}
                             for seg, c in segments.items()},
        "optimizer_state": any(k in top for k in ("optimizer_state_dict", "optimizer")),
        "scheduler_state": any(k in top for k in ("scheduler_state_dict", "lr_scheduler", "scheduler")),
        "metadata": obj.get("metadata", {}) if isinstance(obj, dict) else {},
        "first_keys": list(state)[:5],
    }


def _cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect_checkpoint(args.path)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return EXIT_OK
    print(f"{info['path']}: {info['container']}, {info['tensors']} tensors, "
          f"{info['bytes'] / 2**20:.2f} MiB, dtypes {info['dtypes']}")
    if info["wrapper_segments"]:
        for seg, where in info["wrapper_segments"].items():
            print(f"  wrapper segment '{seg}.' in {where['keys']} keys (depths {where['at_depths']})")
    else:
        print("  no wrapper segments: keys are clean")
    print(f"  optimizer state: {'yes' if info['optimizer_state'] else 'no'}; "
          f"scheduler state: {'yes' if info['scheduler_state'] else 'no'}")
    print(f"  first keys: {info['first_keys']}")
    return EXIT_OK


def _cmd_clean(args: argparse.Namespace) -> int:
    obj = read_checkpoint(args.path)
    state, container = extract_model_state_dict(obj, str(args.path))
    cleaned, report = clean_state_dict(state)
    renames = [{"from": r.source, "to": r.target} for r in report.renames]
    if args.json:
        print(json.dumps({"renames": renames, "summary": str(report), "dry_run": args.dry_run,
                          "out": None if args.dry_run else str(args.out)}, indent=2))
    else:
        for r in renames:
            print(f"{r['from']} -> {r['to']}")
        print(report)
    if args.dry_run:
        return EXIT_OK
    if args.out is None:
        raise SystemExit("clean: OUT is required unless --dry-run")
    payload = cleaned if container == BARE else {**obj, container: cleaned}
    atomic_write(args.out, lambda tmp: torch.save(payload, tmp))
    if not args.json:
        print(f"wrote {args.out}")
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    if args.cold_warm:
        table, env, _ = bench.run_cold_warm(args.profile, args.out, device=args.device, budget_s=args.budget_s)
    else:
        table, env, steps = bench.run_profile(args.profile, device=args.device)
        bench.write_results(args.out, table, env, steps)
    if not table.empty:
        print(bench.summarize(table).to_string(index=False))
    for why in env.get("incomplete", []):
        print(f"compile-ckpt bench: incomplete: {why}", file=sys.stderr)
    print(f"tables in {args.out}")
    return EXIT_PROBLEM if env.get("incomplete") else EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="compile-ckpt", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("inspect", help="describe a checkpoint")
    p.add_argument("path")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_inspect)
    p = sub.add_parser("clean", help="write a copy with wrapper segments removed, atomically")
    p.add_argument("path")
    p.add_argument("out", nargs="?")
    p.add_argument("--dry-run", action="store_true", help="list the renames, write nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_clean)
    from .bench import PROFILES

    p = sub.add_parser("bench", help="eager vs compiled training step")
    p.add_argument("--profile", default="auto", choices=["auto", *PROFILES])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.add_argument("--cold-warm", action="store_true", help="two fresh processes: cold, then warm cache")
    p.add_argument("--budget-s", type=float, default=3600,
                   help="with --cold-warm: seconds for both runs; what finished is kept (exit 1 if cut short)")
    p.set_defaults(fn=_cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.command == "clean" and not args.dry_run and args.out is None:
        print("compile-ckpt clean: error: OUT is required unless --dry-run", file=sys.stderr)
        return EXIT_USAGE
    try:
        return args.fn(args)
    except CheckpointError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        else:
            print(f"compile-ckpt: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
