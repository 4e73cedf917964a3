"""CaptionWidget and STNWidget in a real browser (Voila, headless Chromium).

Caption: clicking another word's button redraws the attention map on the canvas. STN: moving
the rotation slider redraws the input (with its sampling grid) and the rectified output.
"""

from __future__ import annotations

import pytest

from .conftest import CANVAS_HASH, IMG_HASH, save_screenshot, stable_hash, voila_fixture, wait_hash

pytestmark = pytest.mark.browser

TIMEOUT = 120_000  # ms: a cold kernel imports torch and loads two models on 2 shared cores

CELL = r"""
import torch
from IPython.display import display
from guidewidgets import CaptionWidget, STNWidget
torch.set_num_threads(1)
c = CaptionWidget()
c.add_class("gw-caption")
s = STNWidget()
display(c, s)
"""


attend_voila = voila_fixture("attend", CELL)


def test_caption_word_buttons_switch_the_attention_map(page, attend_voila):
    page.goto(attend_voila.url, timeout=TIMEOUT)
    words = page.locator(".gw-caption .gw-caption-words button")
    words.first.wait_for(timeout=TIMEOUT)
    assert words.count() >= 4  # "a small star on grass" has at least four words
    first = stable_hash(page, CANVAS_HASH, ".gw-caption", TIMEOUT)
    words.nth(words.count() - 1).click()  # the background word looks elsewhere than "a"
    wait_hash(page, CANVAS_HASH, ".gw-caption", TIMEOUT, differ=first)
    stable_hash(page, CANVAS_HASH, ".gw-caption", TIMEOUT)
    save_screenshot(page.locator(".gw-caption"), "caption_widget.png")
    assert not page.errors, page.errors


def test_stn_rotation_slider_redraws_grid_and_output(page, attend_voila):
    page.goto(attend_voila.url, timeout=TIMEOUT)
    stn = page.locator(".gw-stn")
    stn.wait_for(timeout=TIMEOUT)
    imgs = stn.locator("img")
    imgs.nth(1).wait_for(timeout=TIMEOUT)
    first_in = stable_hash(page, IMG_HASH, ".gw-stn .widget-image", TIMEOUT)
    first_out = page.evaluate(
        "(sel) => { const i = document.querySelectorAll(sel)[1]; return i ? i.src.length + ':' + i.src.slice(-64) : null; }",
        ".gw-stn img",
    )
    handle = stn.locator(".noUi-handle").nth(1)  # the second slider: rotation
    handle.focus()
    for _ in range(6):
        page.keyboard.press("ArrowRight")
    wait_hash(page, IMG_HASH, ".gw-stn .widget-image", TIMEOUT, differ=first_in)
    page.wait_for_function(
        "([sel, before]) => { const i = document.querySelectorAll(sel)[1];"
        " return i && (i.src.length + ':' + i.src.slice(-64)) !== before; }",
        arg=[".gw-stn img", first_out],
        timeout=TIMEOUT,
    )
    stable_hash(page, IMG_HASH, ".gw-stn .widget-image", TIMEOUT)  # every key press handled
    readout = stn.locator(".widget-readout").nth(1).inner_text().replace("\u2212", "-")
    assert f"rotate {float(readout):.0f}°" in stn.inner_text()  # the status line follows the slider
    save_screenshot(stn, "stn_widget.png")
    assert not page.errors, page.errors
