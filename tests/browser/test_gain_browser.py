"""GainWidget in a real browser (Voila, headless Chromium): Start, the attention strip's pixels
change while training runs in the background, Stop ends it."""

from __future__ import annotations

import pytest

from .conftest import IMG_HASH, save_screenshot, voila_fixture

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


# The first probe image of the attention strip.
PROBE = ".gw-gain .gw-gain-probe img, .gw-gain img.gw-gain-probe"


gain_voila = voila_fixture("gain", CELL)


def test_attention_strip_changes_while_training_runs(page, gain_voila):
    page.goto(gain_voila.url, timeout=TIMEOUT)
    start = page.locator(".gw-gain-start")
    start.wait_for(timeout=TIMEOUT)
    start.click()
    page.wait_for_function(IMG_HASH, arg=PROBE, timeout=TIMEOUT)  # the first probe refresh arrived
    first = page.evaluate(IMG_HASH, PROBE)
    page.wait_for_function(
        f"(sel) => {{ const h = ({IMG_HASH})(sel); return h !== null && h !== {first}; }}", arg=PROBE, timeout=TIMEOUT
    )  # and the strip moved with training
    save_screenshot(page.locator(".gw-gain"), "gain_widget.png")
    page.locator(".gw-gain-stop").click()
    page.wait_for_function(
        "() => document.querySelector('.gw-gain').innerText.includes('Stopped at step')", timeout=TIMEOUT
    )
    assert not page.errors, page.errors
