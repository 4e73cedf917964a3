"""GainWidget in a real browser (Voila, headless Chromium): Start, the attention strip's pixels
change while training runs in the background, Stop ends it."""

from __future__ import annotations

import sys

import pytest

from .conftest import ARTIFACTS, Server, free_port, save_screenshot, server_env

pytestmark = pytest.mark.browser

TIMEOUT = 120_000  # ms: a cold kernel imports torch and renders the scenes on 2 shared cores

CELL = r"""
import torch
from IPython.display import display
from guidewidgets import GainWidget
torch.set_num_threads(1)
w = GainWidget(train_scenes=64, test_scenes=64, epochs=50, warmup_epochs=0, probes=2, probe_every=1,
               pixel_labels=2, batch_size=16)
w.add_class("gw-gain")
display(w)
"""

# A hash of the first probe image's pixels (drawn into a canvas), or null while it has none.
PROBE_HASH = """() => {
  const img = document.querySelector('.gw-gain .gw-gain-probe img, .gw-gain img.gw-gain-probe');
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


@pytest.fixture(scope="module")
def gain_voila(browser_tmp):
    import nbformat

    folder = browser_tmp / "gain"
    folder.mkdir(exist_ok=True)
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(CELL)]
    nbformat.write(nb, folder / "gain.ipynb")
    port = free_port()
    s = Server(
        [
            sys.executable,
            "-m",
            "voila",
            "gain.ipynb",
            "--no-browser",
            f"--port={port}",
            "--Voila.ip=127.0.0.1",
            "--VoilaConfiguration.file_allowlist=['.*']",
        ],
        port,
        server_env(browser_tmp / "voila-gain"),
        folder,
        ARTIFACTS / "voila-gain.log",
        "/no-such-page",
    )
    yield s
    s.stop()


def test_attention_strip_changes_while_training_runs(page, gain_voila):
    page.goto(gain_voila.url, timeout=TIMEOUT)
    start = page.locator(".gw-gain-start")
    start.wait_for(timeout=TIMEOUT)
    start.click()
    page.wait_for_function(PROBE_HASH, timeout=TIMEOUT)  # the first probe refresh arrived
    first = page.evaluate(PROBE_HASH)
    page.wait_for_function(
        f"() => {{ const h = ({PROBE_HASH})(); return h !== null && h !== {first}; }}", timeout=TIMEOUT
    )  # and the strip moved with training
    save_screenshot(page.locator(".gw-gain"), "gain_widget.png")
    page.locator(".gw-gain-stop").click()
    page.wait_for_function(
        "() => document.querySelector('.gw-gain').innerText.includes('Stopped at step')", timeout=TIMEOUT
    )
    assert not page.errors, page.errors
