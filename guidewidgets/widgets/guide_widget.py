"""GuideWidget: paint hints on a segmentation and watch the guided network change its mind.

Guide Me (Rupprecht et al., CVPR 2018) as a thin view over :class:`guidewidgets.guide.GuideSession`
(``w.session``: a Guide with undo/redo, the IoU readout, the question and the default scene): the image with the
segmentation (filled or as outlines, default or high-contrast palette); click or drag paints
hints with the chosen brush class (or, with "not this class", says the class is absent there);
Step / Run / Reset drive the guide; Undo / Redo restore the exact earlier guide state; a text box
takes a hint in words (the paper's text guide); "Ask me" marks the pixel the network is least
sure about; "Simulated click" is the interactive-segmentation benchmark's user (guide.noc).
Readouts beside the image: per-class IoU against a mask (better/worse, a flag on regressions);
the loss curve and gamma per channel fold below. State is in traitlets (each with its ``help``);
methods (``step``, ``run``, ``reset``, ``ask``, ``answer``, ``simulated_click``, ``undo``, ``redo``,
``apply_text``) do what the buttons do.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import traitlets as T
from torch import nn

from .. import render
from ..guide.interactive import (  # noqa: F401  (re-exported: where notebooks and tests found them)
    DEFAULT_POOL,
    HELD_OUT_SEED,
    IOU_EPS,
    GuideSession,
    default_scene,
    iou_per_class,
    largest_error_region,
)
from . import guide_controls as controls
from . import guide_frames as frames
from .base import WidgetBase, error_text
from .guide_frames import HINT_ALPHA  # noqa: F401  (re-exported)
from .image_view import ImageView
from .inputs import as_image, fit


class GuideWidget(WidgetBase):
    """Guide a segmenter with hints, live.

    Args:
        model: a segmenter (default: the embedded ``zoo.load("shapes-segmenter")``; any torchvision
            segmenter wrapped by ``zoo.torchvision_model`` works, on CPU or CUDA).
        image: ``(3, H, W)`` in [0, 1] (or anything ``widgets.inputs.as_image`` takes). Default: a
            held-out ShapeScenes segmentation scene with a large wrong region, with its ``mask``.
        mask: optional ``(H, W)`` ground-truth labels; enables the per-class IoU readout.
        layer: where the guiding block goes (default ``model.default_guide_layer``).
        size: resize the image to ``size`` x ``size`` first (default: keep it).
        display_size: about how many px wide the image is shown.
        guide_options: keyword arguments for :class:`guidewidgets.guide.Guide` (``spatial``,
            ``optimizer``, ``lr``, ``steps``, ...).
        text_guide: the :class:`guidewidgets.guide.text.TextGuide` behind the text box (default: the
            shipped one for the embedded segmenter; for other models the text box says how to get one).
        presenter: larger text for a projector (default: ``theme.set_presenter``).
    """

    brush_class = T.Int(None, allow_none=True, help="class the brush paints; None until one is picked")
    brush_radius = T.Int(2, help="brush radius in image pixels (0: one pixel)")
    negative = T.Bool(False, help="the brush says the class is NOT there")
    opacity = T.Float(0.6, help="segmentation overlay opacity in [0, 1]")
    show = T.Unicode("guided", help="'guided', 'original' (plain prediction) or 'truth' (needs a mask)")
    style = T.Unicode("fill", help="'fill' (translucent regions) or 'outline' (contours only)")
    contrast = T.Bool(False, help="high-contrast palette, readable over any scene")
    run_steps = T.Int(0, help="step budget of a Run; 0: the guide's own default")
    auto_run = T.Bool(False, help="run the guide after every stroke or answer")
    live_every = T.Int(5, help="redraw the segmentation every n steps of a Run (0: only at the end)")
    live_seconds = T.Float(0.25, help="and at most this often (s): a fast Run spends its time stepping")
    step_count = T.Int(0, help="optimiser steps since the last reset (read-only)")
    changed = T.Int(0, help="pixels whose class changed at the last Step or Run (read-only)")
    hint_count = T.Int(0, help="hints in effect (read-only)")
    asking = T.Any(None, help="(y, x) the network asked about, or None")
    export_stem = "guide"
    _next_live = 0.0  # time.monotonic() from which a Run may redraw live again

    def __init__(
        self,
        model: nn.Module | None = None,
        image: Any = None,
        mask: Any = None,
        *,
        layer: str | None = None,
        size: int | None = None,
        display_size: int = 384,
        guide_options: dict[str, Any] | None = None,
        text_guide: Any = None,
        presenter: bool | None = None,
    ) -> None:
        super().__init__(presenter=presenter)
        with self._building():
            img = None if image is None else fit(as_image(image), size)
            self.session = GuideSession(
                model, img, mask, layer=layer, guide_options=guide_options, text_guide=text_guide
            )
            try:
                self._setup(display_size)
            except BaseException:
                self.session.close()  # the model must not stay guided by a widget nobody holds
                raise
        self._draw_overlay()
        self._draw_hints()
        self._readouts()

    # ---- the session's state, read-only (what notebooks and tests read off the widget) -------------
    guide = property(lambda self: self.session.guide, doc="the Guide (``session.guide``)")
    model = property(lambda self: self.session.model)
    image = property(lambda self: self.session.image)
    mask = property(lambda self: self.session.mask, doc="(H, W) ground truth, or None")
    text_guide = property(lambda self: self.session.text_guide)
    _prediction = property(lambda self: self.session.prediction, doc="(H, W) guided prediction shown")
    _original = property(lambda self: self.session.original, doc="(H, W) plain prediction")
    iou = property(lambda self: self.session.iou, doc="per-class IoU now (None without a mask)")
    regression = property(lambda self: self.session.regression, doc="the last action lowered the mean IoU")

    def _setup(self, display_size: int) -> None:
        s = self.session
        self.classes, self.num_classes = s.classes, s.num_classes
        self.height, self.width = s.height, s.width
        self._stroke: list[tuple[int, int]] = []
        self.frames: dict[str, np.ndarray] = {}
        self.view = ImageView(self.height, self.width, display_size=display_size)
        self.view.value_fn = s.value_text
        self.view.on("down", self.on_mouse_down)
        self.view.on("drag", self.on_mouse_move)
        self.view.on("up", self.on_mouse_up)
        self.view.canvas.on_key_down(self.key_down)
        controls.build_controls(self)
        self.children = controls.layout(self)
        self.view.cursor_radius = self.brush_radius
        self.view.set_layer("image", render.to_rgba(s.image))

    @property
    def palette(self) -> np.ndarray:
        """Class colours: the default palette, or the high-contrast one (``contrast=True``)."""
        if self.contrast and self.num_classes <= len(render.HIGH_CONTRAST):
            return render.HIGH_CONTRAST[: self.num_classes]
        return render.palette(self.num_classes)

    # ---- keys, validation and observers ---------------------------------------------------------
    def shortcuts(self) -> dict[str, tuple[str, Any]]:
        return controls.shortcuts(self)

    @T.validate("brush_class")
    def _valid_class(self, proposal):
        k = proposal["value"]
        if k is not None and not 0 <= k < self.num_classes:
            return self._reject(
                "brush_class", f"class {k} is outside 0..{self.num_classes - 1} ({', '.join(self.classes)})"
            )
        return k

    @T.validate("brush_radius")
    def _valid_radius(self, proposal):
        return int(min(64, max(0, proposal["value"])))

    @T.validate("show")
    def _valid_show(self, proposal):
        allowed = ["guided", "original"] + (["truth"] if self.mask is not None else [])
        if proposal["value"] not in allowed:
            return self._reject("show", f"show must be one of {allowed}, got {proposal['value']!r}")
        return proposal["value"]

    @T.validate("style")
    def _valid_style(self, proposal):
        if proposal["value"] not in ("fill", "outline"):
            return self._reject("style", f"style must be 'fill' or 'outline', got {proposal['value']!r}")
        return proposal["value"]

    @T.validate("run_steps")
    def _valid_steps(self, proposal):
        return max(0, int(proposal["value"]))

    def _on_look(self, change: dict) -> None:
        if change["name"] == "contrast":
            self.w_legend.value = frames.legend_html(self.classes, self.palette)
            for k, btn in enumerate(self.w_answers.children[1].children):
                controls.colour_button(self, btn, k)
        if not self._syncing:
            self._draw_overlay()
            self._draw_hints()

    def _on_brush(self, change: dict) -> None:
        self.view.cursor_radius = self.brush_radius

    def _on_asking(self, change: dict) -> None:
        self.w_answers.layout.display = None if change["new"] is not None else "none"
        self._draw_hints()

    # ---- drawing ------------------------------------------------------------------------------
    def _shown_labels(self) -> np.ndarray:
        s = self.session
        if self.show == "original":
            return s.original
        if self.show == "truth" and s.mask is not None:
            return s.mask
        return s.prediction

    def _draw_overlay(self) -> None:
        labels = self._shown_labels()
        if self.style == "outline":
            frame = render.outline_rgba(labels, self.palette, width=max(1, self.width // 96))
            frame[..., 3] = (frame[..., 3].astype(np.float32) * max(self.opacity, 0.2) + 0.5).astype(np.uint8)
        else:
            frame = render.segmentation_rgba(labels, self.palette, alpha=self.opacity)
        self.frames["overlay"] = frame
        self.view.set_layer("overlay", frame)

    def _draw_hints(self) -> None:
        stroke = None
        if self._stroke and self.brush_class is not None:
            px = frames.stroke_pixels(self._stroke, self.brush_radius, self.height, self.width)
            stroke = (px, self.brush_class, self.negative)
        self.frames["hints"] = out = frames.hints_rgba(self.session, self.palette, stroke, self.asking)
        self.view.set_layer("hints", out)

    def _readouts(self) -> None:
        """Redraw the readout column and charts from the session (call after any action)."""
        s, g = self.session, self.session.guide
        self.step_count, self.changed, self.hint_count = s.step_count, s.changed, len(g.hints)
        self.w_undo.disabled, self.w_redo.disabled = not s.can_undo, not s.can_redo
        if s.text_guide is not None:
            self.w_text.options = s.text_suggestions()
        self.w_numbers.value = frames.numbers_html(s)
        losses = list(g.losses)
        self.loss_chart.update(range(1, len(losses) + 1), {"loss": losses})
        self.w_loss_caption.value = (
            f"<b>loss</b> (log scale): {losses[0]:.3g} &rarr; {losses[-1]:.3g} over {len(losses)} step(s)"
            if losses
            else "<b>loss</b>: no steps yet"
        )
        p = g.params
        gamma = render.to_numpy(p["gamma_s"]).reshape(-1) if "gamma_s" in p else np.zeros(0)
        self.gamma_chart.update(gamma.tolist())
        self.w_gamma_caption.value = frames.gamma_caption(gamma)

    def _show_result(self, note: str) -> None:
        """After an action that moved the prediction: show it (guided), the readouts and a status."""
        if self.show != "guided":
            with self._quiet():
                self.show = "guided"  # show what just changed
        self._draw_overlay()
        self._draw_hints()
        self._readouts()
        sat = "all satisfied" if self.session.satisfied() else "not all satisfied yet"
        self.status = f"{note} {self.changed} pixel(s) changed; hints {sat}."

    def _attempt(self, action: Callable[[], Any], what: str = "") -> tuple[bool, Any]:
        """Run a session action (the widget marked busy); on an error say why in the status line."""
        try:
            with self._working():
                return True, action()
        except Exception as err:
            g = self.session.guide
            reason = g.closed_reason if getattr(g, "closed", False) else None
            self.status = f"Error: {what}{reason or error_text(err)}"
            return False, None

    # ---- words ----------------------------------------------------------------------------------
    def text_suggestions(self) -> list[str]:
        """What the text box offers (see ``GuideSession.text_suggestions``)."""
        return self.session.text_suggestions()

    def apply_text(self, sentence: str | None = None) -> bool:
        """Give a hint in words (default: the text box's sentence): the text guide predicts the
        block's parameters and the prediction changes at once (one forward pass). False, with the
        reason in ``status``, on a sentence the templates do not allow; nothing changes then."""
        sentence = self.w_text.value if sentence is None else sentence
        if self.session.text_guide is None:
            self.status = f"Hints in words are off: {self.session.text_note}."
            return False
        ok, query = self._attempt(lambda: self.session.apply_text(sentence), "words not applied: ")
        if not ok:
            return False
        self._show_result(f"Words {query.text!r}:")
        self.status = (
            f"Words {query.text!r} ({query.kind}): {self.changed} pixel(s) changed; "
            f"{len(self.guide.texts)} sentence(s) in effect."
        )
        return True

    # ---- mouse --------------------------------------------------------------------------------
    def on_mouse_down(self, y: int, x: int) -> None:
        if self.brush_class is None:
            self.status = "Pick a brush class first (the Brush buttons above), then click or drag on the image."
            return
        self._stroke = [(y, x)]
        self._draw_hints()

    def on_mouse_move(self, y: int, x: int) -> None:
        if self._stroke:  # fill the gap between two events so a fast drag paints a continuous line
            self._stroke.extend(frames.line(self._stroke[-1], (y, x)))
            self._draw_hints()

    def on_mouse_up(self, y: int, x: int) -> None:
        if self._stroke:
            self._stroke.extend(frames.line(self._stroke[-1], (y, x)))
            points, self._stroke = self._stroke, []
            self.add_stroke(points)

    def add_stroke(
        self, points: list[tuple[int, int]], cls: int | None = None, radius: int | None = None,
        negative: bool | None = None,
    ) -> bool:  # fmt: skip
        """Add a hint stroke (the brush's class/radius/mode unless given); False (and a status) on error."""
        cls = self.brush_class if cls is None else cls
        radius = self.brush_radius if radius is None else radius
        negative = self.negative if negative is None else negative
        if cls is None:
            self.status = "Pick a brush class first (the Brush buttons above)."
            return False
        ok, _ = self._attempt(lambda: self.session.add_stroke(points, cls, radius=radius, negative=negative))
        self._draw_hints()
        if not ok:
            return False
        self.hint_count = len(self.guide.hints)
        what = "not " if negative else ""
        self.status = f"Hint: {len(points)} point(s) are {what}{self.classes[cls]}. Press Run (or Step)."
        if self.auto_run:
            self.run()
        else:
            self._readouts()
        return True

    # ---- actions ------------------------------------------------------------------------------
    def step(self) -> None:
        """One optimiser step of the guide on the current hints."""
        if not self.guide.hints:
            self.status = "Paint a hint first (click or drag on the image), then Step."
            return
        ok, loss = self._attempt(self.session.step, "the guide step failed: ")
        if ok:
            self._show_result(f"Step (loss {loss:.4g}):" if loss is not None else "Step:")

    def _live(self, i: int, loss: float) -> None:
        # every few steps: show the segmentation as it moves (the kernel is busy, messages still go out)
        if self.live_every and (i + 1) % self.live_every == 0 and time.monotonic() >= self._next_live:
            self._next_live = time.monotonic() + self.live_seconds
            self.session.refresh_prediction()
            self._draw_overlay()
            losses = self.guide.losses
            self.loss_chart.update(range(1, len(losses) + 1), {"loss": losses})

    def run(self) -> None:
        """Optimise until every hint is satisfied (or the step budget is spent)."""
        if not self.guide.hints:
            self.status = "Paint a hint first (click or drag on the image), then Run."
            return
        ok, n = self._attempt(lambda: self.session.run(self.run_steps or None, self._live), "the guide run failed: ")
        if ok:
            self._show_result(f"Run: {n} step(s).")

    def reset(self) -> None:
        """Back to the plain prediction: block at zero, hints and history cleared (Undo brings it back)."""
        ok, _ = self._attempt(self.session.reset)
        if ok:
            self._stroke = []
            self.asking = None
            self._show_result("Reset.")
            self.status = "Reset: plain prediction, no hints."

    def _swap(self, redo: bool) -> bool:
        word = "Redo" if redo else "Undo"
        if not (self.session.can_redo if redo else self.session.can_undo):
            self.status = f"Nothing to {word.lower()}."
            return False
        ok, _ = self._attempt(self.session.redo if redo else self.session.undo)
        if not ok:
            return False
        self.asking = None
        self._draw_overlay()
        self._draw_hints()
        self._readouts()
        self.status = f"{word}: back to {self.hint_count} hint(s), {self.step_count} step(s)."
        return True

    def undo(self) -> bool:
        """Restore the exact state before the last action (hint, step, run, answer or reset)."""
        return self._swap(redo=False)

    def redo(self) -> bool:
        """Do again what :meth:`undo` took back."""
        return self._swap(redo=True)

    def ask(self) -> tuple[int, int] | None:
        """Let the network ask: mark its least certain pixel and wait for :meth:`answer`."""
        ok, q = self._attempt(self.session.ask)
        if not ok:
            return None
        self.asking = (q.y, q.x)
        self.w_question.value = f"<b>{html.escape(q.text)}</b><br>Answer with a button:"
        self.status = q.text + " Answer with the buttons beside the image."
        return self.asking

    def answer(self, cls: int) -> None:
        """Answer the pending question: the asked pixel is class ``cls``; then the guide runs."""
        if self.asking is None or self.session.question is None:
            self.status = "Nothing was asked; press 'Ask me' first."
            return
        run = lambda: self.session.answer(cls, self.run_steps or None, self._live)  # noqa: E731
        ok, n = self._attempt(run, "the guide run failed: ")
        self.asking = None if self.session.question is None else self.asking
        if ok:
            self._show_result(f"Run: {n} step(s).")
        else:
            self._readouts()

    def simulated_click(self) -> None:
        """The interactive-segmentation benchmark's user clicks (guide.noc), then the guide runs."""
        ok, res = self._attempt(lambda: self.session.next_click(self.run_steps or None, self._live))
        if ok and res[0] is None:
            self.status = "Nothing left to fix: the prediction matches the mask."
        elif ok:
            c, is_ = res[0], "is" if res[0].positive else "is not"
            self._show_result(f"Simulated click at (y={c.y}, x={c.x}): {self.classes[c.cls]} {is_} here;")

    def composite(self) -> np.ndarray:
        """Image + overlay + hints as one RGBA image."""
        out = render.overlay(self.image, self.frames["overlay"], alpha=1.0)
        return render.overlay(out, self.frames["hints"], alpha=1.0)

    def heading(self) -> str:
        what = {"guided": "Guided segmentation", "original": "Original segmentation", "truth": "Ground truth"}
        text = f"{what[self.show]}: {self.hint_count} hint(s), {self.step_count} step(s)"
        if self.guide.texts:
            text += f", {len(self.guide.texts)} sentence(s)"
        if self.iou is not None and self.show != "truth":
            text += f", mean IoU {np.nanmean(self.iou):.3f}"
        return text

    def export_image(self) -> np.ndarray:
        legend = ", ".join(f"{k} {c}" for k, c in enumerate(self.classes))
        pic = render.upscale(self.composite(), self.view.scale)
        return render.titled(pic, self.heading(), caption=f"classes: {legend}")

    def close(self) -> None:
        """Remove the guiding block from the model and close the widget."""
        if "session" in vars(self):  # a constructor that failed made none (ipywidgets closes on __del__ too)
            self.session.close()
        super().close()
