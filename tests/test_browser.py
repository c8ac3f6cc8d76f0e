"""The notebooks run in JupyterLab as a reader runs them: in a real browser.

A JupyterLab server on 127.0.0.1 serves a temporary copy of ``notebooks/``; a headless
Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium) opens the five
notebooks in order, 01 to 05, each in its own tab with its own ``python3`` kernel, and runs
all cells with the smoke profile. After each run the test checks what the page shows:

* every code cell ran (its prompt shows an execution count, ``[7]:``);
* no cell shows an error output (a traceback); warnings on stderr are not errors;
* every figure cell (a code cell whose source calls ``save_figure(``) shows an image.

A screenshot of each executed notebook is saved as ``<folder>/<notebook>.png``, the folder
being ``$BRAINVQ_SCREENSHOT_DIR`` or ``<BRAINVQ_RUNS_DIR>/browser-screenshots``.

The kernels get the smoke profile and a run directory of their own (a fresh folder under
the runs folder), so this test shares no state with the nbval run of the notebooks. The
test is skipped only where Chromium, chromedriver, Selenium or JupyterLab cannot be found.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from brainvq_utils import paths

NOTEBOOK_TIMEOUT_S = 300   # per notebook; each takes well under a minute under nbval in smoke
SERVER_START_TIMEOUT_S = 90
WINDOW_WIDTH = 1400
INSTALL_HINT = "install them with `apt-get install chromium chromium-driver` and `pip install -e .[dev]`"

# JupyterLab settings for the test's own (temporary) user-settings folder.
LAB_SETTINGS = {
    # Render every cell: by default JupyterLab 4 skips the rendering of cells far off screen,
    # which would hide them from the checks and blank them in the screenshot.
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "scrollPastEnd": False},
    # No news or update toasts over the notebook (and no requests to the internet).
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False,
                                                     "doNotDisturbMode": True},
}


# --------------------------------------------------------------------------- what is missing


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _missing_tools() -> list[str]:
    missing = []
    if _chromium() is None:
        missing.append("Chromium (`chromium` on PATH)")
    if shutil.which("chromedriver") is None:
        missing.append("chromedriver (`chromedriver` on PATH)")
    for module, what in (("selenium", "the Python package selenium"), ("jupyterlab", "the Python package jupyterlab")):
        if importlib.util.find_spec(module) is None:
            missing.append(what)
    return missing


# --------------------------------------------------------------------------- JupyterLab server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _api(base_url: str, token: str, path: str, method: str = "GET", timeout: float = 5.0):
    request = urllib.request.Request(f"{base_url}{path}", method=method,
                                     headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read()
    return json.loads(body) if body else None


def _log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


class LabServer:
    """``jupyter lab`` on 127.0.0.1 serving ``root``; the kernels inherit ``env``."""

    def __init__(self, root: Path, home: Path, env: dict):
        self.root, self.home, self.env = root, home, env
        self.port, self.token = _free_port(), secrets.token_hex(24)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = home / "jupyterlab.log"
        self.process: subprocess.Popen | None = None

    def start(self):
        settings = self.home / "lab-settings"
        for plugin, values in LAB_SETTINGS.items():
            target = settings / f"{plugin}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        env = dict(self.env)
        for name in ("CONFIG", "DATA", "RUNTIME"):   # no user config, extensions or kernels leak in
            env[f"JUPYTER_{name}_DIR"] = str(self.home / name.lower())
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
                   "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
                   f"--ServerApp.root_dir={self.root}", f"--IdentityProvider.token={self.token}",
                   "--ServerApp.terminals_enabled=False", "--LabApp.expose_app_in_browser=True",
                   f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={self.home / 'workspaces'}"]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.root, env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n{_log_tail(self.log)}")
            try:
                _api(self.base_url, self.token, "/api/status", timeout=2)
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        raise RuntimeError(f"jupyter lab did not answer within {SERVER_START_TIMEOUT_S} s:\n{_log_tail(self.log)}")

    def stop(self):
        """Shut down the kernels and the server; kill what is left."""
        if self.process is None or self.process.poll() is not None:
            return
        try:   # kernels run in sessions of their own: end them through the server
            for kernel in _api(self.base_url, self.token, "/api/kernels") or []:
                _api(self.base_url, self.token, f"/api/kernels/{kernel['id']}", method="DELETE", timeout=30)
            _api(self.base_url, self.token, "/api/shutdown", method="POST")
        except (OSError, urllib.error.URLError, ValueError):
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# --------------------------------------------------------------------------- browser side

# Each script runs in the page; the notebook panels opened by the test are kept in window.__bvq.
_WAIT_FOR_APP_JS = """
const done = arguments[arguments.length - 1];
const deadline = Date.now() + arguments[0] * 1000;
(async () => {
  while (!window.jupyterapp) {
    if (Date.now() > deadline) throw new Error("window.jupyterapp never appeared");
    await new Promise(r => setTimeout(r, 200));
  }
  await window.jupyterapp.restored;
  window.jupyterapp.shell.collapseLeft();
  window.jupyterapp.shell.collapseRight();
  window.__bvq = {};
})().then(() => done(null), e => done(String(e && e.stack || e)));
"""

_OPEN_JS = """
const [path, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const app = window.jupyterapp;
  const panel = await app.commands.execute("docmanager:open",
                                           {path, factory: "Notebook", kernel: {name: "python3"}});
  await panel.context.ready;
  await panel.sessionContext.ready;
  app.shell.activateById(panel.id);
  window.__bvq[path] = {panel, result: null};
})().then(() => done(null), e => done(String(e && e.stack || e)));
"""

_RUN_ALL_JS = """
const entry = window.__bvq[arguments[0]];
window.jupyterapp.shell.activateById(entry.panel.id);
window.jupyterapp.commands.execute("notebook:run-all-cells").then(
  ok => { entry.result = ok ? "ok" : "failed"; }, e => { entry.result = "error: " + e; });
"""

_STATE_JS = """
const entry = window.__bvq[arguments[0]];
const panel = entry.panel;
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
const cells = panel.content.widgets.map(cell => {
  const model = cell.model;
  const outputs = model.type === "code" ? model.outputs.toJSON() : [];
  const prompt = cell.node.querySelector(".jp-InputPrompt");
  const images = Array.from(cell.node.querySelectorAll(".jp-OutputArea-output img"));
  return {
    type: model.type,
    inDocument: document.body.contains(cell.node),
    prompt: prompt ? prompt.textContent.trim() : null,
    executionCount: model.type === "code" ? model.executionCount : null,
    errors: outputs.filter(o => o.output_type === "error").map(o => o.ename + ": " + o.evalue),
    errorNodes: cell.node.querySelectorAll('[data-mime-type="application/vnd.jupyter.error"]').length,
    images: images.filter(img => img.complete && img.naturalWidth > 0).length,
    streamText: outputs.filter(o => o.output_type === "stream").map(o => [].concat(o.text).join("")).join("").slice(-20000),
    widgets: outputs.filter(o => o.data && o.data["application/vnd.jupyter.widget-view+json"]).length,
    firstLine: model.sharedModel.getSource().split("\\n")[0].slice(0, 100),
  };
});
return {kernel: kernel ? kernel.status : "no kernel", runAll: entry.result,
        windowingMode: panel.content.notebookConfig.windowingMode, cells};
"""

_SCROLLER_JS = """
const node = window.__bvq[arguments[0]].panel.content.node;
const scroller = node.querySelector(".jp-WindowedPanel-outer") || node;
scroller.scrollTop = 0;
return {innerHeight: window.innerHeight, clientHeight: scroller.clientHeight, scrollHeight: scroller.scrollHeight};
"""

_CLOSE_JS = """
const [path, done] = [arguments[0], arguments[arguments.length - 1]];
const panel = window.__bvq[path].panel;
panel.sessionContext.shutdown().then(() => { panel.dispose(); done(null); }, e => done(String(e)));
"""


def _start_browser():
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = _chromium()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--hide-scrollbars", f"--window-size={WINDOW_WIDTH},1000", "--no-first-run"):
        options.add_argument(argument)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"), log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_script_timeout(180)
    return driver


def _call(driver, script, *args):
    """Run an async script whose callback gets None or an error message."""
    error = driver.execute_async_script(script, *args)
    if error:
        raise AssertionError(error)


def _running(state) -> list[str]:
    return [f"cell {i} ({cell['firstLine']!r})" for i, cell in enumerate(state["cells"]) if "*" in (cell["prompt"] or "")]


def _run_notebook(driver, name: str, timeout: float) -> dict:
    """Open ``name`` in its own tab, run all cells, wait until nothing runs or is queued."""
    _call(driver, _OPEN_JS, name)
    state = _wait(driver, name, lambda s: s["kernel"] == "idle", 120, "the kernel to start")
    assert state["windowingMode"] == "none", f"{name}: notebook windowing is {state['windowingMode']!r}, not 'none'"
    driver.execute_script(_RUN_ALL_JS, name)
    return _wait(driver, name, lambda s: s["runAll"] is not None and s["kernel"] == "idle" and not _running(s),
                 timeout, "all cells to run")


def _wait(driver, name, done, timeout, what) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = driver.execute_script(_STATE_JS, name)
        if done(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: timed out after {timeout:.0f} s waiting for {what}; kernel "
                                 f"{state['kernel']}, still running or queued: {', '.join(_running(state)) or 'none'}")
        time.sleep(0.5)


def _screenshot(driver, name: str, target: Path):
    """A PNG of the whole notebook: make the page as tall as the notebook, then capture it."""
    size = driver.execute_script(_SCROLLER_JS, name)
    height = size["innerHeight"] - size["clientHeight"] + size["scrollHeight"]
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": WINDOW_WIDTH, "height": height, "deviceScaleFactor": 1, "mobile": False})
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:   # JupyterLab lays the panels out again after the resize
            size = driver.execute_script(_SCROLLER_JS, name)
            if size["clientHeight"] >= size["scrollHeight"] - 1:
                break
            time.sleep(0.2)
        time.sleep(0.5)   # let the last frame paint
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "fromSurface": True})
        target.write_bytes(base64.b64decode(shot["data"]))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


# --------------------------------------------------------------------------- checks


def _figure_cells(cells: list[dict]) -> list[int]:
    """Indices (in the notebook's cell list) of the code cells that call save_figure."""
    return [i for i, cell in enumerate(cells)
            if cell["cell_type"] == "code" and "save_figure(" in "".join(cell["source"])]


def _problems(cells: list[dict], state: dict) -> list[str]:
    """What the page shows wrong, matching its cells to the notebook file's ``cells`` by order."""
    if len(state["cells"]) != len(cells):
        return [f"the page shows {len(state['cells'])} cells, the notebook has {len(cells)}"]
    problems = [f"run-all-cells ended with {state['runAll']!r}"] if state["runAll"] != "ok" else []
    figures = set(_figure_cells(cells))
    for i, (cell, shown) in enumerate(zip(cells, state["cells"])):
        where = f"cell {i} ({shown['firstLine']!r})"
        if shown["type"] != cell["cell_type"]:
            problems.append(f"{where} is a {shown['type']} cell on the page, a {cell['cell_type']} cell in the file")
            continue
        if not shown["inDocument"]:
            problems.append(f"{where} is not in the page (notebook windowing left it out)")
        if cell["cell_type"] != "code":
            continue
        prompt = shown["prompt"] or ""
        if not (isinstance(shown["executionCount"], int) and prompt.strip("[]: ").isdigit()):
            problems.append(f"{where} did not run: prompt {prompt!r}")
        if shown["errors"] or shown["errorNodes"]:
            problems.append(f"{where} shows an error: {'; '.join(shown['errors']) or 'error output'}")
        # Every figure cell must show its figure; in smoke all of them draw one (05's conditioned
        # samples too: the synthetic cohort knows slice positions, so the prior is conditioned).
        if i in figures and not shown["images"]:
            problems.append(f"{where} calls save_figure but shows no image")
        source = "".join(cell["source"])
        # Interactive use: training shows Keras' live bar (its "━" characters), sampling a tqdm widget.
        if re.search(r"training\.train_(vqvae|prior)\(", source) and "━" not in shown["streamText"]:
            problems.append(f"{where} trains but shows no Keras progress bar")
        if "sampling.sample(" in source and not shown["widgets"]:
            problems.append(f"{where} samples but shows no tqdm progress bar")
    return problems


# --------------------------------------------------------------------------- the test


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on a copy of the notebooks, with the smoke profile and a fresh run directory."""
    missing = _missing_tools()
    if missing:
        pytest.skip(f"the browser test needs {', '.join(missing)}: {INSTALL_HINT}")
    root = tmp_path / "notebooks"
    root.mkdir()
    for notebook in sorted(paths.notebooks_dir().glob("*.ipynb")):
        shutil.copy2(notebook, root / notebook.name)
    runs_dir = paths.runs_dir()
    runs_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, BRAINVQ_PROFILE="smoke",
               BRAINVQ_RUN_DIR=tempfile.mkdtemp(prefix="notebooks-browser-", dir=runs_dir))
    env.pop("MPLBACKEND", None)   # the kernel then picks the inline backend, and save_figure shows figures
    env.pop("BRAINVQ_HEADLESS", None)   # as a person would: live Keras bars and tqdm widgets
    (tmp_path / "lab").mkdir()
    server = LabServer(root, tmp_path / "lab", env)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def browser(lab):
    driver = _start_browser()
    try:
        yield driver
    finally:
        driver.quit()


def _screenshot_dir() -> Path:
    folder = os.environ.get("BRAINVQ_SCREENSHOT_DIR")
    return Path(folder) if folder else paths.runs_dir() / "browser-screenshots"


@pytest.mark.slow
def test_notebooks_run_in_jupyterlab_in_a_browser(lab, browser):
    shots = _screenshot_dir()
    shots.mkdir(parents=True, exist_ok=True)
    print(f"\nJupyterLab at {lab.base_url}, run directory {lab.env['BRAINVQ_RUN_DIR']}, screenshots in {shots}")
    browser.get(f"{lab.base_url}/lab?token={lab.token}")
    _call(browser, _WAIT_FOR_APP_JS, 120)
    notebooks = sorted(lab.root.glob("*.ipynb"))
    assert notebooks, f"no notebooks in {paths.notebooks_dir()}"
    for notebook in notebooks:
        started = time.monotonic()
        cells = json.loads(notebook.read_text())["cells"]   # read before JupyterLab autosaves outputs into it
        _run_notebook(browser, notebook.name, NOTEBOOK_TIMEOUT_S)
        _screenshot(browser, notebook.name, shots / f"{notebook.stem}.png")   # before the checks: failures get one too
        state = browser.execute_script(_STATE_JS, notebook.name)   # read after the screenshot: images have decoded
        problems = _problems(cells, state)
        assert not problems, f"{notebook.name} in JupyterLab:\n  " + "\n  ".join(problems)
        print(f"{notebook.name}: {sum(c['type'] == 'code' for c in state['cells'])} code cells ran, "
              f"{len(_figure_cells(cells))} figures shown, {time.monotonic() - started:.0f} s")
        _call(browser, _CLOSE_JS, notebook.name)   # frees the kernel's memory before the next notebook
