"""One GPU session's measurements, in the order of their value, each written when it ends:

1. ``ceilings``: the environment and the ceilings (copy bandwidth; bf16 and TF32 matrix products);
2. ``gpt``: the GPT workload (GPT-2 small, bf16, hand-written and SDPA attention), eager against
   ``default`` and ``reduce-overhead``, compile latency four ways (cold, warm, mega-cache,
   regional): ``gpt/``;
3. ``notebook06``: notebook 06's own code cells run as plain Python (a GPU image has no
   Jupyter) with ``device="cuda"``: the CUDA-graph failure pattern of a training loop and its
   fixes, with CUDA graphs counted (``cudagraphs.json``); activation-checkpointing memory
   (``activation_checkpointing.json``); ``reduce-overhead`` with non-reentrant checkpointing,
   both ways round, against ``default`` (pytorch#154306: ``ac_reduce_overhead.json``), the
   records notebook 06 shows;
4. ``seed``: the seed's model, float32 (on TF32 tensor cores) and bf16, eager, ``default`` and
   ``reduce-overhead``, cold and warm: ``seed/``;
5. ``autotune``: ``max-autotune-no-cudagraphs`` on the seed's model, cold and warm: minutes of
   autotuning, so it comes last: ``seed-autotune/``.

``--phases`` picks some of them, in the order given; ``--budget-s`` bounds the whole script. Every
phase runs in child processes that are killed, with everything they started, when the budget
runs out; a phase with less than its minimum left is skipped. ``phases.json`` says what each
phase did and how long it took. Exit code 0 only when every chosen phase completed.

Needs only what a GPU image has (torch, pandas, tqdm, psutil, PyYAML: what the workshop
package needs to import); no Jupyter, no network, whatever ``PYTHONPATH`` it inherits.
``--device cpu`` with ``--smoke`` runs the same path on a CPU in about a minute (the tests do).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from compile_ckpt import atomic_write  # noqa: E402
from compile_ckpt.workshop import bench  # noqa: E402
from compile_ckpt.workshop.env import resolve_device, run_process, versions  # noqa: E402
from compile_ckpt.workshop.record import RECORDED  # noqa: E402
from compile_ckpt.workshop.runner import load_parameter_files  # noqa: E402

log = logging.getLogger("gpu_run")
#: A phase starts only with at least this many seconds of the budget left.
MIN_START_S = {"ceilings": 10.0, "gpt": 240.0, "notebook06": 150.0, "seed": 90.0, "autotune": 120.0}
PHASES = tuple(MIN_START_S)


def _write(path: Path, obj: object) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=str)))


def _child_env() -> dict[str, str]:
    """The environment of a phase's processes: this checkout's ``src`` first, whatever
    ``PYTHONPATH`` was inherited (an installed compile_ckpt must not shadow this one)."""
    inherited = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), *([inherited] if inherited else [])]),
    }


def _routes(workload: str, profile: str, folder: Path, device: str, left: float) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "compile_ckpt.workshop.bench",
        "--workload",
        workload,
        "--profile",
        profile,
        "--device",
        device,
        "--cold-warm",
        "--budget-s",
        str(max(left - 5, 1)),
        "--out",
        str(folder),
    ]
    code, output = run_process(cmd, timeout=left, env=_child_env())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run.log").write_text(output)
    if code not in (0, 1):
        raise RuntimeError(f"bench exited {code}:\n{output[-2000:]}")
    env = json.loads((folder / "bench.json").read_text())["environment"]
    return {"incomplete": env.get("incomplete", [])}


def run_cells(notebook: Path, parameters: dict[str, Any]) -> dict[str, Any]:
    """Run a notebook's code cells as plain Python in this process, in its folder, and return
    what it recorded. ``parameters`` replace the values of the cell tagged ``parameters`` that
    it defines (the others are for other notebooks); ``%%writefile PATH`` cells write their
    file; ``display`` prints."""
    cells = [
        c
        for c in json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        if c["cell_type"] == "code"
    ]
    namespace: dict[str, Any] = {"__name__": "__main__", "display": lambda *objs: print(*objs)}
    RECORDED.clear()
    os.chdir(notebook.parent)
    for i, cell in enumerate(cells):
        source = "".join(cell["source"])
        if source.startswith("%%writefile"):
            line, _, body = source.partition("\n")
            target = eval(f"f{line.split(None, 1)[1]!r}", namespace)  # noqa: S307 - {var} paths
            Path(target).write_text(body + "\n")
            continue
        before = set(namespace)
        exec(compile(source, f"{notebook.name}[{i}]", "exec"), namespace)  # noqa: S102
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            defined = set(namespace) - before
            namespace.update({k: v for k, v in parameters.items() if k in defined})
    return dict(RECORDED)


def _notebook06(out: Path, device: str, left: float, smoke: bool) -> dict[str, Any]:
    notebook = ROOT / "notebooks" / "06_pitfalls_and_scaling_out.ipynb"
    files = load_parameter_files(
        [str(ROOT / "notebooks" / "params" / ("smoke.yaml" if smoke else "gpu.yaml"))]
    )
    params = {
        **files.get("all", {}),
        **files.get("06", {}),
        **files.get(notebook.stem, {}),
        "device": device,
    }
    folder = out / "notebook06"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        __file__,
        "--run-cells",
        str(notebook),
        "--parameters",
        json.dumps(params),
        "--out",
        str(folder / "records.json"),
    ]
    code, output = run_process(
        cmd, timeout=left, env={**_child_env(), "COMPILE_CKPT_WORKDIR": str(folder / "artifacts")}
    )
    (folder / "run.log").write_text(output)
    if code != 0:
        raise RuntimeError(f"notebook 06 failed (exit {code}):\n{output[-2000:]}")
    records = json.loads((folder / "records.json").read_text())
    measured = {"measured_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    for name, record in notebook06_files(records).items():
        _write(out / name, {**record, **measured})
    return {"incomplete": []}


def notebook06_files(records: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The result files notebook 06's records make: the GPU-only ones (CUDA graphs, and
    reduce-overhead with checkpointing) only from a run that measured them on a GPU, so a CPU
    run never replaces a GPU record; activation-checkpointing memory always."""
    files = {"activation_checkpointing.json": records["activation_checkpointing"]}
    if records.get("cudagraphs_ran_here"):
        files["cudagraphs.json"] = records["cudagraphs"]
    if records.get("ac_reduce_overhead", {}).get("ran_here"):
        files["ac_reduce_overhead.json"] = records["ac_reduce_overhead"]
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated, from {', '.join(PHASES)}"
    )
    ap.add_argument(
        "--budget-s", type=float, default=3 * 3600, help="wall-clock budget for the whole script"
    )
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="the cpu-smoke profiles and smoke parameters (CPU tests)",
    )
    ap.add_argument("--run-cells", type=Path, help=argparse.SUPPRESS)  # notebook06's process
    ap.add_argument("--parameters", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_cells:
        records = run_cells(args.run_cells, json.loads(args.parameters))
        _write(Path(args.out), records)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    chosen = [p.strip() for p in args.phases.split(",") if p.strip()]
    if sorted(set(chosen) - set(PHASES)):
        ap.error(
            f"unknown phase(s) {sorted(set(chosen) - set(PHASES))}; choose from {list(PHASES)}"
        )
    deadline, out = time.monotonic() + args.budget_s, Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = str(resolve_device(args.device))
    size = "cpu-smoke" if args.smoke else "gpu"
    run = {
        "ceilings": lambda left: _write(
            out / "ceilings.json", {"versions": versions(), **bench.measure_ceilings(dev)}
        ),
        "gpt": lambda left: _routes("gpt", size, out / "gpt", dev, left),
        "notebook06": lambda left: _notebook06(out, dev, left, args.smoke),
        "seed": lambda left: _routes("seed", size, out / "seed", dev, left),
        "autotune": lambda left: _routes(
            "seed", "cpu-smoke" if args.smoke else "gpu-autotune", out / "seed-autotune", dev, left
        ),
    }
    record: dict[str, dict[str, Any]] = {}
    for name in chosen:
        left = deadline - time.monotonic()
        if left < MIN_START_S[name] and not args.smoke:
            record[name] = {
                "status": "skipped",
                "why": f"{max(left, 0):.0f}s of the budget left, {MIN_START_S[name]:.0f}s needed",
            }
        else:
            t0 = time.perf_counter()
            try:
                result = run[name](left) or {}
                record[name] = (
                    {"status": "incomplete", "why": result["incomplete"]}
                    if result.get("incomplete")
                    else {"status": "ok"}
                )
            except (RuntimeError, TimeoutError, OSError, KeyError, ValueError) as exc:
                record[name] = {
                    "status": "failed",
                    "why": f"{type(exc).__name__}: {str(exc)[-1500:]}",
                }
            record[name]["seconds"] = round(time.perf_counter() - t0, 1)
        log.info("phase %s: %s", name, record[name])
        _write(out / "phases.json", record)
    not_ok = {k: v["status"] for k, v in record.items() if v["status"] != "ok"}
    print("phases not completed:", not_ok or "none")
    return 1 if not_ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
