"""One GPU session's measurements, in the order of their value, each written as it ends:

1. ``ceilings``: environment and the two ceilings (device-to-device copy, bf16 matrix product);
2. ``bench``: the ``gpu`` benchmark profile, cold then warm compile cache (two fresh processes);
3. ``cudagraphs``: the CUDA-graph pitfalls (the overwritten-output error and each fix, ragged batches);
4. ``activation_checkpointing``: loss/gradient agreement and peak memory;
5. ``bench_autotune``: ``max-autotune-no-cudagraphs`` (profile ``gpu-autotune``), cold then warm:
   minutes of autotuning, so it comes last.

``--phases`` picks some of them (``--phases ceilings,bench,bench_autotune``). ``--budget-s``
bounds the whole script: the benchmark phases run in child processes that are killed, with
everything they started, when the budget runs out, keeping the dtypes they finished; a phase
with no time left is skipped. ``phases.json`` records what each phase did and how long it took,
so a session that is cut short still knows what it has. Exit code 0 only when every chosen
phase completed.

The output folder is laid out to be committed as ``results/<gpu>-<date>/``: the ``gpu``
profile's ``bench.csv``/``bench.json``/``step_times.json`` at its top (where notebook 05 looks),
autotuning under ``autotune/``, the other phases as ``<phase>.json``.

Needs only torch, pandas and tqdm (what a GPU image already has); no network, no papermill.
``--profile cpu-smoke`` runs the same path on a CPU in under a minute (the test suite does).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


from compile_ckpt import bench, pitfalls  # noqa: E402
from compile_ckpt.checkpoint import atomic_write  # noqa: E402
from compile_ckpt.env import resolve_device, versions  # noqa: E402

log = logging.getLogger("compile_ckpt")
#: A phase is only started with at least this many seconds of the budget left (about what it
#: took on the H200, 2026-11-28). The in-process phases cannot be stopped part-way; the
#: benchmark phases can, and keep what they finished.
MIN_START_S = {"ceilings": 5.0, "bench": 60.0, "cudagraphs": 30.0, "activation_checkpointing": 10.0,
               "bench_autotune": 60.0}
PHASES = tuple(MIN_START_S)  # the default order


def _write(path: Path, obj: object) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str)))
    log.info("wrote %s", path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="gpu", choices=list(bench.PROFILES))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True)
    ap.add_argument("--phases", default=",".join(PHASES),
                    help=f"comma-separated, in the order given; from {', '.join(PHASES)}")
    ap.add_argument("--budget-s", type=float, default=3 * 3600, help="wall-clock budget for the whole script")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    chosen = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PHASES))
    if unknown:
        ap.error(f"unknown phase(s) {unknown}; choose from {list(PHASES)}")
    if "bench_autotune" in chosen and args.profile != "gpu":
        log.info("bench_autotune is a GPU phase (profile gpu-autotune); dropped for profile %s", args.profile)
        chosen.remove("bench_autotune")
    deadline = time.monotonic() + args.budget_s
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(args.device)

    def left() -> float:
        return deadline - time.monotonic()

    def cold_warm(profile: str, folder: Path) -> dict[str, Any]:
        """Writes its own tables (bench.csv, bench.json, step_times.json, cold/, warm/) into folder."""
        _, env, _ = bench.run_cold_warm(profile, folder, device=str(dev), budget_s=left())
        return {"incomplete": env.get("incomplete", [])}

    run: dict[str, Callable[[], Any]] = {
        "ceilings": lambda: {"versions": versions(), **bench.measure_ceilings(dev)},
        "bench": lambda: cold_warm(args.profile, out),
        "cudagraphs": lambda: pitfalls.cudagraph_pitfalls(dev),
        "activation_checkpointing": lambda: pitfalls.activation_checkpointing_check(
            dev, batch=256 if dev.type == "cuda" else 16),
        "bench_autotune": lambda: cold_warm("gpu-autotune", out / "autotune"),
    }
    record: dict[str, dict[str, Any]] = {}
    for name in chosen:
        if left() < MIN_START_S[name]:
            record[name] = {"status": "skipped",
                            "why": f"{max(left(), 0):.0f}s of the budget left, {MIN_START_S[name]:.0f}s needed"}
            log.warning("phase %s skipped: %s", name, record[name]["why"])
            _write(out / "phases.json", record)
            continue
        t0 = time.perf_counter()
        try:
            result = run[name]()
            if not name.startswith("bench"):
                _write(out / f"{name}.json", result)
            incomplete = result.get("incomplete")
            record[name] = {"status": "incomplete", "why": incomplete} if incomplete else {"status": "ok"}
        except Exception:  # noqa: BLE001 - keep measuring the other phases
            _write(out / f"{name}.error.json", {"traceback": traceback.format_exc()})
            log.error("phase %s failed:\n%s", name, traceback.format_exc())
            record[name] = {"status": "failed", "why": traceback.format_exc().strip().splitlines()[-1]}
        record[name]["seconds"] = round(time.perf_counter() - t0, 1)
        log.info("phase %s: %s in %.1fs", name, record[name]["status"], record[name]["seconds"])
        _write(out / "phases.json", record)
    for folder in (out, out / "autotune"):
        if (folder / "bench.json").exists():
            table, _, _ = bench.load_results(folder)
            if not table.empty:
                print(bench.summarize(table).to_string(index=False))
    not_ok = {k: v["status"] for k, v in record.items() if v["status"] != "ok"}
    print("phases not completed:", not_ok or "none")
    return 1 if not_ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
