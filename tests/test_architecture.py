"""The code's shape: a layered library with no import circles, a key-matching file that runs
alone, no hidden state (a report holds no tensor, the umask is never changed, the workshop's
helpers leave no switch changed in the caller), a public API that is what the docs document,
and a thin library."""

from __future__ import annotations

import ast
import gc
import os
import re
import shutil
import subprocess
import sys
import textwrap

import torch

import compile_ckpt
from compile_ckpt import LoadReport, load_checkpoint, save_checkpoint
from conftest import ROOT, compiled

LIB = ROOT / "src" / "compile_ckpt"
#: Each module may import only those before it (and torch and the standard library).
LAYERS = ["keys", "errors", "atomic", "formats", "layout", "resume", "save", "load", "cli"]


def _package_imports(module: str) -> set[str]:
    tree = ast.parse((LIB / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:  # from . import keys: keys
            found |= {node.module} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("compile_ckpt"):
            found.add(node.module.split(".")[1] if "." in node.module else "__init__")
    return found


def _third_party(module: str) -> set[str]:
    tree = ast.parse((LIB / f"{module}.py").read_text())
    names = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    names |= {
        n.module.split(".")[0]
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module
    }
    return names - set(sys.stdlib_module_names) - {"torch", "compile_ckpt", "__future__"}


def test_each_library_module_builds_only_on_those_below_it():
    on_disk = {p.stem for p in LIB.glob("*.py")} - {"__init__", "__main__"}
    assert on_disk == set(LAYERS), "a new module must take its place in LAYERS"
    for i, module in enumerate(LAYERS):
        above = _package_imports(module) - set(LAYERS[:i])
        assert not above, f"{module} imports {above}, which are not below it: a circle waits"
        # safetensors is imported lazily, inside the functions that write or read it
        assert _third_party(module) <= {"safetensors"}, module


def test_the_key_matching_file_runs_alone_with_torch(tmp_path):
    """Copied on its own into a trainer's folder, keys.py fixes `_orig_mod.` there."""
    shutil.copy(LIB / "keys.py", tmp_path / "keys.py")
    code = textwrap.dedent("""
        import sys, torch
        sys.modules["compile_ckpt"] = None  # the package is not there: only this file
        from keys import clean_state_dict
        model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
        saved = torch.compile(model, backend="eager").state_dict()
        fresh = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU(), torch.nn.Linear(3, 1))
        cleaned, renames = clean_state_dict(saved, fresh)
        fresh.load_state_dict(cleaned)
        print(len(renames), list(saved)[0], "->", list(cleaned)[0])
    """)
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["4", "_orig_mod.0.weight", "->", "0.weight"]


def _holds_tensor(obj: object) -> bool:
    seen, stack = set(), [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, type):
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor):
            return True
        stack.extend(gc.get_referents(item))
    return False


def test_a_load_report_holds_no_tensor(tmp_path, small_model):
    path = save_checkpoint(
        tmp_path / "c.pt", compiled(small_model()), extra={"ema_decay": torch.tensor([0.999])}
    )
    report = load_checkpoint(path, small_model(1))
    assert isinstance(report, LoadReport) and report.loaded == report.total
    assert not _holds_tensor(report)  # before: every loaded tensor, through report._tensors
    assert report.extra["ema_decay"] == "tensor float32 [1]"


def test_saving_never_changes_the_umask(tmp_path, small_model, monkeypatch):
    def forbidden(*args):
        raise AssertionError("os.umask changes a process-wide setting; threads race on it")

    old = os.umask(0o027)
    os.umask(old)
    monkeypatch.setattr(os, "umask", forbidden)
    path = save_checkpoint(tmp_path / "c.pt", small_model())
    assert path.stat().st_mode & 0o777 == 0o666 & ~old


def test_the_docs_document_exactly_the_public_api():
    text = (ROOT / "docs" / "library.md").read_text()
    section = text[text.index("## The API") :]
    section = section[: section.index("\n## ", 3)]
    documented = set(re.findall(r"`([A-Za-z_]+)`", section))
    assert set(compile_ckpt.__all__) <= documented
    private = {n for n in documented if n in dir(compile_ckpt) and n not in compile_ckpt.__all__}
    assert not {n for n in private if not n.startswith("__")}, private


# ------------------------------------------------ the workshop leaves the kernel as it was
def _switches() -> dict[str, object]:
    import torch.distributed as dist

    return {"matmul": torch.get_float32_matmul_precision(),
            "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "process_group": dist.is_available() and dist.is_initialized(),
            "env": {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "MPLBACKEND",
                                                   "COMPILE_CKPT_WORKDIR", "JUPYTER_PATH")}}


def test_tensor_cores_are_switched_on_inside_and_back_off_after():
    from compile_ckpt.workshop.bench import tensor_cores

    before = _switches()
    with tensor_cores(torch.device("cuda")):  # the switches exist without a GPU
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cudnn.allow_tf32
    assert _switches() == before  # before: TF32 stayed on in the notebook's kernel


def test_measuring_ceilings_and_exploring_ddp_leave_no_switch_changed():
    from compile_ckpt.workshop import bench, widgets

    before = _switches()
    bench.measure_ceilings("cpu")
    result = widgets.explore("DDP(torch.compile)", "torch.compile(DDP)")
    assert result["load_checkpoint"] == "loads"  # DDP needed its process group, inside the call
    assert _switches() == before  # before: a process group and MASTER_* stayed in the kernel
