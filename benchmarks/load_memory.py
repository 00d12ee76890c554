"""Peak memory of loading a large compiled checkpoint: naive vs low-memory.

Writes a checkpoint of a model saved the seed's way (``torch.compile``d, so every key has
``_orig_mod.``) of at least 1 GB, then, each in a fresh process:

- naive: build the model (random init), ``torch.load``, strip the prefix, ``load_state_dict``;
- low-memory: ``from_checkpoint`` - the model is built on the meta device and its tensors
  are the file's memory-mapped pages (``mmap=True, assign=True``);

runs one forward pass and reports peak RSS and wall time, and their ratios. Goal: peak RSS
at most 1.25 x the checkpoint size for the low-memory way (the naive way needs about 2.2 x).
Then what the library adds on the same model: ``save_checkpoint`` (an atomic write: fsync and
rename) against plain ``torch.save``, and ``load_checkpoint`` (every check first) against
``torch.load`` + ``load_state_dict``; interleaved, medians and spread of 3 repeats.

    python benchmarks/load_memory.py [--size-gb 1.5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import torch
from torch import nn

WIDTH = 4096


def build(n_layers: int) -> nn.Module:
    return nn.Sequential(*[nn.Linear(WIDTH, WIDTH) for _ in range(n_layers)])


class PeakRSS:
    """Context manager: the highest resident set size of this process while inside, sampled
    every millisecond on a thread (``ru_maxrss`` would keep an earlier, larger peak)."""

    def __enter__(self) -> PeakRSS:
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._done.wait(0.001)

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def growth(self) -> int:
        """Bytes the peak rose above the level on entry."""
        return self.peak - self.start


def child(way: str, path: str, n_layers: int) -> None:
    from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

    from compile_ckpt import from_checkpoint

    torch.set_num_threads(2)
    base = psutil.Process().memory_info().rss
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        if way == "naive":
            model = build(n_layers)
            state = torch.load(path, weights_only=True)["model_state_dict"]
            consume_prefix_in_state_dict_if_present(state, "_orig_mod.")  # the seed's fix
            model.load_state_dict(state)
            del state
        else:
            model = from_checkpoint(path, lambda: build(n_layers))
        load_s = time.perf_counter() - t0
        with torch.no_grad():
            out = model(torch.ones(1, WIDTH))
        total_s = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "way": way,
                "peak_rss": rss.peak,
                "base_rss": base,
                "load_s": load_s,
                "load_and_forward_s": total_s,
                "finite": bool(torch.isfinite(out).all()),
            }
        )
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=1.5)
    ap.add_argument(
        "--dir", default=None, help="where to write the checkpoint (default: a temp dir)"
    )
    ap.add_argument("--child", choices=["naive", "lowmem"])
    ap.add_argument("--path")
    ap.add_argument("--layers", type=int)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.path, args.layers)
        return 0
    layer_bytes = (WIDTH * WIDTH + WIDTH) * 4
    n_layers = max(1, round(args.size_gb * 2**30 / layer_bytes))
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="load-memory-"))
    path = tmp / "compiled.pt"
    model = torch.compile(build(n_layers))
    torch.save({"model_state_dict": model.state_dict()}, path)
    del model
    size = path.stat().st_size
    print(
        f"checkpoint: {path} ({size / 2**30:.2f} GiB, {n_layers} layers, "
        "keys like '_orig_mod.0.weight')"
    )
    results = {}
    for way in ("naive", "lowmem"):
        # Each way in a fresh process; the file is read once first, so every way finds it in
        # the page cache.
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                way,
                "--path",
                str(path),
                "--layers",
                str(n_layers),
            ],
            capture_output=True,
            text=True,
            env={**os.environ},
        )
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return 1
        results[way] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"\n{'way':8s} {'peak RSS':>10s} {'x ckpt':>8s} {'load s':>8s} {'load+fwd s':>11s}")
    for way, r in results.items():
        print(
            f"{way:8s} {r['peak_rss'] / 2**30:9.2f}G {r['peak_rss'] / size:8.2f} "
            f"{r['load_s']:8.2f} "
            f"{r['load_and_forward_s']:11.2f}"
        )
    n, lo = results["naive"], results["lowmem"]
    print(
        f"\nratios: low-memory / naive peak RSS = {lo['peak_rss'] / n['peak_rss']:.2f}; "
        f"time = {lo['load_and_forward_s'] / n['load_and_forward_s']:.2f}"
    )
    print(f"(peak RSS includes the Python + torch baseline of {lo['base_rss'] / 2**20:.0f} MiB)")
    goal = lo["peak_rss"] / size <= 1.25
    print(f"goal peak RSS <= 1.25 x checkpoint for low-memory: {'met' if goal else 'NOT met'}")
    library_cost(tmp, n_layers, size)
    if args.dir is None:
        shutil.rmtree(tmp)
    return 0 if goal else 1


def library_cost(tmp: Path, n_layers: int, size: int, repeats: int = 3) -> None:
    """Seconds to save with plain ``torch.save`` and with ``save_checkpoint`` (atomic: a
    temporary file, fsync, rename), and to load with ``torch.load`` + ``load_state_dict`` and
    with ``load_checkpoint`` (keys matched and every value checked first); interleaved repeats,
    medians with [min-max]. A difference whose ranges overlap is reported as none."""
    from compile_ckpt import load_checkpoint, save_checkpoint

    model, target = build(n_layers), build(n_layers)
    times: dict[str, list[float]] = {k: [] for k in ("torch.save", "save_checkpoint",
                                                     "torch.load+load_state_dict",
                                                     "load_checkpoint")}
    for _ in range(repeats):  # interleaved, so the page cache and the clock treat all alike
        t0 = time.perf_counter()
        torch.save({"model_state_dict": model.state_dict()}, tmp / "plain.pt")
        times["torch.save"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        save_checkpoint(tmp / "library.pt", model)
        times["save_checkpoint"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        target.load_state_dict(torch.load(tmp / "plain.pt", weights_only=True)["model_state_dict"])
        times["torch.load+load_state_dict"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        load_checkpoint(tmp / "library.pt", target)
        times["load_checkpoint"].append(time.perf_counter() - t0)
    print(f"\nsave and load of a {size / 2**30:.2f} GiB model ({repeats} interleaved repeats, "
          "median [min-max] s):")
    for name, ts in times.items():
        print(f"  {name:27s} {statistics.median(ts):6.2f} [{min(ts):.2f}-{max(ts):.2f}]")
    for a, b in (("torch.save", "save_checkpoint"), ("torch.load+load_state_dict",
                                                     "load_checkpoint")):
        if min(times[b]) <= max(times[a]) and min(times[a]) <= max(times[b]):
            print(f"  {b} vs {a}: the ranges overlap; no difference measurable beyond the noise")
        else:
            extra = statistics.median(times[b]) - statistics.median(times[a])
            print(f"  {b} vs {a}: {extra:+.2f} s ({extra / statistics.median(times[a]):+.0%})")


if __name__ == "__main__":
    raise SystemExit(main())
