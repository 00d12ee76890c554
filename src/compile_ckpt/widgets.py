"""Interactive views for workshops (ipywidgets).

Every view is drawn through an IPython display handle: in JupyterLab the controls update
it live; under papermill (no front end) the initial view is an ordinary HTML output, so the
notebooks execute unchanged and nothing ever blocks waiting for a click.
"""

from __future__ import annotations

import html
from typing import Any

import torch
from torch import nn

from .checkpoint import WRAPPER_SEGMENTS, CheckpointError, load_checkpoint
from .distributed import single_process_group
from .model import TINY_CONFIG, ModelConfig, build_model
from .recipes import seed_clean_on_load

WRAPPINGS = ("plain", "torch.compile", "compiled submodule", "DDP", "DDP(torch.compile)",
             "torch.compile(DDP)", "checkpoint_wrapper")
_GROUP: Any = None


def _ensure_group() -> None:
    """DDP needs a process group; the explorer keeps one of world size 1 for the session."""
    global _GROUP
    import torch.distributed as dist

    if not dist.is_initialized():
        _GROUP = single_process_group()
        _GROUP.__enter__()


def wrapped(kind: str, seed: int = 0) -> nn.Module:
    """The small workshop model wrapped the way ``kind`` names (see ``WRAPPINGS``)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    m = build_model(TINY_CONFIG, seed=seed)
    comp = lambda x: torch.compile(x, backend="eager")  # noqa: E731 - same keys as inductor
    if kind == "plain":
        return m
    if kind == "torch.compile":
        return comp(m)
    if kind == "compiled submodule":
        m.cnn_layers = comp(m.cnn_layers)
        return m
    if kind == "checkpoint_wrapper":
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        m.cnn_layers = checkpoint_wrapper(m.cnn_layers)
        return m
    _ensure_group()
    if kind == "DDP":
        return DDP(m)
    if kind == "DDP(torch.compile)":
        return DDP(comp(m))
    if kind == "torch.compile(DDP)":
        return comp(DDP(m))
    raise ValueError(f"unknown wrapping {kind!r}; choose from {WRAPPINGS}")


def _try(fn: Any) -> str:
    try:
        out = fn()
        return f"loads{': ' + str(out) if out else ''}"
    except (RuntimeError, CheckpointError) as exc:
        return f"fails: {type(exc).__name__}: {str(exc).splitlines()[0]}"


def explore(save_as: str, load_into: str) -> dict[str, Any]:
    """Save from one wrapping, load into another: both key lists and what three loaders do."""
    src, dst = wrapped(save_as, 0), wrapped(load_into, 1)
    saved = list(src.state_dict())
    expected = list(dst.state_dict())
    sd = src.state_dict()
    return {
        "save_as": save_as, "load_into": load_into, "saved_keys": saved, "expected_keys": expected,
        "plain load_state_dict": _try(lambda: wrapped(load_into, 2).load_state_dict(sd) and None),
        "seed's fix": _try(lambda: wrapped(load_into, 3).load_state_dict(seed_clean_on_load(sd)) and None),
        "load_checkpoint": _try(lambda: load_checkpoint(sd, wrapped(load_into, 4))),
    }


def _highlight(key: str) -> str:
    parts = [f"<b style='color:#c5221f'>{html.escape(p)}</b>" if p in WRAPPER_SEGMENTS else html.escape(p)
             for p in key.split(".")]
    return ".".join(parts)


def render(result: dict[str, Any], limit: int = 6) -> str:
    """HTML: the two key lists side by side (wrapper segments in red), then each loader's outcome."""
    rows = "".join(
        f"<tr><td><code>{_highlight(a) if a else ''}</code></td><td><code>{_highlight(b) if b else ''}</code></td></tr>"
        for a, b in zip(result["saved_keys"][:limit] + [""] * limit,
                        result["expected_keys"][:limit] + [""] * limit, strict=False)
        if a or b)
    outcomes = "".join(
        f"<tr><td>{html.escape(k)}</td><td style='color:{'#137333' if v.startswith('loads') else '#c5221f'}'>"
        f"{html.escape(v)}</td></tr>" for k, v in result.items() if k in
        ("plain load_state_dict", "seed's fix", "load_checkpoint"))
    return (f"<div class='compile-ckpt-explorer'><h4>saved from <i>{html.escape(result['save_as'])}</i>, "
            f"loaded into <i>{html.escape(result['load_into'])}</i></h4>"
            f"<table><tr><th>keys in the file</th><th>keys the target expects</th></tr>{rows}</table>"
            f"<table><tr><th>loader</th><th>outcome</th></tr>{outcomes}</table></div>")


def key_explorer(save_as: str = "torch.compile", load_into: str = "plain") -> dict[str, Any]:
    """Show the checkpoint key explorer; return the result for the initial choice."""
    import ipywidgets as w
    from IPython.display import HTML, display

    save_dd = w.Dropdown(options=WRAPPINGS, value=save_as, description="saved from")
    load_dd = w.Dropdown(options=WRAPPINGS, value=load_into, description="loaded into")
    result = explore(save_as, load_into)
    display(w.HBox([save_dd, load_dd]))
    handle = display(HTML(render(result)), display_id=True)

    def redraw(_change: Any = None) -> None:
        handle.update(HTML(render(explore(save_dd.value, load_dd.value))))

    save_dd.observe(redraw, names="value")
    load_dd.observe(redraw, names="value")
    return result


def benchmark_explorer(batch_size: int = 32, width: int = 32, mode: str = "default", dtype: str = "float32",
                       repeats: int = 5) -> None:
    """Controls for a short eager-vs-compiled benchmark; "Run" measures with a progress bar
    and redraws the plot. Nothing runs until the button is pressed."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import HTML, display

    from .bench import Profile, run_profile
    from .plots import plot_benchmark

    batch = w.IntSlider(value=batch_size, min=8, max=512, step=8, description="batch")
    wid = w.IntSlider(value=width, min=8, max=256, step=8, description="width")
    mode_dd = w.Dropdown(options=["default", "reduce-overhead", "max-autotune-no-cudagraphs"], value=mode,
                         description="mode")
    dtype_dd = w.Dropdown(options=["float32", "bf16"], value=dtype, description="dtype")
    button = w.Button(description="Run", button_style="primary")
    out = w.Output()
    display(w.VBox([w.HBox([batch, wid]), w.HBox([mode_dd, dtype_dd, button]), out]))
    status = display(HTML("<i>Choose sizes and press Run: eager and compiled steps are timed side by side.</i>"),
                     display_id=True)

    def run(_b: Any = None) -> None:
        prof = Profile("explorer", ModelConfig(cnn_channels=(wid.value, wid.value), dropout=0.0),
                       batch_size=batch.value, modes=("eager", mode_dd.value), dtypes=(dtype_dd.value,),
                       warmup_steps=2, repeats=repeats, steps_per_repeat=2, n_batches=2)
        out.clear_output()
        with out:
            table, env, steps = run_profile(prof)
            plot_benchmark(table, steps, env)
            plt.show()
        row = table.iloc[1]
        status.update(HTML(f"{mode_dd.value}: {row['speedup']:.2f}x over eager, "
                           f"compile {row['compile_latency_s']:.1f}s"))

    button.on_click(run)
