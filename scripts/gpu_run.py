"""One GPU session's measurements, in the order of their value, each written as it ends:

1. environment and the two ceilings (device-to-device copy, bf16 matrix product);
2. the ``gpu`` benchmark profile, cold then warm compile cache (two fresh processes);
3. the CUDA-graph pitfalls (the overwritten-output error and each fix, ragged batches);
4. activation checkpointing: loss/gradient agreement and peak memory;
5. ``max-autotune-no-cudagraphs`` (profile ``gpu-autotune``), cold then warm: minutes of
   autotuning, so it comes last. Give the whole script 10+ minutes of device time, and
   fetch ``$out`` even if it is stopped early: every phase writes its files when it ends.

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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


from compile_ckpt import bench, pitfalls  # noqa: E402
from compile_ckpt.env import resolve_device, versions  # noqa: E402

log = logging.getLogger("compile_ckpt")


def _write(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str))
    log.info("wrote %s", path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="gpu", choices=list(bench.PROFILES))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(args.device)
    failures = []
    phases = [
        ("ceilings", lambda: {"versions": versions(), **bench.measure_ceilings(dev)}),
        ("bench", lambda: bench.run_cold_warm(args.profile, out / "bench", device=str(dev))[1]),
        ("cudagraphs", lambda: pitfalls.cudagraph_pitfalls(dev)),
        ("activation_checkpointing", lambda: pitfalls.activation_checkpointing_check(
            dev, batch=256 if dev.type == "cuda" else 16)),
    ]
    if args.profile == "gpu":  # autotuning last: it is the slowest and least certain to finish
        phases.append(("bench_autotune", lambda: bench.run_cold_warm("gpu-autotune", out / "bench-autotune",
                                                                      device=str(dev))[1]))
    for name, fn in phases:
        t0 = time.perf_counter()
        try:
            result = fn()
            _write(out / f"{name}.json", result)
        except Exception:  # noqa: BLE001 - keep measuring the other phases
            failures.append(name)
            _write(out / f"{name}.error.json", {"traceback": traceback.format_exc()})
            log.error("phase %s failed:\n%s", name, traceback.format_exc())
        log.info("phase %s took %.1fs", name, time.perf_counter() - t0)
    if (out / "bench" / "bench.csv").exists():
        table, _, _ = bench.load_results(out / "bench")
        print(bench.summarize(table).to_string(index=False))
    print("failed phases:", failures or "none")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
