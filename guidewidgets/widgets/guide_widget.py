"""GuideWidget: paint hints on a segmentation and watch the guided network change its mind.

Guide Me (Rupprecht et al., CVPR 2018) as a widget: the image with the current segmentation
overlay and a class palette; click or drag paints hints with the selected class (or, with "not
this class", says the class is absent there); Step / Run / Reset drive
:class:`guidewidgets.guide.Guide`; "Ask me" shows the pixel the network is least sure about and
the user answers by choosing a class. Readouts: the loss curve, the size of the block's
parameters (alpha, beta, gamma), the pixels that changed at the last step, per-class IoU against a
ground-truth mask, and gamma per channel (the paper's semantic analysis of gamma).

All state is in traitlets (``brush_class``, ``brush_radius``, ``negative``, ``opacity``, ``show``,
``step_count``, ``changed``, ``asking``, ``status``); Python methods (``step``, ``run``, ``reset``,
``ask``, ``answer``, ``undo``) do what the buttons do. The guide runs in the kernel thread: a Run
of the embedded segmenter takes well under a second (see benchmarks/widgets.py).
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets as T
from torch import nn

from .. import render
from .image_view import ImageView
from .inputs import as_image, fit
from .plots import bars_png, line_png
from .synced import SyncedBox

HINT_ALPHA = 170  # hints are drawn at 2/3 opacity over the segmentation
HELD_OUT_SEED = 777  # ShapeScenes seed of the default scenes: zoo.train.TEST_SEED, never trained on
DEFAULT_POOL = 8  # the default scene is the one of these the segmenter gets most wrong


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _disk(radius: int) -> np.ndarray:
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.stack(np.nonzero(yy**2 + xx**2 <= r * r + r), -1) - r  # (N, 2) offsets, round-ish disk


def _line(p: tuple[int, int], q: tuple[int, int]) -> list[tuple[int, int]]:
    n = max(abs(q[0] - p[0]), abs(q[1] - p[1]))
    if n == 0:
        return []
    t = np.linspace(0.0, 1.0, n + 1)[1:]
    ys = np.rint(p[0] + t * (q[0] - p[0])).astype(int)
    xs = np.rint(p[1] + t * (q[1] - p[1])).astype(int)
    return list(zip(ys.tolist(), xs.tolist()))


def iou_per_class(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """IoU of each class (NaN where the class is in neither map)."""
    out = np.full(num_classes, np.nan)
    for k in range(num_classes):
        p, t = pred == k, truth == k
        union = np.logical_or(p, t).sum()
        if union:
            out[k] = np.logical_and(p, t).sum() / union
    return out


def default_scene(model: nn.Module) -> tuple[Any, Any]:
    """A held-out ShapeScenes scene with room for guidance: of the first ``DEFAULT_POOL``, the one
    whose plain prediction has the lowest mean IoU (picked, not hard-coded, so it stays a good demo
    when the weights are retrained). Returns ``(image, mask)``."""
    import torch

    from .. import zoo

    scenes = zoo.ShapeScenes(DEFAULT_POOL, seed=HELD_OUT_SEED, task="segmentation")
    items = [scenes[i] for i in range(len(scenes))]
    p = next(model.parameters(), None)
    x = torch.stack([it["image"] for it in items]).to(p.device if p is not None else "cpu")
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for m, flag in flags:
            m.training = flag
    out = out["out"] if isinstance(out, dict) else out
    pred = render.to_numpy(out.argmax(1))
    k = out.shape[1]
    scores = [np.nanmean(iou_per_class(pred[i], render.to_numpy(it["mask"]), k)) for i, it in enumerate(items)]
    best = int(np.argmin(scores))
    return items[best]["image"], items[best]["mask"]


class GuideWidget(SyncedBox):
    """Guide a segmenter with hints, live.

    Parameters
    ----------
    model: a segmenter (default: the embedded ``zoo.load("shapes-segmenter")``; any torchvision
        segmenter wrapped by ``zoo.torchvision_model`` works, on CPU or CUDA).
    image: ``(3, H, W)`` in [0, 1] (or anything ``widgets.inputs.as_image`` takes). Default: a
        held-out ShapeScenes segmentation scene, with its ground-truth ``mask``.
    mask: optional ``(H, W)`` ground-truth labels; enables the per-class IoU readout.
    layer: where the guiding block goes (default ``model.default_guide_layer``).
    size: resize the image to ``size`` x ``size`` first (default: keep it).
    guide_options: keyword arguments for :class:`guidewidgets.guide.Guide` (``spatial``,
        ``optimizer``, ``lr``, ``steps``, ...).
    """

    brush_class = T.Int(1)
    brush_radius = T.Int(2)
    negative = T.Bool(False)
    opacity = T.Float(0.6)
    show = T.Unicode("guided")  # "guided" | "original" | "truth"
    run_steps = T.Int(0)  # 0 = the guide's own default budget
    auto_run = T.Bool(False)  # run the guide after every stroke / answer
    live_every = T.Int(5)  # redraw the segmentation every n steps of a Run (0: only at the end)
    step_count = T.Int(0)
    changed = T.Int(0)  # pixels whose class changed at the last Step/Run
    hint_count = T.Int(0)
    asking = T.Any(None)  # (y, x) the network asked about, or None
    status = T.Unicode("")

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
    ) -> None:
        from ..guide import Guide

        super().__init__()
        self._syncing = True
        if model is None:
            from .. import zoo

            model = zoo.load("shapes-segmenter")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if image is None:
            image, default_mask = default_scene(model)
            mask = default_mask if mask is None else mask
        self.model = model
        img = fit(as_image(image), size)
        self.image = img
        self.mask: np.ndarray | None = None
        if mask is not None:
            m = render.to_numpy(mask).astype(np.int64)
            while m.ndim > 2 and m.shape[0] == 1:
                m = m[0]
            if m.shape != tuple(img.shape[1:]):
                raise ValueError(
                    f"mask has shape {m.shape} but the image is {tuple(img.shape[1:])}; pass the (H, W) label map of this image"
                )
            self.mask = m
        self.guide = Guide(model, img, layer=layer, **(guide_options or {}))
        self.classes: list[str] = list(self.guide.classes)
        self.num_classes = len(self.classes)
        self.palette = render.palette(self.num_classes)
        self.height, self.width = int(img.shape[1]), int(img.shape[2])
        self._original = render.to_numpy(self.guide.plain_logits().argmax(1)[0])
        self._prediction = self._original.copy()
        self._probs = render.to_numpy(self.guide.plain_logits().softmax(1)[0].float())
        self._stroke: list[tuple[int, int]] = []
        self.frames: dict[str, np.ndarray] = {}
        self._before: np.ndarray | None = None
        self.iou: np.ndarray | None = None  # per-class IoU of the shown guided prediction (with a mask)

        self.view = ImageView(self.height, self.width, display_size=display_size)
        self.view.value_fn = self._value_at
        self.view.on("down", self.on_mouse_down)
        self.view.on("drag", self.on_mouse_move)
        self.view.on("up", self.on_mouse_up)
        self._build_controls()
        self.children = self._layout()
        self.brush_class = 1 if self.num_classes > 1 else 0
        self.view.cursor_radius = self.brush_radius
        self._syncing = False
        self.view.set_layer("image", render.to_rgba(img))
        self._draw_overlay()
        self._draw_hints()
        self._readouts()

    # ---- controls -----------------------------------------------------------------------------
    def _build_controls(self) -> None:
        names = [(f"{k}: {c}", k) for k, c in enumerate(self.classes)]
        self.w_class = W.ToggleButtons(options=names, description="Brush", style={"button_width": "auto"})
        self.w_negative = W.ToggleButton(
            description="not this class", icon="ban", tooltip="the brush says: this class is NOT here"
        )
        self.w_radius = W.IntSlider(min=0, max=12, description="Radius")
        self.w_opacity = W.FloatSlider(min=0.0, max=1.0, step=0.05, description="Opacity")
        show = [("guided", "guided"), ("original", "original")] + (
            [("ground truth", "truth")] if self.mask is not None else []
        )
        self.w_show = W.ToggleButtons(options=show, description="Show", style={"button_width": "auto"})
        self.w_step = W.Button(description="Step", icon="step-forward")
        self.w_run = W.Button(description="Run", icon="play", button_style="primary")
        self.w_reset = W.Button(description="Reset", icon="undo", tooltip="back to the plain prediction; hints cleared")
        self.w_undo = W.Button(description="Undo hint", icon="eraser")
        self.w_auto = W.Checkbox(description="run after each hint", indent=False, layout=W.Layout(width="170px"))
        self.w_ask = W.Button(
            description="Ask me", icon="question", tooltip="the network points at the pixel it is least sure about"
        )
        self.w_answers = W.HBox(
            [W.HTML("<b>Your answer:</b>")] + [self._answer_button(k) for k in range(self.num_classes)],
            layout=W.Layout(display="none", flex_flow="row wrap"),
        )
        self.w_legend = W.HTML(self._legend_html())
        self.w_status = W.HTML()
        self.w_numbers = W.HTML()
        self.w_loss = W.Image(format="png", layout=W.Layout(width="240px", height="80px"))
        self.w_gamma = W.Image(format="png", layout=W.Layout(width="240px", height="80px"))
        self.w_loss_caption = W.HTML()
        self.w_gamma_caption = W.HTML()
        for trait, ctl in [
            ("brush_class", self.w_class),
            ("negative", self.w_negative),
            ("brush_radius", self.w_radius),
            ("opacity", self.w_opacity),
            ("show", self.w_show),
            ("auto_run", self.w_auto),
        ]:
            W.link((self, trait), (ctl, "value"))
        self.w_step.on_click(lambda _: self.step())
        self.w_run.on_click(lambda _: self.run())
        self.w_reset.on_click(lambda _: self.reset())
        self.w_undo.on_click(lambda _: self.undo())
        self.w_ask.on_click(lambda _: self.ask())
        self.observe(self._on_status, "status")
        self.observe(self._on_look, ["opacity", "show"])
        self.observe(self._on_brush, ["brush_radius"])
        self.observe(self._on_asking, ["asking"])

    def _answer_button(self, k: int) -> W.Button:
        r, g, b = (int(c) for c in self.palette[k, :3])
        btn = W.Button(description=self.classes[k], tooltip=f"answer: class {k}", layout=W.Layout(width="auto"))
        btn.style.button_color = f"rgb({r},{g},{b})"
        btn.style.text_color = "white" if (0.299 * r + 0.587 * g + 0.114 * b) < 140 else "black"
        btn.on_click(lambda _, k=k: self.answer(k))
        return btn

    def _legend_html(self) -> str:
        items = []
        for k, name in enumerate(self.classes):
            r, g, b = (int(c) for c in self.palette[k, :3])
            items.append(
                f'<span style="display:inline-block;margin-right:10px"><span style="display:inline-block;'
                f'width:12px;height:12px;background:rgb({r},{g},{b});border:1px solid #888;vertical-align:middle">'
                f"</span> {k}: {html.escape(name)}</span>"
            )
        return "<div>" + "".join(items) + "</div>"

    def _layout(self) -> list[W.Widget]:
        buttons = W.HBox([self.w_step, self.w_run, self.w_reset, self.w_undo, self.w_ask, self.w_auto])
        readouts = W.VBox(
            [self.w_numbers, self.w_loss_caption, self.w_loss, self.w_gamma_caption, self.w_gamma],
            layout=W.Layout(margin="0 0 0 12px"),
        )
        return [
            self.w_legend,
            self.w_class,
            W.HBox([self.w_negative, self.w_radius, self.w_opacity]),
            self.w_show,
            buttons,
            self.w_answers,
            W.HBox([self.view, readouts]),
            self.w_status,
        ]

    # ---- validation and observers ---------------------------------------------------------------
    def _reject(self, name: str, why: str):
        self.status = f"Error: {why}"
        return getattr(self, name)

    @T.validate("brush_class")
    def _valid_class(self, proposal):
        k = proposal["value"]
        if not 0 <= k < self.num_classes:
            return self._reject(
                "brush_class", f"class {k} is outside 0..{self.num_classes - 1} ({', '.join(self.classes)})"
            )
        return k

    @T.validate("brush_radius")
    def _valid_radius(self, proposal):
        return int(min(64, max(0, proposal["value"])))

    @T.validate("opacity")
    def _valid_opacity(self, proposal):
        return float(min(1.0, max(0.0, proposal["value"])))

    @T.validate("show")
    def _valid_show(self, proposal):
        allowed = ["guided", "original"] + (["truth"] if self.mask is not None else [])
        if proposal["value"] not in allowed:
            return self._reject("show", f"show must be one of {allowed}, got {proposal['value']!r}")
        return proposal["value"]

    @T.validate("run_steps")
    def _valid_steps(self, proposal):
        return max(0, int(proposal["value"]))

    def _on_status(self, change: dict) -> None:
        text = change["new"]
        color = "#b00020" if text.startswith("Error") else "#444"
        self.w_status.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def _on_look(self, change: dict) -> None:
        if not self._syncing:
            self._draw_overlay()

    def _on_brush(self, change: dict) -> None:
        self.view.cursor_radius = self.brush_radius

    def _on_asking(self, change: dict) -> None:
        self.w_answers.layout.display = None if change["new"] is not None else "none"
        self._draw_hints()

    # ---- drawing ------------------------------------------------------------------------------
    def _shown_labels(self) -> np.ndarray:
        if self.show == "original":
            return self._original
        if self.show == "truth" and self.mask is not None:
            return self.mask
        return self._prediction

    def _draw_overlay(self) -> None:
        self.frames["overlay"] = render.segmentation_rgba(self._shown_labels(), self.palette, alpha=self.opacity)
        self.view.set_layer("overlay", self.frames["overlay"])

    def _paint(self, out: np.ndarray, pixels: np.ndarray, cls: int, negative: bool) -> None:
        # Translucent, so the segmentation under a hint stays visible (and a browser test can see
        # it change there); the white outline drawn in _draw_hints keeps strokes readable.
        if pixels.size == 0:
            return
        ys, xs = pixels[:, 0], pixels[:, 1]
        out[ys, xs, :3] = self.palette[cls, :3]
        out[ys, xs, 3] = HINT_ALPHA
        if negative:  # hatched: black on every third diagonal says "not this class"
            on = (ys + xs) % 3 == 0
            out[ys[on], xs[on], :3] = 0

    def _stroke_pixels(self, points: list[tuple[int, int]], radius: int) -> np.ndarray:
        if not points:
            return np.zeros((0, 2), int)
        pts = np.asarray(points)[:, None, :] + _disk(radius)[None]
        pts = pts.reshape(-1, 2)
        ok = (pts[:, 0] >= 0) & (pts[:, 0] < self.height) & (pts[:, 1] >= 0) & (pts[:, 1] < self.width)
        return np.unique(pts[ok], axis=0)

    def _draw_hints(self) -> None:
        out = np.zeros((self.height, self.width, 4), np.uint8)
        for h in self.guide.hints:
            self._paint(out, render.to_numpy(h.pixels).reshape(-1, 2), h.cls, h.negative)
        if self._stroke:
            self._paint(out, self._stroke_pixels(self._stroke, self.brush_radius), self.brush_class, self.negative)
        painted = out[..., 3] > 0
        grown = painted.copy()
        grown[1:] |= painted[:-1]
        grown[:-1] |= painted[1:]
        grown[:, 1:] |= painted[:, :-1]
        grown[:, :-1] |= painted[:, 1:]
        out[grown & ~painted] = (255, 255, 255, 255)
        if self.asking is not None:  # a ring around the asked pixel, white outside black
            y, x = self.asking
            for r, col in ((4, (255, 255, 255, 255)), (3, (0, 0, 0, 255))):
                yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
                ring = np.stack(np.nonzero((np.abs(yy) == r) | (np.abs(xx) == r)), -1) - r + (y, x)
                ok = (ring[:, 0] >= 0) & (ring[:, 0] < self.height) & (ring[:, 1] >= 0) & (ring[:, 1] < self.width)
                out[ring[ok, 0], ring[ok, 1]] = col
        self.frames["hints"] = out
        self.view.set_layer("hints", out)

    def _readouts(self) -> None:
        g = self.guide
        p = g.params
        norms = " &nbsp; ".join(f"|{k}| = {float(v.norm()):.3g}" for k, v in p.items())
        loss = f"{g.losses[-1]:.4g}" if g.losses else "–"
        rows = [
            f"<b>steps</b> {self.step_count} &nbsp; <b>loss</b> {loss} &nbsp; <b>hints</b> {len(g.hints)}",
            norms,
            f"<b>pixels changed</b> at the last step: {self.changed}; vs. original: "
            f"{int((self._prediction != self._original).sum())}",
        ]
        if self.mask is not None:
            iou_g = iou_per_class(self._prediction, self.mask, self.num_classes)
            iou_o = iou_per_class(self._original, self.mask, self.num_classes)

            def cell(v: float) -> str:
                return "–" if np.isnan(v) else f"{v:.2f}"

            cells = "".join(
                f"<tr><td>{html.escape(self.classes[k])}</td><td>{cell(iou_o[k])}</td><td>{cell(iou_g[k])}</td></tr>"
                for k in range(self.num_classes)
                if not np.isnan(iou_g[k]) or not np.isnan(iou_o[k])
            )
            rows.append(
                f"<table style='font-size:90%'><tr><th>class</th><th>IoU before</th><th>IoU now</th></tr>{cells}"
                f"<tr><td><b>mean</b></td><td>{np.nanmean(iou_o):.3f}</td><td><b>{np.nanmean(iou_g):.3f}</b></td></tr></table>"
            )
            self.iou = iou_g
        self.w_numbers.value = "<br>".join(rows)
        losses = list(g.losses)
        self.w_loss.value = line_png(losses, logy=True)
        self.w_loss_caption.value = (
            f"<b>loss</b> (log scale): {losses[0]:.3g} &rarr; {losses[-1]:.3g} over {len(losses)} step(s)"
            if losses
            else "<b>loss</b>: no steps yet"
        )
        gamma = render.to_numpy(p["gamma_s"]).reshape(-1) if "gamma_s" in p else np.zeros(0)
        self.w_gamma.value = bars_png(gamma)
        top = np.argsort(-np.abs(gamma))[:3] if gamma.size else []
        self.w_gamma_caption.value = (
            f"<b>gamma</b> per channel ({gamma.size} channels; red up, blue down); largest: "
            + ", ".join(f"#{int(c)} {gamma[c]:+.2f}" for c in top)
            if gamma.size and np.abs(gamma).max() > 0
            else "<b>gamma</b> per channel: all zero"
        )

    def _value_at(self, y: int, x: int) -> str:
        k = int(self._prediction[y, x])
        text = f"guided: {self.classes[k]}"
        k0 = int(self._original[y, x])
        text += f" | original: {self.classes[k0]} ({self._probs[k0, y, x]:.0%})"
        if self.mask is not None:
            text += f" | truth: {self.classes[int(self.mask[y, x])]}"
        return text

    # ---- mouse --------------------------------------------------------------------------------
    def on_mouse_down(self, y: int, x: int) -> None:
        self._stroke = [(y, x)]
        self._draw_hints()

    def on_mouse_move(self, y: int, x: int) -> None:
        if not self._stroke:
            return
        # fill the gap between two events so a fast drag paints a continuous line
        self._stroke.extend(_line(self._stroke[-1], (y, x)))
        self._draw_hints()

    def on_mouse_up(self, y: int, x: int) -> None:
        if not self._stroke:
            return
        self._stroke.extend(_line(self._stroke[-1], (y, x)))
        points, self._stroke = self._stroke, []
        self.add_stroke(points)

    def add_stroke(
        self,
        points: list[tuple[int, int]],
        cls: int | None = None,
        radius: int | None = None,
        negative: bool | None = None,
    ) -> bool:
        """Add a hint stroke (the brush's class/radius/mode unless given); False (and a status) on error."""
        cls = self.brush_class if cls is None else cls
        radius = self.brush_radius if radius is None else radius
        negative = self.negative if negative is None else negative
        try:
            self.guide.add_stroke(points, cls, radius=radius, negative=negative)
        except Exception as err:
            self.status = f"Error: {_error_text(err)}"
            self._draw_hints()
            return False
        self.hint_count = len(self.guide.hints)
        what = "not " if negative else ""
        self.status = f"Hint: {len(points)} point(s) are {what}{self.classes[cls]}. Press Run (or Step)."
        self._draw_hints()
        if self.auto_run:
            self.run()
        else:
            self._readouts()
        return True

    # ---- actions ------------------------------------------------------------------------------
    def _after(self, steps: int, note: str) -> None:
        before = self._before if self._before is not None else self._prediction
        self._before = None
        self._prediction = render.to_numpy(self.guide.prediction())
        self.changed = int((self._prediction != before).sum())
        self.step_count += steps
        if self.show != "guided":
            with self._quiet():
                self.show = "guided"  # show what just changed
        self._draw_overlay()
        self._readouts()
        sat = self.guide.satisfied() if self.guide.hints else True
        self.status = (
            f"{note} {self.changed} pixel(s) changed; hints {'all satisfied' if sat else 'not all satisfied yet'}."
        )

    def step(self) -> None:
        """One optimiser step of the guide on the current hints."""
        if not self.guide.hints:
            self.status = "Paint a hint first (click or drag on the image), then Step."
            return
        try:
            loss = self.guide.step()
        except Exception as err:
            self.status = f"Error: the guide step failed: {_error_text(err)}"
            return
        self._after(1, f"Step (loss {loss:.4g}):")

    def run(self) -> None:
        """Optimise until every hint is satisfied (or the step budget is spent)."""
        if not self.guide.hints:
            self.status = "Paint a hint first (click or drag on the image), then Run."
            return
        self._before = self._prediction  # live updates move _prediction; "changed" counts from here

        def live(i: int, loss: float) -> None:
            # every few steps: show the segmentation as it moves (the kernel is busy, messages still go out)
            if self.live_every and (i + 1) % self.live_every == 0:
                self._prediction = render.to_numpy(self.guide.prediction())
                self._draw_overlay()
                self.w_loss.value = line_png(self.guide.losses, logy=True)

        try:
            n = self.guide.run(steps=self.run_steps or None, callback=live)
        except Exception as err:
            self.status = f"Error: the guide run failed: {_error_text(err)}"
            return
        self._after(n, f"Run: {n} step(s).")

    def reset(self) -> None:
        """Back to the plain prediction: block at zero, hints and history cleared."""
        self.guide.reset(clear_hints=True)
        self._stroke = []
        self.asking = None
        self.step_count = 0
        self.hint_count = 0
        self._after(0, "Reset.")
        self.changed = 0
        self.status = "Reset: plain prediction, no hints."
        self._readouts()

    def undo(self) -> None:
        """Remove the last hint (the guide keeps its current values; Run again to refit)."""
        hints = self.guide.hints
        if not hints:
            self.status = "No hint to undo."
            return
        self.guide.clear_hints()
        for h in hints[:-1]:
            if len(h.points) == 1 and h.radius == 0:
                self.guide.add_hint(*h.points[0], h.cls, negative=h.negative)
            else:
                self.guide.add_stroke(list(h.points), h.cls, radius=h.radius, negative=h.negative)
        self.hint_count = len(self.guide.hints)
        self.status = f"Removed the last hint; {self.hint_count} left."
        self._draw_hints()
        self._readouts()

    def ask(self) -> tuple[int, int] | None:
        """Let the network ask: highlight its least certain pixel and wait for :meth:`answer`."""
        try:
            y, x = self.guide.ask()
        except Exception as err:
            self.status = f"Error: {_error_text(err)}"
            return None
        probs = render.to_numpy(self.guide.logits().softmax(1)[0, :, y, x].float())
        a, b = np.argsort(-probs)[:2]
        self.asking = (int(y), int(x))
        self.status = (
            f"Which class is the pixel at (y={y}, x={x})? The network hesitates between "
            f"{self.classes[a]} ({probs[a]:.0%}) and {self.classes[b]} ({probs[b]:.0%}). Choose below."
        )
        return self.asking

    def answer(self, cls: int) -> None:
        """Answer the pending question: the asked pixel is class ``cls``; then the guide runs."""
        if self.asking is None:
            self.status = "Nothing was asked; press 'Ask me' first."
            return
        y, x = self.asking
        try:
            self.guide.add_hint(y, x, cls)
        except Exception as err:
            self.status = f"Error: {_error_text(err)}"
            return
        self.hint_count = len(self.guide.hints)
        self.asking = None
        self.run()

    # ---- export and lifetime --------------------------------------------------------------------
    def composite(self) -> np.ndarray:
        """Image + overlay + hints as one RGBA image."""
        out = render.overlay(self.image, self.frames["overlay"], alpha=1.0)
        return render.overlay(out, self.frames["hints"], alpha=1.0)

    def to_png(self) -> bytes:
        return render.to_png(self.composite())

    def close(self) -> None:
        """Remove the guiding block from the model and close the widget."""
        self.guide.close()
        super().close()
