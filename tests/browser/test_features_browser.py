"""FeatureWidget in a real browser (Voila, headless Chromium): changing the channel and the layer
redraws the panels; hovering a dot of the embedding scatter shows that image's thumbnail."""

from __future__ import annotations

import pytest

from .conftest import IMG_HASH, save_screenshot, voila_fixture

pytestmark = pytest.mark.browser

TIMEOUT = 180_000  # ms: a cold kernel imports torch and searches the patches on 2 shared cores

CELL = r"""
import torch
import ipywidgets as W
from IPython.display import display
from guidewidgets import zoo
from guidewidgets.widgets.feature_widget import FeatureWidget, SCATTER
torch.set_num_threads(1)
fw = FeatureWidget(zoo.load("shapes-classifier"), zoo.ShapeScenes(64, seed=3), k=4, steps=8)
fw.wait(120)
xy = fw._xy[(fw.layer, fw.projection)]
i = 9  # a dot whose pixel the test hovers: the nearest dot there is the one the test expects
y, x = SCATTER - 1 - int(xy[i, 1]), int(xy[i, 0])
display(W.HTML(f'<div class="gw-dot" data-y="{y}" data-x="{x}" data-scale="{fw.scatter.scale}" '
               f'data-index="{fw.nearest_dot(y, x)}"></div>'))
display(fw)
"""


features_voila = voila_fixture("features", CELL)


def test_channel_and_layer_redraw_and_the_scatter_hover_shows_a_thumbnail(page, features_voila):
    acts = ".gw-features img.gw-feat-acts"
    page.goto(features_voila.url, timeout=TIMEOUT)
    page.wait_for_function(IMG_HASH, arg=acts, timeout=TIMEOUT)
    first = page.evaluate(IMG_HASH, acts)

    # Hover first: a layer change moves the dots.
    dot = page.locator(".gw-dot")
    y, x, scale = (int(dot.get_attribute(a)) for a in ("data-y", "data-x", "data-scale"))
    index = dot.get_attribute("data-index")
    page.get_by_text("Embedding (PCA / t-SNE)").click()  # open the scatter's fold
    canvas = page.locator(".gw-feat-scatter canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + (x + 0.5) * scale, box["y"] + (y + 0.5) * scale)
    page.wait_for_function(IMG_HASH, arg=".gw-features img.gw-feat-thumb", timeout=TIMEOUT)
    page.wait_for_function(
        f"() => document.querySelector('.gw-feat-scatter').textContent.includes('image {index} (')", timeout=TIMEOUT
    )

    channel = page.locator(".gw-feat-channel input")
    channel.fill("5")
    channel.press("Enter")
    page.wait_for_function(f"(sel) => {{ const h = ({IMG_HASH})(sel); return h !== null && h !== {first}; }}",
                           arg=acts, timeout=TIMEOUT)  # fmt: skip
    second = page.evaluate(IMG_HASH, acts)

    page.locator(".gw-feat-layer select").select_option("features.block3")
    page.wait_for_function(f"(sel) => {{ const h = ({IMG_HASH})(sel); return h !== null && h !== {second}; }}",
                           arg=acts, timeout=TIMEOUT)  # fmt: skip
    page.wait_for_function(
        "() => document.querySelector('.gw-feat-patches-caption').textContent.includes('(15, 15)')", timeout=TIMEOUT
    )
    page.wait_for_function(  # the scatter follows the layer too
        "() => document.querySelector('.gw-features').textContent.includes('PCA of features.block3')", timeout=TIMEOUT
    )

    save_screenshot(page.locator(".gw-features"), "feature_widget.png")
    assert not page.errors, page.errors
