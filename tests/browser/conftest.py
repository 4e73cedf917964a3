"""Real-browser harness: JupyterLab 4, Notebook 7 and Voila servers on free ports, headless Chromium
via Playwright.

Facts this follows (measured, see ../shared/NOTES.md): Playwright drives the system Chromium
(never ``playwright install``); each server gets throwaway ``JUPYTER_*`` and ``IPYTHONDIR``
directories and the JupyterLab news pop-up is disabled; ``expose_app_in_browser`` gives the test
``window.jupyterapp``; CDN requests are aborted (no network here, Voila asks for fonts). The
kernels inherit ``PYTHONPATH`` from the servers, so they import this checkout.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "tests" / "_artifacts"
RUN_TIMEOUT = 240_000  # ms: a cold kernel imports torch and builds the widgets on 2 shared cores

# The notebook the browser opens. It uses the embedded models when the zoo has them and falls back
# to small random-weight stand-ins otherwise, so the harness tests the widgets, not the weights.
SETUP = r"""
import os, torch
import ipywidgets as W
from torch import nn
from IPython.display import display
from guidewidgets.widgets import ExplainWidget, GuideWidget
torch.set_num_threads(1)

class TinyCNN(nn.Module):
    classes = ["red", "green", "blue", "grey"]; task = "classification"; default_explain_layer = "features.2"
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, 4)
    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))

class TinySeg(nn.Module):
    classes = ["background", "disc", "bar"]; task = "segmentation"; default_guide_layer = "enc.2"
    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, 3, 1)
    def forward(self, x):
        return nn.functional.interpolate(self.head(self.enc(x)), size=x.shape[-2:], mode="bilinear", align_corners=False)

torch.manual_seed(0)
try:
    ew = ExplainWidget()
except Exception as err:  # zoo weights not there: a stand-in
    print("stand-in classifier:", type(err).__name__, err)
    ew = ExplainWidget(TinyCNN().eval(), torch.rand(3, 3, 64, 64))
try:
    gw = GuideWidget()
except Exception as err:
    print("stand-in segmenter:", type(err).__name__, err)
    gw = GuideWidget(TinySeg().eval(), torch.rand(3, 64, 64))
"""

EXPLAIN_CELL = r"""
ew.session.options["rise"] = {"masks": 8000}  # slow on purpose: the test works the other controls meanwhile
ew.add_class("gw-explain")
display(ew)
"""

GUIDE_CELL = r"""
# The hint the test paints: the deepest pixel of an error region, labelled with its true class;
# of those the guide satisfies (tried here and undone), the one that helps most. The test checks
# the widget's plumbing, not how strong the guide is on this scene.
import numpy as np
from scipy import ndimage
from guidewidgets.widgets.guide_widget import iou_per_class

def candidates():
    if gw.mask is not None:
        wrong = gw._prediction != gw.mask
        for k in np.unique(gw.mask[wrong]):
            depth = ndimage.distance_transform_edt(wrong & (gw.mask == k))
            yield tuple(int(v) for v in np.unravel_index(depth.argmax(), depth.shape)) + (int(k),)
    y, x = gw.height // 2, gw.width // 2
    for k in range(1, gw.num_classes):
        if k != int(gw._prediction[y, x]):
            yield y, x, k

best = None
for y, x, cls in list(candidates())[:8]:
    gw.guide.add_stroke([(y, x)], cls, radius=2)
    gw.guide.run()
    pred = gw.guide.prediction().cpu().numpy()
    score = np.nanmean(iou_per_class(pred, gw.mask, gw.num_classes)) if gw.mask is not None else 0.0
    if pred[y, x] == cls and (best is None or score > best[0]):
        best = (score, y, x, cls)
    gw.guide.reset(clear_hints=True)
_, y, x, cls = best
gw.brush_class, gw.brush_radius = cls, 2
gw.add_class("gw-guide")
display(W.HTML(f'<div class="gw-hint" data-y="{y}" data-x="{x}" data-scale="{gw.view.scale}" data-cls="{cls}"></div>'))
display(gw)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path: Path) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(SETUP),
        nbformat.v4.new_code_cell(EXPLAIN_CELL),
        nbformat.v4.new_code_cell(GUIDE_CELL),
    ]
    nbformat.write(nb, path)


def server_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_RUNTIME_DIR", "IPYTHONDIR"):
        d = tmp / name.lower()
        d.mkdir(parents=True, exist_ok=True)
        env[name] = str(d)
    labconfig = tmp / "jupyter_config_dir" / "labconfig"
    labconfig.mkdir(parents=True, exist_ok=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    env.pop("JUPYTER_PATH", None)
    return env


class Server:
    """A Jupyter server subprocess in its own process group, stopped (only it) at the end."""

    def __init__(
        self,
        cmd: list[str],
        port: int,
        env: dict[str, str],
        cwd: Path,
        log: Path,
        ready: str,
        shutdown: str | None = None,
    ) -> None:
        self.port, self.log_path, self.shutdown = port, log, shutdown
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd[2]} exited: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + ready, timeout=2)
                return
            except urllib.error.HTTPError:
                return  # it answers (a 404 is an answer)
            except Exception:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"{cmd[2]} did not answer within 90 s: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None and self.shutdown:
            try:  # the server's own shutdown stops its kernels at once (SIGTERM waits for them)
                urllib.request.urlopen(urllib.request.Request(self.url + self.shutdown, method="POST"), timeout=5)
                self.proc.wait(10)
            except Exception:
                pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own session only
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="session")
def browser_tmp(tmp_path_factory) -> Path:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: run `make chromium` (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    tmp = tmp_path_factory.mktemp("browser")
    write_notebook(tmp / "widgets.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return tmp


@pytest.fixture(scope="session")
def browser(browser_tmp):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1800}, device_scale_factor=1)
    context.route("https://**/*", lambda route: route.abort())  # no CDN fonts offline
    p = context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    p.errors = errors
    p.set_default_timeout(90_000)  # clicks and waits on a loaded 2-core machine
    try:
        yield p
    finally:
        with contextlib.suppress(Exception):  # what the page looked like at the end: for a failure's post-mortem
            p.screenshot(path=str(ARTIFACTS / "last_page.png"), full_page=True)
        context.close()


def _jupyter_server_flags(port: int) -> list[str]:
    """What JupyterLab and Notebook 7 share: local, no token, no browser, no XSRF check."""
    return [
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.token=",
        "--ServerApp.password=",
        "--IdentityProvider.token=",
        "--ServerApp.disable_check_xsrf=True",
    ]


def _jupyter_server(browser_tmp, app: str, name: str, log: str, *app_flags: str) -> Server:
    """JupyterLab or Notebook 7 (``app``) on a free port, rooted at ``browser_tmp``, its settings
    under ``browser_tmp / name`` and its output in ``ARTIFACTS / log``."""
    port = free_port()
    return Server(
        [sys.executable, "-m", app, *_jupyter_server_flags(port), *app_flags, f"--ServerApp.root_dir={browser_tmp}"],
        port,
        server_env(browser_tmp / name),
        browser_tmp,
        ARTIFACTS / log,
        "/api/status",
        shutdown="/api/shutdown",
    )


@pytest.fixture(scope="session")
def lab_server(browser_tmp):
    s = _jupyter_server(
        browser_tmp,
        "jupyterlab",
        "lab",
        "jupyterlab.log",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    )
    yield s
    s.stop()


@pytest.fixture(scope="session")
def notebook_server(browser_tmp):
    s = _jupyter_server(
        browser_tmp, "notebook", "nb7", "notebook7.log", "--JupyterNotebookApp.expose_app_in_browser=True"
    )
    yield s
    s.stop()


@pytest.fixture(scope="session")
def voila_server(browser_tmp):
    port = free_port()
    s = Server(
        [
            sys.executable,
            "-m",
            "voila",
            "widgets.ipynb",
            "--no-browser",
            f"--port={port}",
            "--Voila.ip=127.0.0.1",
            "--VoilaConfiguration.file_allowlist=['.*']",
        ],
        port,
        server_env(browser_tmp / "voila"),
        browser_tmp,
        ARTIFACTS / "voila.log",
        "/no-such-page",
    )
    yield s
    s.stop()


# A hash of an <img>'s pixels (drawn into a canvas), or null while it has none; arg: a CSS selector.
IMG_HASH = """(sel) => {
  const img = document.querySelector(sel);
  if (!img || !img.complete || img.naturalWidth === 0) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 4) { h = (h * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2]) % 1000000007; }
  return h;
}"""


# ipycanvas' MultiCanvas shows its layers composited into one <canvas>: we read that, what a user sees.
# A hash of its pixels, or null while nothing is drawn yet; arg: a CSS selector of the widget.
CANVAS_HASH = """(sel) => {
  const c = document.querySelector(sel + ' canvas');
  if (!c) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0, alpha = 0;
  for (let i = 0; i < d.length; i += 4) { h = (h * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2] + 17 * d[i + 3]) % 1000000007; alpha += d[i + 3]; }
  return alpha > 0 ? h : null;
}"""


def stable_hash(page, script: str, sel: str, timeout: int) -> int:
    """Wait until ``script`` (CANVAS_HASH or IMG_HASH) sees a picture and no further frame arrives."""
    page.wait_for_function(script, arg=sel, timeout=timeout)  # something is drawn
    h = None
    for _ in range(20):  # and nothing more is arriving
        page.wait_for_timeout(250)
        new = page.evaluate(script, sel)
        if new == h:
            return h
        h = new
    return h


def wait_hash(
    page, script: str, sel: str, timeout: int, *, equal: int | None = None, differ: int | None = None
) -> None:
    """Wait until the picture's hash equals ``equal`` or differs from ``differ``."""
    cond = f"h === {equal}" if equal is not None else f"h !== {differ}"
    page.wait_for_function(
        f"(sel) => {{ const h = ({script})(sel); return h !== null && {cond}; }}", arg=sel, timeout=timeout
    )


def voila_app(browser_tmp: Path, name: str, cell: str) -> Server:
    """A Voila server rendering a one-cell notebook ``<name>.ipynb`` (its own folder and config)."""
    import nbformat

    folder = browser_tmp / name
    folder.mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(cell)]
    nbformat.write(nb, folder / f"{name}.ipynb")
    port = free_port()
    return Server(
        [
            sys.executable,
            "-m",
            "voila",
            f"{name}.ipynb",
            "--no-browser",
            f"--port={port}",
            "--Voila.ip=127.0.0.1",
            "--VoilaConfiguration.file_allowlist=['.*']",
        ],
        port,
        server_env(browser_tmp / f"voila-{name}"),
        folder,
        ARTIFACTS / f"voila-{name}.log",
        "/no-such-page",
    )


def voila_fixture(name: str, cell: str):
    """A module-scoped fixture ``<name>_voila``: a Voila server for ``cell``, stopped after the module."""

    @pytest.fixture(scope="module", name=f"{name}_voila")
    def served(browser_tmp: Path) -> Iterator[Server]:
        s = voila_app(browser_tmp, name, cell)
        yield s
        s.stop()

    return served


def save_screenshot(locator, name: str) -> None:
    """Into tests/_artifacts always; into docs/img too when GUIDEWIDGETS_SCREENSHOTS=1."""
    path = ARTIFACTS / name
    locator.screenshot(path=str(path))
    if os.environ.get("GUIDEWIDGETS_SCREENSHOTS") == "1":
        dest = ROOT / "docs" / "img" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dest)


def run_all_cells(page, server: Server, path: str, ready: str) -> None:
    """Open a notebook in JupyterLab or Notebook 7, wait for its kernel, run every cell and wait for
    the CSS selector ``ready`` (what the last cell shows)."""
    page.goto(server.url + path, timeout=RUN_TIMEOUT)
    # Why the path check: JupyterLab restores the last workspace, so a notebook another test left
    # open can be the current, idle widget for a moment; run-all would then run that one.
    page.wait_for_function(
        "(name) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        " return w && w.context && w.context.path.endsWith(name) && k && k.status === 'idle'; }",
        arg=path.rsplit("/", 1)[-1],
        timeout=RUN_TIMEOUT,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_selector(ready, timeout=RUN_TIMEOUT)
