"""Both widgets in a real browser (headless Chromium), in JupyterLab and in Voila.

In each front end: toggling the ExplainWidget's method changes the overlay canvas's pixels; a click
on the GuideWidget paints a hint, Run changes the overlay at the hinted pixel. In Voila also: while
RISE runs in the kernel's background thread (progress bar up), another method still shows at
once, and a new computation cancels RISE. Pixels are read back from the canvas with
``getImageData``, so this checks what a user sees. Voila's run also takes the README screenshots
(``GUIDEWIDGETS_SCREENSHOTS=1`` copies them from tests/_artifacts to docs/img).
"""

from __future__ import annotations

import json

import pytest

from .conftest import save_screenshot

pytestmark = pytest.mark.browser

TIMEOUT = 90_000  # ms; a cold kernel imports torch and builds both widgets (2 shared cores)

# ipycanvas' MultiCanvas shows its layers composited into one <canvas>: we read that, what a user sees.
# A hash of its pixels, or null while nothing is drawn yet.
CANVAS_HASH = """(sel) => {
  const c = document.querySelector(sel + ' canvas');
  if (!c) return null;
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0, alpha = 0;
  for (let i = 0; i < d.length; i += 4) { h = (h * 31 + d[i] + 7 * d[i + 1] + 13 * d[i + 2] + 17 * d[i + 3]) % 1000000007; alpha += d[i + 3]; }
  return alpha > 0 ? h : null;
}"""

PIXEL = """([sel, x, y]) => {
  const c = document.querySelector(sel + ' canvas');
  return Array.from(c.getContext('2d').getImageData(x, y, 1, 1).data);
}"""


def _stable_hash(page, sel: str) -> int:
    page.wait_for_function(CANVAS_HASH, arg=sel, timeout=TIMEOUT)  # something is drawn
    h = None
    for _ in range(20):  # and nothing more is arriving
        page.wait_for_timeout(250)
        new = page.evaluate(CANVAS_HASH, sel)
        if new == h:
            return h
        h = new
    return h


def _wait_hash(page, sel: str, *, equal: int | None = None, differ: int | None = None) -> None:
    cond = f"h === {equal}" if equal is not None else f"h !== {differ}"
    page.wait_for_function(
        f"(sel) => {{ const h = ({CANVAS_HASH})(sel); return h !== null && {cond}; }}", arg=sel, timeout=TIMEOUT
    )


def _explain_toggle_changes_overlay(page) -> int:
    """Grad-CAM (the first map) -> Saliency: the pixels change. Returns Grad-CAM's hash."""
    before = _stable_hash(page, ".gw-explain")
    page.locator(".gw-explain .widget-toggle-button", has_text="Saliency").first.click()
    _wait_hash(page, ".gw-explain", differ=before)
    return before


def _slow_method_leaves_controls_live(page, gradcam_hash: int) -> None:
    """While RISE runs in the kernel's background thread, a click on Grad-CAM (cached) shows it."""
    explain = page.locator(".gw-explain").first
    progress = explain.locator(".widget-hprogress").first
    explain.locator(".widget-toggle-button", has_text="RISE").first.click()
    progress.wait_for(state="visible", timeout=TIMEOUT)
    explain.locator(".widget-toggle-button", has_text="Grad-CAM").first.click()
    _wait_hash(page, ".gw-explain", equal=gradcam_hash)
    assert progress.is_visible(), "RISE finished before the test could check the controls; raise its masks"
    explain.locator(".widget-toggle-button", has_text="CAM").first.click()  # needs the model: cancels RISE
    progress.wait_for(state="hidden", timeout=TIMEOUT)


def _pixel_changes(page, sel: str, x: int, y: int, before: list[int]) -> list[int]:
    page.wait_for_function(
        f"(a) => JSON.stringify(({PIXEL})(a)) !== {json.dumps(json.dumps(before).replace(' ', ''))}",
        arg=[sel, x, y],
        timeout=TIMEOUT,
    )
    return page.evaluate(PIXEL, [sel, x, y])


def _guide_hint_and_run_changes_overlay(page) -> None:
    _stable_hash(page, ".gw-guide")
    marker = page.locator(".gw-hint")
    y, x, scale = (int(marker.get_attribute(f"data-{k}")) for k in ("y", "x", "scale"))
    cx, cy = x * scale + scale // 2, y * scale + scale // 2
    canvas = page.locator(".gw-guide canvas").first
    canvas.scroll_into_view_if_needed()
    plain = page.evaluate(PIXEL, [".gw-guide", cx, cy])
    canvas.click(position={"x": cx, "y": cy})
    hinted = _pixel_changes(page, ".gw-guide", cx, cy, plain)  # the hint is painted (translucent)
    page.locator(".gw-guide button", has_text="Run").first.click()
    guided = _pixel_changes(page, ".gw-guide", cx, cy, hinted)  # the segmentation under it changed
    assert guided != hinted
    page.locator(".gw-guide", has_text="Run:").first.wait_for(timeout=TIMEOUT)  # readouts updated too


def test_voila(page, voila_server):
    page.goto(voila_server.url + "/", timeout=TIMEOUT)
    page.wait_for_selector(".gw-explain canvas", timeout=TIMEOUT)
    gradcam = _explain_toggle_changes_overlay(page)
    _slow_method_leaves_controls_live(page, gradcam)
    _guide_hint_and_run_changes_overlay(page)
    save_screenshot(page.locator(".gw-guide").first, "guide_widget.png")
    # the README pictures: Grad-CAM with the hover readout, and compare mode
    explain = page.locator(".gw-explain").first
    explain.locator(".widget-toggle-button", has_text="Grad-CAM").first.click()
    canvas = explain.locator("canvas").first
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.55)
    page.wait_for_function(
        "() => document.querySelector('.gw-explain .widget-label') && "
        "Array.from(document.querySelectorAll('.gw-explain .widget-label')).some(e => e.textContent.includes('Grad-CAM'))",
        timeout=TIMEOUT,
    )
    save_screenshot(explain, "explain_widget.png")
    explain.locator("button", has_text="Compare").first.click()
    explain.locator("img").first.wait_for(state="visible", timeout=TIMEOUT)
    page.wait_for_timeout(500)
    save_screenshot(explain, "explain_compare.png")
    assert not [e for e in page.errors if "putImageData" in e], page.errors


def test_jupyterlab(page, lab_server):
    page.goto(lab_server.url + "/lab/tree/widgets.ipynb", timeout=TIMEOUT)
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
        " return k && k.status === 'idle'; }",
        timeout=TIMEOUT,
    )
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    page.wait_for_selector(".gw-guide canvas", timeout=TIMEOUT)
    _explain_toggle_changes_overlay(page)
    _guide_hint_and_run_changes_overlay(page)
