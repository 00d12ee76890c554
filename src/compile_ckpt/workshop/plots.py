"""Figures for the notebooks and the GPU results: loss curves, and cumulative training time
of eager against each compile route with the break-even step marked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np


def plot_loss_curves(curves: Mapping[str, Sequence[float]], title: str = "Training loss per epoch") -> plt.Figure:
    """Each named curve after the previous one on a shared epoch axis (pretraining, then final)."""
    fig, ax = plt.subplots(figsize=(7, 3.5))
    start = 1
    for name, losses in curves.items():
        ax.plot(range(start, start + len(losses)), losses, marker="o", label=name)
        start += len(losses)
    ax.set(xlabel="epoch (all phases)", ylabel="MSE", title=title, yscale="log")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_cumulative(routes: Mapping[str, tuple[float, float]], eager_step_s: float, *, title: str,
                    horizon: int | None = None) -> plt.Figure:
    """Cumulative wall time against training steps: eager starts at 0 and costs
    ``eager_step_s`` a step; each route ``name -> (seconds before its first step, seconds a
    step)`` starts late (compiling) and, if its steps are faster, crosses eager at its
    break-even step, which is marked."""
    crossings = {name: start / (eager_step_s - step) for name, (start, step) in routes.items() if step < eager_step_s}
    horizon = horizon or int(min(max(crossings.values(), default=500) * 1.5, 1e7)) or 100
    steps = np.linspace(0, horizon, 200)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps, steps * eager_step_s, "k-", label="eager")
    for i, (name, (start, step)) in enumerate(routes.items()):
        (line,) = ax.plot(steps, start + steps * step, "--", label=name)
        if name in crossings and crossings[name] <= horizon:
            be = crossings[name]
            ax.plot([be], [be * eager_step_s], "o", color=line.get_color())
            ax.annotate(f"{be:,.0f}", (be, be * eager_step_s), xytext=(4, -12 if i % 2 else 6),
                        textcoords="offset points", fontsize=8, color=line.get_color())
    ax.set(xlabel="training steps", ylabel="cumulative wall time (s)", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
