"""Figures for the notebooks: loss curves and the benchmark at a glance."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

EAGER = "eager"


def plot_loss_curves(histories: Iterable[pd.DataFrame], title: str = "Loss per epoch") -> plt.Figure:
    """Train and validation loss of one or more phases, one after the other on the x axis."""
    fig, ax = plt.subplots(figsize=(7, 4))
    offset = 0
    for h in histories:
        x = h["epoch"].to_numpy() - h["epoch"].min() + 1 + offset
        phase = h["phase"].iloc[0] if len(h) else "?"
        ax.plot(x, h["train_loss"], marker="o", label=f"{phase} train")
        ax.plot(x, h["val_loss"], marker="s", linestyle="--", label=f"{phase} val")
        offset = int(x.max()) if len(x) else offset
    ax.set(xlabel="epoch (all phases)", ylabel="MSE", title=title, yscale="log")
    ax.legend()
    fig.tight_layout()
    return fig


def _pick_cache(table: pd.DataFrame) -> pd.DataFrame:
    """Compiled rows from the cold run where there is one (the honest first-run cost)."""
    if "run" in table.columns and "cold" in set(table["run"]):
        return table[table["run"] == "cold"]
    return table


def plot_benchmark(table: pd.DataFrame, step_times: dict[str, list[float]],
                   env: dict[str, Any] | None = None) -> plt.Figure:
    """Four panels: cumulative wall time vs step (the crossing is the break-even), step-time
    distributions, speedup, and compile latency (cold and warm cache)."""
    env = env or {}
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    (ax_cum, ax_dist), (ax_speed, ax_comp) = axes
    rows = _pick_cache(table)
    breakevens = [b for b in rows["breakeven_steps"].dropna() if np.isfinite(b)]
    horizon = int(min(max(breakevens) * 2, 1e6)) if breakevens else 1000
    steps = np.linspace(0, horizon, 200)
    for _, r in rows.iterrows():
        cum = r["compile_latency_s"] + steps * r["median_ms"] / 1e3
        style = "-" if r["mode"] == EAGER else "--"
        (line,) = ax_cum.plot(steps, cum, style, label=f"{r['dtype']} {r['mode']}")
        be = r["breakeven_steps"]
        if r["mode"] != EAGER and be is not None and not pd.isna(be):
            # Mark the crossing explicitly: when compile gains little, the lines nearly overlap.
            ax_cum.axvline(be, color=line.get_color(), linestyle=":", linewidth=1)
            ax_cum.annotate(f"break-even\n{int(be):,} steps", (be, 0), xytext=(3, 5),
                            textcoords="offset points", fontsize=7, color=line.get_color())
    ax_cum.set(xlabel="training steps", ylabel="cumulative wall time (s)",
               title="Cumulative time: compiled lines start late (compile) and cross eager at break-even")
    ax_cum.legend(fontsize=8)

    labels, data = [], []
    for key, times in step_times.items():
        labels.append(key.replace("/", "\n"))
        data.append(np.asarray(times) * 1e3)
    if data:
        ax_dist.boxplot(data, tick_labels=labels, showfliers=True)
    ax_dist.set(ylabel="ms per step", title="Step time distribution (interleaved repeats)")
    ax_dist.tick_params(axis="x", labelsize=7)

    comp = table[table["mode"] != EAGER]
    names = [f"{d}\n{m}\n{c}" for d, m, c in zip(comp["dtype"], comp["mode"], comp["cache"], strict=True)]
    ax_speed.bar(names, comp["speedup"], color=["tab:green" if s >= 1 else "tab:red" for s in comp["speedup"]])
    ax_speed.axhline(1.0, color="k", linewidth=0.8)
    ax_speed.set(ylabel="speedup over eager (median / median)", title="Speedup")
    ax_speed.tick_params(axis="x", labelsize=7)
    ax_comp.bar(names, comp["compile_latency_s"], color=["tab:blue" if c == "cold" else "tab:cyan"
                                                          for c in comp["cache"]])
    ax_comp.set(ylabel="seconds", title="Compile latency (compiled warm-up minus eager warm-up)")
    ax_comp.tick_params(axis="x", labelsize=7)
    where = env.get("device_name", env.get("device", "?"))
    when = env.get("measured_at_utc", "?")
    fig.suptitle(f"{env.get('profile', '?')} profile on {where}, torch {env.get('torch', '?')}, "
                 f"measured {when}", fontsize=11)
    fig.tight_layout()
    return fig
