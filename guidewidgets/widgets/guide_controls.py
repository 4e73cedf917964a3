"""The GuideWidget's plain view code: its controls and their layout (kept apart, as
explain_controls.py is for ExplainWidget, so guide_widget.py reads as the behaviour)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import ipywidgets as W

from . import guide_frames as frames
from .charts import BarChart, LineChart

if TYPE_CHECKING:
    from .guide_widget import GuideWidget


def build_controls(w: GuideWidget) -> None:
    """Make the widget's controls (``w.w_*``), link them to its traits and wire the buttons.

    Args:
        w: the GuideWidget being built (its session and image view exist).
    """
    _make_brush_and_look(w)
    _make_actions(w)
    _make_words_and_readouts(w)
    _wire(w)


def _make_brush_and_look(w: GuideWidget) -> None:
    names = [(f"{k}: {c}", k) for k, c in enumerate(w.classes)]
    w.w_class = W.ToggleButtons(
        options=names,
        value=None,
        style={"button_width": "auto"},
        tooltips=[f"paint hints of class {c} (key {k})" for k, c in enumerate(w.classes)],
    )
    w.w_negative = W.ToggleButton(
        description="not this class", icon="ban", tooltip="the brush says: this class is NOT here"
    )
    w.w_radius = W.IntSlider(min=0, max=12, description="Radius")
    w.w_radius.add_class("gw-short")
    w._base_controls()
    show = [("guided", "guided"), ("original", "original")] + (
        [("ground truth", "truth")] if w.mask is not None else []
    )
    tips = {"guided": "the guided prediction", "original": "the plain prediction", "truth": "the ground truth"}
    w.w_show = W.ToggleButtons(options=show, style={"button_width": "auto"}, tooltips=[tips[v] for _, v in show])
    w.w_style = W.ToggleButtons(
        options=[("filled", "fill"), ("outlines", "outline")],
        style={"button_width": "auto"},
        tooltips=["translucent class regions", "class outlines only: the scene stays visible"],
    )
    w.w_contrast = W.Checkbox(description="high-contrast colours", indent=False)


def _make_actions(w: GuideWidget) -> None:
    w.w_step = W.Button(description="Step", icon="step-forward", tooltip="one optimiser step (S)")
    w.w_run = W.Button(
        description="Run", icon="play", button_style="primary", tooltip="optimise until the hints hold (R)"
    )
    w.w_reset = W.Button(description="Reset", icon="refresh", tooltip="back to the plain prediction; hints cleared")
    w.w_undo = W.Button(description="Undo", icon="undo", tooltip="back to the state before the last action (Ctrl+Z)")
    w.w_redo = W.Button(description="Redo", icon="repeat", tooltip="again what Undo took back (Ctrl+Y)")
    w.w_auto = W.Checkbox(description="run after each hint", indent=False)
    w.w_ask = W.Button(
        description="Ask me", icon="question", tooltip="the network marks the pixel it is least sure about (A)"
    )
    w.w_click = W.Button(
        description="Simulated click",
        icon="mouse-pointer",
        tooltip="the benchmark's user: a hint at the deepest point of the largest mistake, then Run (needs a mask)",
        disabled=w.session.mask is None,
    )
    w.w_question = W.HTML()
    w.w_answers = W.VBox(
        [
            w.w_question,
            W.Box([answer_button(w, k) for k in range(w.num_classes)], layout=W.Layout(flex_flow="row wrap")),
        ],
        layout=W.Layout(display="none", border="1px solid #999", padding="4px", margin="0 0 8px 0"),
    )
    w.w_answers.add_class("gw-answers")


def _make_words_and_readouts(w: GuideWidget) -> None:
    w.w_text = W.Combobox(
        placeholder="a hint in words, e.g. there is no ellipse in this image",
        ensure_option=False,
        layout=W.Layout(width="auto", flex="1 1 240px", max_width="460px"),
    )
    w.w_text.add_class("gw-text")
    w.w_apply = W.Button(
        description="Apply words",
        icon="comment",
        tooltip="the text guide turns the sentence into the block's parameters (Enter)",
    )
    w.w_text_help = W.HTML(frames.text_help_html(w.session))
    if w.session.text_guide is None:
        w.w_text.disabled = w.w_apply.disabled = True
    w.w_apply.on_click(lambda _: w.apply_text())
    with warnings.catch_warnings():  # Enter in the box: ipywidgets 8 deprecates on_submit but the
        warnings.simplefilter("ignore", DeprecationWarning)  # front end still sends "submit" on Enter
        w.w_text.on_submit(lambda _: w.apply_text())
    w.w_legend = W.HTML(frames.legend_html(w.classes, w.palette))
    w.w_numbers = W.HTML()
    w.loss_chart = LineChart(["loss"], title="Guide loss per step", xlabel="step", ylabel="loss (log)", log=True)
    w.gamma_chart = BarChart(title="gamma per channel", xlabel="channel", ylabel="gamma")
    w.w_loss_caption = W.HTML()
    w.w_gamma_caption = W.HTML()


def _wire(w: GuideWidget) -> None:
    for trait, ctl in [
        ("brush_class", w.w_class),
        ("negative", w.w_negative),
        ("brush_radius", w.w_radius),
        ("show", w.w_show),
        ("style", w.w_style),
        ("contrast", w.w_contrast),
        ("auto_run", w.w_auto),
    ]:
        W.link((w, trait), (ctl, "value"))
    w.w_step.on_click(lambda _: w.step())
    w.w_run.on_click(lambda _: w.run())
    w.w_reset.on_click(lambda _: w.reset())
    w.w_undo.on_click(lambda _: w.undo())
    w.w_redo.on_click(lambda _: w.redo())
    w.w_ask.on_click(lambda _: w.ask())
    w.w_click.on_click(lambda _: w.simulated_click())
    w.observe(w._on_look, ["opacity", "show", "style", "contrast"])
    w.observe(w._on_brush, ["brush_radius"])
    w.observe(w._on_asking, ["asking"])
    w.w_undo.disabled, w.w_redo.disabled = not w.session.can_undo, not w.session.can_redo


def shortcuts(w: GuideWidget) -> dict[str, tuple[str, Any]]:
    """The GuideWidget's keys: run, step, ask, undo, redo and the brush class (0-9).

    Args:
        w: the widget.

    Returns:
        Key -> (help text, action), as :meth:`WidgetBase.shortcuts` asks.
    """
    keys: dict[str, tuple[str, Any]] = {
        "r": ("run", w.run),
        "s": ("step", w.step),
        "a": ("ask", w.ask),
        "ctrl+z": ("Ctrl+Z|undo", w.undo),
        "ctrl+y": ("Ctrl+Y|redo", w.redo),
    }
    for k in range(min(10, getattr(w, "num_classes", 0))):
        keys[str(k)] = ("" if k else "0-9|brush class", lambda k=k: setattr(w, "brush_class", k))
    return keys


def answer_button(w: GuideWidget, k: int) -> W.Button:
    btn = W.Button(description=w.classes[k], tooltip=f"answer: class {k}", layout=W.Layout(width="auto"))
    btn.on_click(lambda _, k=k: w.answer(k))
    colour_button(w, btn, k)
    return btn


def colour_button(w: GuideWidget, btn: W.Button, k: int) -> None:
    r, g, b = (int(c) for c in w.palette[k, :3])
    btn.style.button_color = f"rgb({r},{g},{b})"
    btn.style.text_color = "white" if (0.299 * r + 0.587 * g + 0.114 * b) < 140 else "black"


def layout(w: GuideWidget) -> list[W.Widget]:
    """The widget's children: control rows, the image with the readout column, status, folds."""

    def row(*children: W.Widget) -> W.HBox:
        return W.HBox(list(children), layout=W.Layout(align_items="center"))

    readouts = W.VBox(
        [w.w_legend, w.w_answers, w.w_numbers],
        layout=W.Layout(margin="0 0 0 12px", flex="1 1 240px", min_width="220px", max_width="360px"),
    )
    w.w_panel = W.HBox([w.view, readouts])
    w.w_panel.add_class("gw-panel")
    charts = W.VBox([w.w_loss_caption, w.loss_chart.figure, w.w_gamma_caption, w.gamma_chart.figure])
    # one fold (a header is 40 px): the two secondary panels are tabs inside it
    w.w_more_tabs = W.Tab(
        [charts, w.w_text_help], titles=("Charts: loss and gamma", "Words the text guide understands")
    )
    w.w_more = W.Accordion([w.w_more_tabs], titles=("More: charts (loss, gamma) and words",))
    return [
        row(W.Label("Brush"), w.w_class),
        row(w.w_negative, w.w_radius, w.w_opacity),
        row(W.Label("Show"), w.w_show, w.w_style, w.w_contrast),
        row(w.w_step, w.w_run, w.w_reset, w.w_undo, w.w_redo, w.w_ask, w.w_auto),
        row(w.w_text, w.w_apply, w.w_click),
        w.w_panel,
        w._status_row(),
        w.w_more,
        w.w_export_out,
    ]
