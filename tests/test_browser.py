"""A real browser: JupyterLab on a free localhost port, driven by Playwright through the
system Chromium (no browser download). Runs all cells of 00_check_setup and of 02 (the key
explorer and tqdm progress bars), and checks that widgets render as widgets and that no cell
errors."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="no Chromium at /usr/bin/chromium (.ci/run installs Debian's chromium)",
    ),
]

STATE_JS = """() => {
  const nb = window.jupyterapp.shell.currentWidget;
  if (!nb || !nb.content || !nb.sessionContext || !nb.sessionContext.session) return null;
  const kernel = nb.sessionContext.session.kernel;
  const cells = nb.content.widgets.filter(c => c.model.type === 'code');
  let errors = [];
  for (const c of cells) {
    for (const o of c.model.outputs.toJSON()) {
      if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
    }
  }
  return {status: kernel ? kernel.status : 'none', total: cells.length,
          done: cells.filter(c => c.model.executionCount !== null).length, errors: errors};
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a copy of the notebooks (the committed ones are never touched)."""
    from compile_ckpt.workshop.distributed import free_port
    from compile_ckpt.workshop.runner import this_python_kernel

    # the notebooks ask for "compile-ckpt": this interpreter, whatever is installed, figures
    # inline (the kernelspec sets MPLBACKEND in the kernel)
    kernel = this_python_kernel()
    kernel.__enter__()
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(
        NOTEBOOKS,
        root / "notebooks",
        ignore=shutil.ignore_patterns("artifacts", ".ipynb_checkpoints"),
    )
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "COMPILE_CKPT_WORKDIR": str(root / "artifacts"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "ws"),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root / 'notebooks'}",
            "--LabApp.expose_app_in_browser=True",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2
                )
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    raise RuntimeError(f"JupyterLab did not start:\n{out[-3000:]}") from None
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}", token, root
    finally:
        proc.terminate()  # JupyterLab is always shut down, whatever happened
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        kernel.__exit__(None, None, None)


def _run_all(page, url: str, token: str, name: str, timeout_s: float = 300) -> dict:
    # reset: no restored tabs from the last page
    page.goto(
        f"{url}/lab/tree/{name}?reset&token={token}"
    )
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=120_000)
    deadline = time.time() + 120
    while True:  # the notebook panel and an idle kernel
        state = page.evaluate(STATE_JS)
        if state and state["status"] == "idle":
            break
        assert time.time() < deadline, f"{name}: kernel never became idle ({state})"
        time.sleep(0.5)
    # Activate this notebook's panel, so the command acts on it and not on another tab.
    page.evaluate("""() => { const app = window.jupyterapp; const nb = app.shell.currentWidget;
                             app.shell.activateById(nb.id);
                             return app.commands.execute('notebook:run-all-cells'); }""")
    deadline, idle_polls = time.time() + timeout_s, 0
    while True:
        time.sleep(1)
        state = page.evaluate(STATE_JS)
        idle_polls = idle_polls + 1 if state["status"] == "idle" else 0
        if idle_polls >= 3 and (state["done"] == state["total"] or state["errors"]):
            return state
        assert time.time() < deadline, f"{name}: cells still running after {timeout_s}s ({state})"


def test_notebooks_render_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    url, token, root = lab
    shots = Path(os.environ.get("BROWSER_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            setup = _run_all(page, url, token, "00_check_setup.ipynb")
            assert setup["errors"] == [] and setup["done"] == setup["total"]
            page.screenshot(path=str(shots / "00_check_setup.png"), full_page=True)

            explorer = _run_all(page, url, token, "02_fix_clean_on_load.ipynb")
            assert explorer["errors"] == [], explorer["errors"]
            assert explorer["done"] == explorer["total"]
            # Widgets rendered as widgets: the explorer's dropdowns and tqdm's progress bars.
            dropdowns = page.locator(".jp-OutputArea-output .widget-dropdown")
            assert dropdowns.count() >= 2
            assert page.locator(".jp-OutputArea-output .widget-hprogress").count() >= 1
            text = page.locator(".jp-OutputArea-output").all_inner_texts()
            assert not any("HBox(children" in t or "Dropdown(" in t for t in text), (
                "a widget rendered as text"
            )
            assert page.locator(".compile-ckpt-explorer").count() >= 1
            page.locator(".compile-ckpt-explorer").first.scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "02_key_explorer.png"))
        finally:
            browser.close()
    assert (shots / "02_key_explorer.png").stat().st_size > 10_000
    # The committed notebooks stayed clean (the lab ran on a copy).
    assert '"outputs": []' in (NOTEBOOKS / "02_fix_clean_on_load.ipynb").read_text()
