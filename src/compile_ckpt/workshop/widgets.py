"""The checkpoint key explorer (ipywidgets), used by notebooks 01 and 02.

It is drawn through an IPython display handle: in JupyterLab the dropdowns update it live;
under papermill (no front end) the initial view is ordinary HTML output, so notebooks execute
unchanged and nothing waits for a click.
"""

from __future__ import annotations

import html
import itertools
from typing import Any

from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from .. import WRAPPER_SEGMENTS, CheckpointError, load_checkpoint
from .distributed import single_process_group
from .model import TINY_CONFIG, WRAPPINGS, build_model, wrap

LOADERS = (
    "plain load_state_dict",
    "strip leading '_orig_mod.' (the original fix)",
    "load_checkpoint",
)
#: The loaders that are plain PyTorch (notebook 01 shows only these: the library comes in 02).
PLAIN_LOADERS = LOADERS[:2]


def _wrapped(kind: str, seed: int) -> Any:
    return wrap(build_model(TINY_CONFIG, seed=seed), kind)


def _outcome(fn: Any) -> str:
    try:
        fn()
        return "loads"
    except (RuntimeError, CheckpointError) as exc:
        return f"fails: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def explore(save_as: str, load_into: str, library: bool = True) -> dict[str, Any]:
    """Save from one wrapping, load into another: both key lists and what each loader does
    (``library=False``: the plain-PyTorch loaders only). DDP gets a process group of size 1
    for the call, gone when it returns."""
    with single_process_group():
        return _explore(save_as, load_into, LOADERS if library else PLAIN_LOADERS)


def _explore(save_as: str, load_into: str, loaders: tuple[str, ...]) -> dict[str, Any]:
    sd = _wrapped(save_as, 0).state_dict()

    def seed_fix() -> None:
        stripped = dict(sd)
        consume_prefix_in_state_dict_if_present(stripped, "_orig_mod.")
        _wrapped(load_into, 3).load_state_dict(stripped)

    outcomes = [
        lambda: _wrapped(load_into, 2).load_state_dict(sd),
        seed_fix,
        lambda: load_checkpoint(sd, _wrapped(load_into, 4)),
    ]
    return {
        "save_as": save_as,
        "load_into": load_into,
        "saved_keys": list(sd),
        "expected_keys": list(_wrapped(load_into, 1).state_dict()),
        **{
            name: _outcome(fn)
            for name, fn in zip(LOADERS, outcomes, strict=True)
            if name in loaders
        },
    }


def _highlight(key: str) -> str:
    return ".".join(
        f"<b style='color:#c5221f'>{html.escape(p)}</b>"
        if p in WRAPPER_SEGMENTS
        else html.escape(p)
        for p in key.split(".")
    )


def render(result: dict[str, Any], limit: int = 6) -> str:
    """HTML: the two key lists side by side (wrapper segments in red), then the outcome of each
    loader the result holds."""
    saved, expected = result["saved_keys"][:limit], result["expected_keys"][:limit]
    rows = "".join(
        f"<tr><td><code>{_highlight(a)}</code></td><td><code>{_highlight(b)}</code></td></tr>"
        for a, b in itertools.zip_longest(saved, expected, fillvalue="")
    )
    outcomes = "".join(
        f"<tr><td>{html.escape(k)}</td><td style='color:"
        f"{'#137333' if result[k] == 'loads' else '#c5221f'}'>{html.escape(result[k])}</td></tr>"
        for k in LOADERS
        if k in result
    )
    return (
        f"<div class='compile-ckpt-explorer'><h4>saved from <i>"
        f"{html.escape(result['save_as'])}</i>, loaded into <i>"
        f"{html.escape(result['load_into'])}</i></h4><table><tr><th>keys in the file</th>"
        f"<th>keys the target expects</th></tr>{rows}</table><table><tr><th>loader</th>"
        f"<th>outcome</th></tr>{outcomes}</table></div>"
    )


def key_explorer(
    save_as: str = "torch.compile", load_into: str = "plain", library: bool = True
) -> dict[str, Any]:
    """Show the explorer (``library=False``: plain-PyTorch loaders only); return the result
    for the initial choice."""
    import ipywidgets as w
    from IPython.display import HTML, display

    save_dd = w.Dropdown(options=WRAPPINGS, value=save_as, description="saved from")
    load_dd = w.Dropdown(options=WRAPPINGS, value=load_into, description="loaded into")
    result = explore(save_as, load_into, library)
    display(w.HBox([save_dd, load_dd]))
    handle = display(HTML(render(result)), display_id=True)

    def redraw(_change: Any = None) -> None:
        handle.update(HTML(render(explore(save_dd.value, load_dd.value, library))))

    save_dd.observe(redraw, names="value")
    load_dd.observe(redraw, names="value")
    return result
