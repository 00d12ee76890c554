"""One GPU session's measurements, in the order of their value, each written when it ends:

1. ``ceilings``: the environment and the ceilings (copy bandwidth; bf16 and TF32 matrix products);
2. ``gpt``: the GPT workload (GPT-2 small, bf16, hand-written and SDPA attention), eager against
   ``default`` and ``reduce-overhead``, compile latency four ways (cold, warm, mega-cache,
   regional): ``gpt/``;
3. ``notebook06``: notebook 06's own cells run as plain Python with ``device="cuda"`` (the
   CUDA-graph failure pattern and its fixes, activation-checkpointing memory):
   ``cudagraphs.json`` and ``activation_checkpointing.json``, the records notebook 06 shows;
4. ``seed``: the seed's model, float32 (on TF32 tensor cores) and bf16, eager, ``default`` and
   ``reduce-overhead``, cold and warm: ``seed/``;
5. ``autotune``: ``max-autotune-no-cudagraphs`` on the seed's model, cold and warm: minutes of
   autotuning, so it comes last: ``seed-autotune/``.

``--phases`` picks some of them, in the order given; ``--budget-s`` bounds the whole script. Every
phase runs in child processes that are killed, with everything they started, when the budget
runs out; a phase with less than its minimum left is skipped. ``phases.json`` says what each
phase did and how long it took. Exit code 0 only when every chosen phase completed.

Needs only what a GPU image has (torch, pandas, tqdm, PyYAML); no Jupyter, no network.
``--device cpu`` with ``--smoke`` runs the same path on a CPU in about a minute (the tests do).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from compile_ckpt.checkpoint import atomic_write  # noqa: E402
from compile_ckpt.workshop import bench  # noqa: E402
from compile_ckpt.workshop.env import resolve_device, run_process, versions  # noqa: E402

log = logging.getLogger("gpu_run")
#: A phase starts only with at least this many seconds of the budget left.
MIN_START_S = {"ceilings": 10.0, "gpt": 240.0, "notebook06": 90.0, "seed": 90.0, "autotune": 120.0}
PHASES = tuple(MIN_START_S)


def _write(path: Path, obj: object) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str)))


def _routes(workload: str, profile: str, folder: Path, device: str, left: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "compile_ckpt", "bench", "--workload", workload, "--profile", profile,
           "--device", device, "--cold-warm", "--budget-s", str(max(left - 5, 1)), "--out", str(folder)]
    code, output = run_process(cmd, timeout=left, env={"PYTHONPATH": str(ROOT / "src"), **_env()})
    (folder / "run.log").parent.mkdir(parents=True, exist_ok=True)
    (folder / "run.log").write_text(output)
    if code not in (0, 1):
        raise RuntimeError(f"bench exited {code}:\n{output[-2000:]}")
    env = json.loads((folder / "bench.json").read_text())["environment"]
    return {"incomplete": env.get("incomplete", [])}


def _notebook06(out: Path, device: str, left: float, smoke: bool) -> dict[str, Any]:
    params = ROOT / "notebooks" / "params" / ("smoke.yaml" if smoke else "gpu.yaml")
    cmd = [sys.executable, "-m", "compile_ckpt.workshop.runner", "--no-jupyter", "--only", "06",
           "--notebooks", str(ROOT / "notebooks"), "-f", str(params), "-p", "device", device,
           "--out", str(out / "notebook06")]
    code, output = run_process(cmd, timeout=left, env={"PYTHONPATH": str(ROOT / "src"), **_env()})
    (out / "notebook06").mkdir(parents=True, exist_ok=True)
    (out / "notebook06" / "run.log").write_text(output)
    summary = json.loads((out / "notebook06" / "summary.json").read_text())
    run = summary["notebooks"][0]
    if run["status"] != "ok":
        raise RuntimeError(f"notebook 06 {run['status']}: {run['error'][-2000:]}")
    records = run["records"]
    if records.get("cudagraphs_ran_here"):  # only a GPU run replaces the committed CUDA-graph record
        _write(out / "cudagraphs.json", {**records["cudagraphs"], "measured_utc": summary["finished_utc"]})
    _write(out / "activation_checkpointing.json", {**records["activation_checkpointing"],
                                                   "measured_utc": summary["finished_utc"]})
    return {"incomplete": [] if code == 0 else [f"runner exited {code}"]}


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True)
    ap.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, from {', '.join(PHASES)}")
    ap.add_argument("--budget-s", type=float, default=3 * 3600, help="wall-clock budget for the whole script")
    ap.add_argument("--smoke", action="store_true", help="the cpu-smoke profiles and smoke parameters (CPU tests)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    chosen = [p.strip() for p in args.phases.split(",") if p.strip()]
    if sorted(set(chosen) - set(PHASES)):
        ap.error(f"unknown phase(s) {sorted(set(chosen) - set(PHASES))}; choose from {list(PHASES)}")
    deadline, out = time.monotonic() + args.budget_s, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = str(resolve_device(args.device))
    size = "cpu-smoke" if args.smoke else "gpu"
    run = {
        "ceilings": lambda left: _write(out / "ceilings.json", {"versions": versions(), **bench.measure_ceilings(dev)}),
        "gpt": lambda left: _routes("gpt", size, out / "gpt", dev, left),
        "notebook06": lambda left: _notebook06(out, dev, left, args.smoke),
        "seed": lambda left: _routes("seed", size, out / "seed", dev, left),
        "autotune": lambda left: _routes("seed", "cpu-smoke" if args.smoke else "gpu-autotune", out / "seed-autotune",
                                         dev, left),
    }
    record: dict[str, dict[str, Any]] = {}
    for name in chosen:
        left = deadline - time.monotonic()
        if left < MIN_START_S[name] and not args.smoke:
            record[name] = {"status": "skipped", "why": f"{max(left, 0):.0f}s of the budget left, "
                                                        f"{MIN_START_S[name]:.0f}s needed"}
        else:
            t0 = time.perf_counter()
            try:
                result = run[name](left) or {}
                record[name] = {"status": "incomplete", "why": result["incomplete"]} if result.get("incomplete") \
                    else {"status": "ok"}
            except (RuntimeError, TimeoutError, OSError, KeyError, ValueError) as exc:
                record[name] = {"status": "failed", "why": f"{type(exc).__name__}: {str(exc)[-1500:]}"}
            record[name]["seconds"] = round(time.perf_counter() - t0, 1)
        log.info("phase %s: %s", name, record[name])
        _write(out / "phases.json", record)
    not_ok = {k: v["status"] for k, v in record.items() if v["status"] != "ok"}
    print("phases not completed:", not_ok or "none")
    return 1 if not_ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
