"""How every widget looks: one stylesheet, a default mode and a presenter mode.

Why a stylesheet and not per-control ``Layout`` widths: the widgets must fit whatever width the
front end gives them (JupyterLab with its sidebar open leaves about 850 px at 1280 x 800; Voila and
Notebook 7 at 800 px less). Fixed pixel widths clip there. The rules below make rows of controls
wrap, let pictures shrink with the space (crisp: ``image-rendering: pixelated``), keep labels whole
and set the text size through ipywidgets' own CSS variables, so every control follows one setting.

The presenter mode (``presenter=True`` on a widget, or :func:`set_presenter` for every widget made
afterwards) raises body text to 18 px, headings to 22 px and thumbnails by half, for a projector.
All text is dark on white: #1a1a1a (17:1) and #4a4a4a (8.9:1) for secondary text, above 7:1 in
both modes.
"""

from __future__ import annotations

import ipywidgets as W

__all__ = ["PRESENTER", "set_presenter", "presenter_default", "style_widget", "TEXT", "MUTED", "GOOD", "BAD", "SIZES"]

#: Text colours: contrast on white 17.4:1, 8.9:1, 7.4:1 (better) and 7.3:1 (worse, errors); WCAG AAA asks 7:1.
TEXT, MUTED, GOOD, BAD = "#1a1a1a", "#4a4a4a", "#146314", "#b00020"
#: (body px, heading px) per mode.
SIZES = {False: (14, 16), True: (18, 22)}

PRESENTER = False


def set_presenter(on: bool = True) -> None:
    """Make presenter mode the default of every widget created from now on (a package-wide switch)."""
    global PRESENTER
    if not isinstance(on, bool):
        raise TypeError(f"set_presenter takes True or False, got {on!r}")
    PRESENTER = on


def presenter_default() -> bool:
    """The package-wide presenter setting (see :func:`set_presenter`)."""
    return PRESENTER


def _css() -> str:
    return _text_css() + _control_css() + _picture_css() + _chart_css()


def _text_css() -> str:
    (body, head), (pbody, phead) = SIZES[False], SIZES[True]
    return f"""
.gw-root {{ --jp-widgets-font-size: {body}px; --jp-widgets-inline-height: 30px; --gw-head: {head}px;
  --gw-thumb: 1; color: {TEXT}; max-width: 100%; min-width: 0; }}
.gw-root.gw-presenter {{ --jp-widgets-font-size: {pbody}px; --jp-widgets-inline-height: 38px; --gw-head: {phead}px;
  --gw-thumb: 1.5; }}
.gw-root, .gw-root .widget-label, .gw-root .widget-label-basic, .gw-root .widget-html-content,
.gw-root .widget-readout, .gw-root button, .gw-root select, .gw-root input, .gw-root table {{
  color: {TEXT}; font-size: var(--jp-widgets-font-size); }}
.gw-root .widget-html-content {{ line-height: 1.4; }}
.gw-root .lm-AccordionPanel-title, .gw-root .lm-TabBar-tab, .gw-root .jupyter-widget-Collapse-header,
.gw-root .p-TabBar-tab {{ font-size: var(--jp-widgets-font-size); color: {TEXT}; }}
.gw-root .gw-readout {{ white-space: normal; line-height: 1.35; }}
.gw-root .gw-muted, .gw-root .gw-muted * {{ color: {MUTED} !important; }}
.gw-root .gw-good {{ color: {GOOD}; }}
.gw-root .gw-bad {{ color: {BAD}; }}
.gw-root small {{ font-size: 0.95em; color: {MUTED}; }}
.gw-root table {{ font-size: var(--jp-widgets-font-size) !important; }}
.gw-root .gw-heading, .gw-root .gw-heading .widget-html-content {{ font-size: var(--gw-head); font-weight: 600; }}
"""


def _control_css() -> str:
    return """
/* rows of controls wrap instead of running off the output area */
.gw-root .widget-hbox { flex-wrap: wrap; max-width: 100%; row-gap: 2px; }
.gw-root .widget-hbox.gw-panel { flex-wrap: nowrap; align-items: flex-start; }
/* labels never truncate: descriptions take the width their text needs */
.gw-root .widget-inline-hbox > .widget-label { width: auto; min-width: 0; max-width: none; overflow: visible;
  padding-right: 6px; }
.gw-root .widget-label-basic, .gw-root .widget-checkbox label { overflow: visible; text-overflow: clip; }
.gw-root .widget-checkbox, .gw-root .widget-dropdown, .gw-root .widget-text, .gw-root .widget-upload { width: auto; }
.gw-root .widget-dropdown > select { min-width: 10em; }
.gw-root .widget-button, .gw-root .widget-toggle-button { width: auto; min-width: 4em; overflow: visible;
  text-overflow: clip; padding: 0 0.7em; }
/* many options (23 methods): lower rows (the group's line-height sets a row's height) and tighter buttons */
.gw-root .gw-compact { --jp-widgets-inline-height: 26px; }
.gw-root.gw-presenter .gw-compact { --jp-widgets-inline-height: 34px; }
.gw-root .gw-compact .widget-toggle-button { padding: 0 0.45em; }
/* sliders of short values ("0.60", "12"): a narrower readout and box, so a row of them does not wrap */
.gw-root .gw-short .widget-readout { width: 3.2em; }
.gw-root .widget-hslider.gw-short { width: 15em; }
.gw-root .widget-slider { flex: 0 0 auto; }
.gw-root .widget-hslider .slider-container { min-width: 120px; }
/* a slider is never narrower than its label, track and readout (a fixed width let the readout spill
   over the next control or out of a box); readouts grow with the text ("-120.00" in presenter mode) */
.gw-root .widget-hslider { min-width: max-content; }
.gw-root .widget-readout { width: 5.2em; }
"""


def _picture_css() -> str:
    return f"""
/* pictures shrink with the space and stay crisp */
.gw-root canvas, .gw-root img.gw-pixels, .gw-root .gw-pixels img {{ image-rendering: pixelated; }}
.gw-root .gw-view {{ flex: 0 1 auto; min-width: 96px; }}
.gw-root .gw-view canvas {{ width: 100% !important; height: auto !important; }}
.gw-root img.widget-image {{ max-width: calc(100% - 2 * var(--jp-widgets-margin)); height: auto !important;
  object-fit: contain; }}
.gw-root img.widget-image:not([src]), .gw-root img.widget-image[src=""] {{ visibility: hidden; }}
.gw-root.gw-presenter img.gw-thumbs {{ zoom: 1.5; }}
.gw-root img.gw-feat-acts {{ max-width: min(560px, calc(100% - 2 * var(--jp-widgets-margin))) !important; }}
.gw-root img.gw-fit {{ flex: 0 1 auto; min-width: 64px; height: auto !important; object-fit: contain; }}
.gw-root img.gw-thumb {{ width: calc(var(--gw-thumb) * var(--gw-thumb-w, 48px)) !important; height: auto !important; }}
.gw-root .gw-colorbar {{ flex: 0 0 auto; align-self: stretch; }}
.gw-root .gw-colorbar img.widget-image {{ flex: 1 1 0px; min-height: 48px; height: auto !important;
  object-fit: fill; }}  /* the bar stretches to the picture's height */
/* work in the kernel (WidgetBase._working): shown at once, before the answer arrives */
.gw-root.gw-working, .gw-root.gw-working canvas {{ cursor: progress; }}
.gw-root.gw-working .gw-status::after {{ content: "working ..."; color: {MUTED}; padding-left: 0.5em; }}
/* the keys line folds into the status row (a <details>: one word until opened) */
.gw-root details.gw-keys > summary {{ cursor: pointer; color: {MUTED}; }}
.gw-root details.gw-keys:not([open]) > div {{ display: none; }}  /* Chromium lays a closed one's content out */
.gw-root .gw-keys-nb7 {{ display: none; }}
body[data-notebook="notebooks"] .gw-root .gw-keys-nb7 {{ display: block; }}
body[data-notebook="notebooks"] .gw-root .gw-keys-all {{ display: none; }}
.gw-root kbd {{ font-size: 0.95em; border: 1px solid #999; border-radius: 3px; padding: 0 3px; }}
.gw-root.gw-presenter kbd, .gw-root.gw-presenter small {{ font-size: 1em; }}
"""


def _chart_css() -> str:
    (body, head), (pbody, phead) = SIZES[False], SIZES[True]
    return f"""
/* charts (bqplot): width 100% plus the figure's margin ran 2 px past its box; text follows the mode */
.gw-root .bqplot.gw-chart {{ width: auto !important; }}
.gw-root .bqplot {{ --bq-font: {body - 1}px sans-serif; --bq-axis-tick-text-font: {body - 1}px sans-serif;
  --bq-axislabel-font: {body}px sans-serif; --bq-mainheading-font: {head}px sans-serif;
  --bq-mainheading-font-size: {head}px; }}
.gw-root.gw-presenter .bqplot {{ --bq-font: {pbody}px sans-serif; --bq-axis-tick-text-font: {pbody}px sans-serif;
  --bq-axislabel-font: {pbody}px sans-serif; --bq-mainheading-font: {phead}px sans-serif;
  --bq-mainheading-font-size: {phead}px; }}
.gw-root .bqplot {{ --bq-axis-tick-text-fill: {MUTED}; --bq-axislabel-fill: {TEXT}; --bq-mainheading-fill: {TEXT}; }}
/* legend text in the text colour (orange on white read 2.5:1); the line beside it keeps the series colour */
.gw-root .bqplot > svg text.legendtext {{ font-size: var(--jp-widgets-font-size); fill: {TEXT} !important; }}
/* contrast the measured pages lacked: inactive tab titles (4.4:1) and white on coloured buttons (4.1-5:1) */
.gw-root .jupyter-widgets.jupyter-widget-tab > .lm-TabBar .lm-TabBar-tab {{ color: {TEXT}; }}
.gw-root .jupyter-button.mod-primary {{ background-color: #0d47a1; }}
.gw-root .jupyter-button.mod-success {{ background-color: {GOOD}; }}
.gw-root .jupyter-button.mod-danger {{ background-color: {BAD}; }}
"""


def style_widget() -> W.HTML:
    """A zero-height HTML widget carrying the stylesheet; every widget shows one (repeats are harmless)."""
    html = W.HTML(f"<style>{_css()}</style>", layout=W.Layout(height="0px", margin="0", overflow="hidden"))
    html.add_class("gw-style")
    return html
