"""Both widgets in a real browser (headless Chromium): JupyterLab 4, Notebook 7 and Voila.

In each front end, clicked as a user would: the ExplainWidget's method switch and target change
change the overlay's pixels, a key on the image changes the image, the colour bar is drawn (pixels
of its PNG), and Compare with 8 ticked methods shows 8 tiles, each caption under its own picture
in the ticked order; on the GuideWidget a hint + Run changes the overlay, the image panel is not
clipped after the Run, Undo (button, then Ctrl+Z) brings back the pre-hint pixels exactly, and
Ask me + an answer runs the guide. Voila also checks that a query typed into the GuideWidget's text
box changes the overlay once "Apply words" is pressed, that a slow method (RISE) runs in the
background while other controls answer, and takes the README screenshots
(``GUIDEWIDGETS_SCREENSHOTS=1`` copies them from tests/_artifacts to docs/img). Pixels are read
back from the canvas with ``getImageData``, so this checks what a user sees.
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

from .conftest import CANVAS_HASH, run_all_cells, save_screenshot, stable_hash, wait_hash

pytestmark = pytest.mark.browser

TIMEOUT = 90_000  # ms; a cold kernel imports torch and builds both widgets (2 shared cores)

PIXEL = """([sel, x, y]) => {
  const c = document.querySelector(sel + ' canvas');
  return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data);
}"""


def _stable_hash(page, sel: str) -> int:
    return stable_hash(page, CANVAS_HASH, sel, TIMEOUT)


def _wait_hash(page, sel: str, *, equal: int | None = None, differ: int | None = None) -> None:
    wait_hash(page, CANVAS_HASH, sel, TIMEOUT, equal=equal, differ=differ)


def _text(locator) -> str:
    return " ".join(locator.inner_text().split())


def _png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ---- ExplainWidget --------------------------------------------------------------------------------


def _pick(ew, method: str) -> None:
    """Click a method as a user does: its family's button, then its own (the two rows)."""
    from guidewidgets import explain
    from guidewidgets.widgets.explain_controls import FAMILIES

    info = explain.method_info(method)
    ew.locator(".widget-toggle-button", has_text=FAMILIES[info.family]).first.click()
    label = re.compile(rf"^\s*(\d\s+)?{re.escape(info.title)}(\s*\*)?\s*$")  # "2 Grad-CAM", not "Grad-CAM++"
    ew.locator(".widget-toggle-button", has_text=label).first.click()


def _explain_flow(page) -> int:
    """Method switch, target change, a key, the colour bar, compare with 8 methods. Returns
    Grad-CAM's canvas hash (the first map)."""
    from guidewidgets import explain

    ew = page.locator(".gw-explain").first
    heading = ew.locator(".gw-heading").first
    gradcam = _stable_hash(page, ".gw-explain")
    assert "Grad-CAM for" in _text(heading)
    # method switch
    _pick(ew, "saliency")
    _wait_hash(page, ".gw-explain", differ=gradcam)
    title = explain.method_info("saliency").title
    page.wait_for_function(
        "([el, t]) => el.innerText.includes(t + ' for')", arg=[heading.element_handle(), title], timeout=TIMEOUT
    )
    # the colour bar is drawn: a gradient of many colours, high (top) unlike low (bottom)
    bar = _png_pixels(ew.locator(".gw-colorbar img").first.screenshot())
    assert len({tuple(p) for p in bar[:, bar.shape[1] // 2]}) > 20 and not np.array_equal(bar[3], bar[-4])
    assert "evidence for" in _text(ew.locator(".gw-colorbar").first)
    # target change: another class, another map and heading
    before, head = page.evaluate(CANVAS_HASH, ".gw-explain"), _text(heading)
    target = ew.locator(".widget-dropdown", has_text="Target").locator("select").first
    options = target.locator("option").all_inner_texts()
    target.select_option(index=1)
    page.wait_for_function(
        "([el, old]) => el.innerText.split(/\\s+/).join(' ') !== old",
        arg=[heading.element_handle(), head],
        timeout=TIMEOUT,
    )
    assert " ".join(options[1].split()).split(" (")[0] in _text(heading)  # option text has &nbsp;s
    _wait_hash(page, ".gw-explain", differ=before)
    # a keyboard shortcut on the image: key 1 = the first method
    first = explain.method_info(explain.methods()[0]).title
    ew.locator("canvas").first.focus()
    page.keyboard.press("1")
    page.wait_for_function(
        "([el, t]) => el.innerText.startsWith(t + ' for')", arg=[heading.element_handle(), first], timeout=TIMEOUT
    )
    # compare with 8 methods, ticked with the checkboxes
    _pick(ew, "grad-cam")
    ew.locator("button", has_text="Compare").first.click()
    fast = [m for m in explain.methods() if not explain.method_info(m).slow][:8]
    titles = [explain.method_info(m).title for m in fast]
    every = {explain.method_info(m).title for m in explain.methods()}
    boxes = ew.locator(".widget-checkbox")
    for tick in (False, True):  # untick the other methods first (not the view options), then tick the 8
        for i in range(boxes.count()):
            box = boxes.nth(i)
            label = _text(box)
            if label in every and (label in titles) == tick and box.locator("input").is_checked() != tick:
                box.locator("input").click()
    tiles = ew.locator(".gw-tile")
    page.wait_for_function(  # the grid as ticked
        "(want) => { const caps = Array.from(document.querySelectorAll('.gw-explain .gw-tile .gw-caption'))"
        ".map(c => c.innerText.trim().replace(/ \\([^(]*\\)$/, ''));"
        " return JSON.stringify(caps) === JSON.stringify(want); }",
        arg=titles,
        timeout=TIMEOUT,
    )
    shown = titles  # the widget keeps the registry's order, as ``fast`` does
    for i in range(tiles.count()):
        tile = tiles.nth(i)
        tile.scroll_into_view_if_needed()  # JupyterLab defers what is off screen
        tile.locator("img").first.evaluate("(i) => i.decode()")  # a picture, loaded
        img, cap = tile.locator("img").first.bounding_box(), tile.locator(".gw-caption").first.bounding_box()
        caption = _text(tile.locator(".gw-caption").first)
        assert caption.rsplit(" (", 1)[0] == shown[i], (i, caption, shown)
        assert cap["y"] >= img["y"] + img["height"] - 1 and abs(cap["x"] - img["x"]) < 2  # under its own picture
    ew.locator("button", has_text="Compare").first.click()
    return gradcam


def _slow_method_leaves_controls_live(page) -> None:
    """While RISE runs in the kernel's background thread, a click on Grad-CAM (cached) shows it."""
    ew = page.locator(".gw-explain").first
    _pick(ew, "grad-cam")
    gradcam_hash = _stable_hash(page, ".gw-explain")
    progress = ew.locator(".widget-hprogress").first
    _pick(ew, "rise")
    progress.wait_for(state="visible", timeout=TIMEOUT)
    _pick(ew, "grad-cam")
    _wait_hash(page, ".gw-explain", equal=gradcam_hash)
    assert progress.is_visible(), "RISE finished before the test could check the controls; raise its masks"
    _pick(ew, "cam")  # needs the model: cancels RISE
    progress.wait_for(state="hidden", timeout=TIMEOUT)


# ---- GuideWidget --------------------------------------------------------------------------------


def _pixel_changes(page, sel: str, x: int, y: int, before: list[int]) -> list[int]:
    page.wait_for_function(
        f"(a) => JSON.stringify(({PIXEL})(a)) !== {json.dumps(json.dumps(before).replace(' ', ''))}",
        arg=[sel, x, y],
        timeout=TIMEOUT,
    )
    return page.evaluate(PIXEL, [sel, x, y])


NOT_CLIPPED = """(sel) => {
  const c = document.querySelector(sel + ' canvas');
  const r = c.getBoundingClientRect();
  const root = document.querySelector(sel).getBoundingClientRect();
  let el = c.parentElement, scrolls = false;
  while (el && !el.matches(sel)) { if (el.scrollWidth > el.clientWidth + 1) scrolls = true; el = el.parentElement; }
  return {w: r.width, h: r.height, cw: c.width, ch: c.height, inside: r.right <= root.right + 1, scrolls};
}"""


def _guide_flow(page, keys: bool = True) -> None:
    """Hint + Run changes the overlay; the panel is whole; Undo twice = the pre-hint pixels; Ask me."""
    gw = page.locator(".gw-guide").first
    plain_hash = _stable_hash(page, ".gw-guide")
    marker = page.locator(".gw-hint")
    y, x, scale = (int(marker.get_attribute(f"data-{k}")) for k in ("y", "x", "scale"))
    cx, cy = x * scale + scale // 2, y * scale + scale // 2
    canvas = gw.locator("canvas").first
    canvas.scroll_into_view_if_needed()
    plain = page.evaluate(PIXEL, [".gw-guide", cx, cy])
    canvas.click(position={"x": cx, "y": cy})
    hinted = _pixel_changes(page, ".gw-guide", cx, cy, plain)  # the hint is painted (translucent)
    gw.locator("button", has_text="Run").first.click()
    guided = _pixel_changes(page, ".gw-guide", cx, cy, hinted)  # the segmentation under it changed
    assert guided != hinted
    gw.locator(".widget-html", has_text="Run:").first.wait_for(timeout=TIMEOUT)  # readouts updated too
    page.wait_for_timeout(300)
    box = page.evaluate(NOT_CLIPPED, ".gw-guide")
    # whole and unscaled (a border pixel of rounding allowed), inside the widget, no scrollbar on the way
    assert abs(box["w"] - box["cw"]) <= 1 and abs(box["h"] - box["ch"]) <= 1, box
    assert box["inside"] and not box["scrolls"], box
    # from pixels: where the canvas sits in the widget's picture, the whole canvas is seen (nothing
    # covers or cuts its right part), and the widget's picture is wider (the readouts beside it)
    shot = _png_pixels(canvas.screenshot())
    whole = _png_pixels(gw.screenshot())
    cb, wb = canvas.bounding_box(), gw.bounding_box()
    y0, x0 = round(cb["y"] - wb["y"]), round(cb["x"] - wb["x"])
    seen = whole[y0 : y0 + shot.shape[0], x0 : x0 + shot.shape[1]]
    assert seen.shape == shot.shape and np.abs(seen.astype(int) - shot).max() <= 8
    assert whole.shape[1] > x0 + shot.shape[1] + 200
    gw.locator("button", has_text="Undo").first.click()  # the Run
    _pixel_changes(page, ".gw-guide", cx, cy, guided)
    if keys:
        canvas.focus()
        page.keyboard.press("Control+z")  # the hint
    else:  # Notebook 7 keeps Ctrl+Z (and the arrows) for itself; number keys do reach the widget
        gw.locator("button", has_text="Undo").first.click()
    _wait_hash(page, ".gw-guide", equal=plain_hash)  # exactly the pre-hint pixels
    # Ask me, then answer with a button beside the image
    before = page.evaluate(CANVAS_HASH, ".gw-guide")
    gw.locator("button", has_text="Ask me").first.click()
    answers = gw.locator(".gw-answers").first
    answers.wait_for(state="visible", timeout=TIMEOUT)
    _wait_hash(page, ".gw-guide", differ=before)  # the asked pixel is marked
    assert answers.bounding_box()["x"] > canvas.bounding_box()["x"] + box["cw"] - 1  # beside the image
    answers.locator("button").nth(1).click()
    gw.locator(".widget-html", has_text="Run:").first.wait_for(timeout=TIMEOUT)
    answers.wait_for(state="hidden", timeout=TIMEOUT)


def _text_flow(page) -> None:
    """Words: type the first suggested query into the text box, press Apply words: the overlay changes."""
    gw = page.locator(".gw-guide").first
    before = _stable_hash(page, ".gw-guide")
    box = gw.locator(".gw-text input").first
    box.scroll_into_view_if_needed()
    options = gw.locator(".gw-text datalist option")
    options.first.wait_for(state="attached", timeout=TIMEOUT)
    query = options.first.get_attribute("value")  # the generated query for the largest mistake
    assert query and query.startswith(("there is", "the ")), query
    box.click()
    box.press_sequentially(query)  # as typed, key by key
    gw.locator("button", has_text="Apply words").first.click()
    gw.locator(".widget-html", has_text="sentence(s) in effect").first.wait_for(timeout=TIMEOUT)  # the status
    _wait_hash(page, ".gw-guide", differ=before)  # the segmentation changed from the words
    assert query in _text(gw.locator(".widget-html", has_text="words:").first)  # readouts list the sentence
    worded = _stable_hash(page, ".gw-guide")
    gw.locator("button", has_text="Undo").first.click()
    _wait_hash(page, ".gw-guide", equal=before)  # Undo: exactly the pixels before the words
    box.click()
    box.press("Enter")  # Enter applies the sentence still in the box, as the button did
    _wait_hash(page, ".gw-guide", equal=worded)
    gw.locator("button", has_text="Undo").first.click()  # leave the guided scene as it was for the screenshot
    _wait_hash(page, ".gw-guide", equal=before)


# ---- the front ends -----------------------------------------------------------------------------


def _run_all(page, server, path: str) -> None:
    run_all_cells(page, server, path, ".gw-guide canvas")


def test_voila(page, voila_server):
    page.goto(voila_server.url + "/", timeout=TIMEOUT)
    page.wait_for_selector(".gw-guide canvas", timeout=TIMEOUT)
    _explain_flow(page)
    _slow_method_leaves_controls_live(page)
    _guide_flow(page)
    _text_flow(page)
    save_screenshot(page.locator(".gw-guide").first, "guide_widget.png")
    # the README pictures: Grad-CAM with the hover readout, and compare mode
    ew = page.locator(".gw-explain").first
    ew.locator(".widget-dropdown", has_text="Target").locator("select").first.select_option(index=0)  # top class
    _pick(ew, "grad-cam")
    page.wait_for_timeout(500)
    box = ew.locator("canvas").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.55)
    ew.locator(".widget-label", has_text="Grad-CAM").first.wait_for(timeout=TIMEOUT)
    save_screenshot(ew, "explain_widget.png")
    ew.locator("button", has_text="Compare").first.click()
    ew.locator(".gw-tile img").first.wait_for(state="visible", timeout=TIMEOUT)
    page.wait_for_timeout(500)
    save_screenshot(ew, "explain_compare.png")
    assert not [e for e in page.errors if "putImageData" in e], page.errors


def test_jupyterlab(page, lab_server):
    _run_all(page, lab_server, "/lab/tree/widgets.ipynb")
    _explain_flow(page)
    _guide_flow(page)


def test_notebook7(page, notebook_server):
    _run_all(page, notebook_server, "/notebooks/widgets.ipynb")
    _explain_flow(page)
    _guide_flow(page, keys=False)
