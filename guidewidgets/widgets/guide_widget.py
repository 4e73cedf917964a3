"""GuideWidget: paint hints on a segmentation and watch the guided network change its mind.

Guide Me (Rupprecht et al., CVPR 2018) as a widget over :class:`guidewidgets.guide.Guide`: the
image with the segmentation (filled or as outlines, default or high-contrast palette); click or
drag paints hints with the chosen brush class (or, with "not this class", says the class is absent
there); Step / Run / Reset drive the guide; Undo / Redo restore the exact earlier guide state
(``Guide.snapshot``/``restore``); a text box takes a hint in words ("there is no ellipse in this
image", the paper's text guide: ``Guide.add_text``), offering the template sentences and the
queries generated for this image as completions; "Ask me" marks the pixel the network is least sure about and the
answer buttons beside the image say its class. Readouts (a fixed-width column): per-class IoU
against a ground-truth mask, coloured better/worse with a flag on regressions, the loss curve and
gamma per channel (the paper's semantic analysis of gamma).

All state is in traitlets (``brush_class``, ``brush_radius``, ``negative``, ``opacity``, ``show``,
``style``, ``contrast``, ``step_count``, ``changed``, ``asking``, ``status``); Python methods
(``step``, ``run``, ``reset``, ``ask``, ``answer``, ``undo``, ``redo``, ``apply_text``) do what the
buttons do.
Keys on the image: R run, S step, A ask, Ctrl+Z / Ctrl+Y undo / redo, 0-9 brush class.
"""

from __future__ import annotations

import html
import warnings
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets as T
from torch import nn

from .. import render
from ..hooks import eval_mode, model_lock, model_output
from . import theme
from .base import WidgetBase, error_text
from .charts import BarChart, LineChart
from .image_view import ImageView
from .inputs import as_image, fit

HINT_ALPHA = 170  # hints are drawn at 2/3 opacity over the segmentation
HELD_OUT_SEED = 777  # ShapeScenes seed of the default scenes: zoo.train.TEST_SEED, never trained on
DEFAULT_POOL = 8  # the default scene is the one of these with the largest wrong region
IOU_EPS = 0.005  # IoU changes smaller than this are shown as unchanged


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


def largest_error_region(pred: np.ndarray, truth: np.ndarray) -> int:
    """Pixels in the largest 4-connected region where ``pred`` and ``truth`` disagree."""
    from scipy import ndimage

    regions, n = ndimage.label(pred != truth)
    return int(np.bincount(regions.ravel())[1:].max()) if n else 0


def default_scene(model: nn.Module) -> tuple[Any, Any]:
    """A held-out ShapeScenes scene with room for guidance: of the first ``DEFAULT_POOL``, the one
    whose plain prediction has the largest connected wrong region (a region a click can fix, not
    scattered pixels; picked, not hard-coded, so it stays a good demo when the weights are
    retrained). Returns ``(image, mask)``."""
    import torch

    from .. import zoo

    scenes = zoo.ShapeScenes(DEFAULT_POOL, seed=HELD_OUT_SEED, task="segmentation")
    items = [scenes[i] for i in range(len(scenes))]
    p = next(model.parameters(), None)
    x = torch.stack([it["image"] for it in items]).to(p.device if p is not None else "cpu")
    with model_lock(model), torch.no_grad(), eval_mode(model):
        pred = render.to_numpy(model_output(model(x)).argmax(1))
    scores = [largest_error_region(pred[i], render.to_numpy(it["mask"])) for i, it in enumerate(items)]
    best = int(np.argmax(scores))
    return items[best]["image"], items[best]["mask"]


def _text_guide_for(model: nn.Module, text_guide: Any) -> tuple[Any, str]:
    """The text guide behind the widget's text box, or None and a sentence saying how to get one."""
    from ..guide.text import TextGuide, load_text_guide
    from ..zoo.models import ShapeSegmenter

    if text_guide is not None:
        if not isinstance(text_guide, TextGuide):
            raise TypeError(f"text_guide must be a guidewidgets.guide.text.TextGuide, got {type(text_guide).__name__}")
        return text_guide, ""
    if not isinstance(model, ShapeSegmenter):
        return None, (
            f"no text guide ships for {type(model).__name__}: train one (python -m guidewidgets.guide.train_text) "
            "and pass GuideWidget(..., text_guide=TextGuide.load(path))"
        )
    try:
        return load_text_guide(), ""
    except Exception as err:  # clicks still work without words
        return None, f"the shipped text guide did not load: {error_text(err)}"


class GuideWidget(WidgetBase):
    """Guide a segmenter with hints, live.

    Parameters
    ----------
    model: a segmenter (default: the embedded ``zoo.load("shapes-segmenter")``; any torchvision
        segmenter wrapped by ``zoo.torchvision_model`` works, on CPU or CUDA).
    image: ``(3, H, W)`` in [0, 1] (or anything ``widgets.inputs.as_image`` takes). Default: a
        held-out ShapeScenes segmentation scene with a large wrong region, with its ``mask``.
    mask: optional ``(H, W)`` ground-truth labels; enables the per-class IoU readout.
    layer: where the guiding block goes (default ``model.default_guide_layer``).
    size: resize the image to ``size`` x ``size`` first (default: keep it).
    guide_options: keyword arguments for :class:`guidewidgets.guide.Guide` (``spatial``,
        ``optimizer``, ``lr``, ``steps``, ...).
    text_guide: the :class:`guidewidgets.guide.text.TextGuide` behind the text box (default: the
        shipped one for the embedded segmenter; for other models the text box says how to get one).
    """

    brush_class = T.Int(None, allow_none=True, help="class the brush paints; None until one is picked")
    brush_radius = T.Int(2)
    negative = T.Bool(False)
    opacity = T.Float(0.6)
    show = T.Unicode("guided")  # "guided" | "original" | "truth"
    style = T.Unicode("fill", help="'fill' (translucent regions) or 'outline' (contours only)")
    contrast = T.Bool(False, help="high-contrast palette, readable over any scene")
    run_steps = T.Int(0)  # 0 = the guide's own default budget
    auto_run = T.Bool(False)  # run the guide after every stroke / answer
    live_every = T.Int(5)  # redraw the segmentation every n steps of a Run (0: only at the end)
    step_count = T.Int(0)
    changed = T.Int(0)  # pixels whose class changed at the last Step/Run
    hint_count = T.Int(0)
    asking = T.Any(None)  # (y, x) the network asked about, or None
    export_stem = "guide"

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
        from ..guide import Guide

        super().__init__(presenter=presenter)
        with self._building():
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
            self.text_guide, self._text_note = _text_guide_for(model, text_guide)
            try:
                self._setup(img, display_size)
            except BaseException:
                self.guide.close()  # the model must not stay guided by a widget nobody holds
                raise
        self._draw_overlay()
        self._draw_hints()
        self._readouts()

    def _setup(self, img: Any, display_size: int) -> None:
        self.classes: list[str] = list(self.guide.classes)
        self.num_classes = len(self.classes)
        self.height, self.width = int(img.shape[1]), int(img.shape[2])
        self._original = render.to_numpy(self.guide.plain_logits().argmax(1)[0])
        self._prediction = self._original.copy()
        self._probs = render.to_numpy(self.guide.plain_logits().softmax(1)[0].float())
        self._stroke: list[tuple[int, int]] = []
        self.frames: dict[str, np.ndarray] = {}
        self._before: np.ndarray | None = None
        self.iou: np.ndarray | None = None  # per-class IoU of the shown guided prediction (with a mask)
        self.regression = False  # the last action lowered the mean IoU
        self._undo: list[tuple[Any, ...]] = []
        self._redo: list[tuple[Any, ...]] = []
        self._last_mean: float | None = None
        self.view = ImageView(self.height, self.width, display_size=display_size)
        self.view.value_fn = self._value_at
        self.view.on("down", self.on_mouse_down)
        self.view.on("drag", self.on_mouse_move)
        self.view.on("up", self.on_mouse_up)
        self.view.canvas.on_key_down(self.key_down)
        self._build_controls()
        self.children = self._layout()
        self.view.cursor_radius = self.brush_radius
        self.view.set_layer("image", render.to_rgba(img))

    @property
    def palette(self) -> np.ndarray:
        """Class colours: the default palette, or the high-contrast one (``contrast=True``)."""
        if self.contrast and self.num_classes <= len(render.HIGH_CONTRAST):
            return render.HIGH_CONTRAST[: self.num_classes]
        return render.palette(self.num_classes)

    # ---- controls -----------------------------------------------------------------------------
    def _build_controls(self) -> None:
        names = [(f"{k}: {c}", k) for k, c in enumerate(self.classes)]
        self.w_class = W.ToggleButtons(
            options=names,
            value=None,
            style={"button_width": "auto"},
            tooltips=[f"paint hints of class {c} (key {k})" for k, c in enumerate(self.classes)],
        )
        self.w_negative = W.ToggleButton(
            description="not this class", icon="ban", tooltip="the brush says: this class is NOT here"
        )
        self.w_radius = W.IntSlider(min=0, max=12, description="Radius")
        self._base_controls()
        show = [("guided", "guided"), ("original", "original")] + (
            [("ground truth", "truth")] if self.mask is not None else []
        )
        tips = {"guided": "the guided prediction", "original": "the plain prediction", "truth": "the ground truth"}
        self.w_show = W.ToggleButtons(options=show, style={"button_width": "auto"}, tooltips=[tips[v] for _, v in show])
        self.w_style = W.ToggleButtons(
            options=[("filled", "fill"), ("outlines", "outline")],
            style={"button_width": "auto"},
            tooltips=["translucent class regions", "class outlines only: the scene stays visible"],
        )
        self.w_contrast = W.Checkbox(description="high-contrast colours", indent=False)
        self.w_step = W.Button(description="Step", icon="step-forward", tooltip="one optimiser step (S)")
        self.w_run = W.Button(
            description="Run", icon="play", button_style="primary", tooltip="optimise until the hints hold (R)"
        )
        self.w_reset = W.Button(
            description="Reset", icon="refresh", tooltip="back to the plain prediction; hints cleared"
        )
        self.w_undo = W.Button(
            description="Undo", icon="undo", tooltip="back to the state before the last action (Ctrl+Z)"
        )
        self.w_redo = W.Button(description="Redo", icon="repeat", tooltip="again what Undo took back (Ctrl+Y)")
        self.w_auto = W.Checkbox(description="run after each hint", indent=False)
        self.w_ask = W.Button(
            description="Ask me", icon="question", tooltip="the network marks the pixel it is least sure about (A)"
        )
        self.w_question = W.HTML()
        self.w_answers = W.VBox(
            [
                self.w_question,
                W.Box([self._answer_button(k) for k in range(self.num_classes)], layout=W.Layout(flex_flow="row wrap")),
            ],
            layout=W.Layout(display="none", border="1px solid #999", padding="4px", margin="0 0 8px 0"),
        )
        self.w_answers.add_class("gw-answers")
        self.w_text = W.Combobox(
            placeholder="a hint in words, e.g. there is no ellipse in this image",
            ensure_option=False,
            layout=W.Layout(width="auto", flex="1 1 300px", max_width="460px"),
        )
        self.w_text.add_class("gw-text")
        self.w_apply = W.Button(
            description="Apply words",
            icon="comment",
            tooltip="the text guide turns the sentence into the block's parameters (Enter)",
        )
        self.w_text_help = W.HTML(self._text_help())
        if self.text_guide is None:
            self.w_text.disabled = self.w_apply.disabled = True
        self.w_apply.on_click(lambda _: self.apply_text())
        with warnings.catch_warnings():  # Enter in the box: ipywidgets 8 deprecates on_submit but the
            warnings.simplefilter("ignore", DeprecationWarning)  # front end still sends "submit" on Enter
            self.w_text.on_submit(lambda _: self.apply_text())
        self.w_legend = W.HTML(self._legend_html())
        self.w_numbers = W.HTML()
        self.loss_chart = LineChart(["loss"], title="Guide loss per step", xlabel="step", ylabel="loss (log)", log=True)
        self.gamma_chart = BarChart(title="gamma per channel", xlabel="channel", ylabel="gamma")
        self.w_loss_caption = W.HTML()
        self.w_gamma_caption = W.HTML()
        for trait, ctl in [
            ("brush_class", self.w_class),
            ("negative", self.w_negative),
            ("brush_radius", self.w_radius),
            ("show", self.w_show),
            ("style", self.w_style),
            ("contrast", self.w_contrast),
            ("auto_run", self.w_auto),
        ]:
            W.link((self, trait), (ctl, "value"))
        self.w_step.on_click(lambda _: self.step())
        self.w_run.on_click(lambda _: self.run())
        self.w_reset.on_click(lambda _: self.reset())
        self.w_undo.on_click(lambda _: self.undo())
        self.w_redo.on_click(lambda _: self.redo())
        self.w_ask.on_click(lambda _: self.ask())
        self.observe(self._on_look, ["opacity", "show", "style", "contrast"])
        self.observe(self._on_brush, ["brush_radius"])
        self.observe(self._on_asking, ["asking"])
        self._sync_undo_buttons()

    def _answer_button(self, k: int) -> W.Button:
        btn = W.Button(description=self.classes[k], tooltip=f"answer: class {k}", layout=W.Layout(width="auto"))
        btn.on_click(lambda _, k=k: self.answer(k))
        self._colour_button(btn, k)
        return btn

    def _colour_button(self, btn: W.Button, k: int) -> None:
        r, g, b = (int(c) for c in self.palette[k, :3])
        btn.style.button_color = f"rgb({r},{g},{b})"
        btn.style.text_color = "white" if (0.299 * r + 0.587 * g + 0.114 * b) < 140 else "black"

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
        def row(*children: W.Widget) -> W.HBox:
            return W.HBox(list(children), layout=W.Layout(align_items="center"))

        readouts = W.VBox(
            [self.w_legend, self.w_answers, self.w_numbers],
            layout=W.Layout(margin="0 0 0 12px", flex="1 1 240px", min_width="220px", max_width="360px"),
        )
        self.w_panel = W.HBox([self.view, readouts])
        self.w_panel.add_class("gw-panel")
        charts = W.VBox([self.w_loss_caption, self.loss_chart.figure, self.w_gamma_caption, self.gamma_chart.figure])
        self.w_more = W.Accordion(
            [self.w_text_help, charts], titles=("Words: what the text guide understands", "Charts: loss and gamma")
        )
        return [
            row(W.Label("Brush"), self.w_class),
            row(self.w_negative, self.w_radius, self.w_opacity),
            row(W.Label("Show"), self.w_show, self.w_style, self.w_contrast),
            row(
                self.w_step, self.w_run, self.w_reset, self.w_undo, self.w_redo, self.w_ask, self.w_auto, self.w_export
            ),
            row(self.w_text, self.w_apply),
            self.w_panel,
            self.w_status,
            self.w_help,
            self.w_more,
            self.w_export_out,
        ]

    def shortcuts(self) -> dict[str, tuple[str, Any]]:
        keys: dict[str, tuple[str, Any]] = {
            "r": ("run", self.run),
            "s": ("step", self.step),
            "a": ("ask", self.ask),
            "ctrl+z": ("Ctrl+Z|undo", self.undo),
            "ctrl+y": ("Ctrl+Y|redo", self.redo),
        }
        for k in range(min(10, getattr(self, "num_classes", 0))):
            keys[str(k)] = ("" if k else "0-9|brush class", lambda k=k: setattr(self, "brush_class", k))
        return keys

    # ---- validation and observers ---------------------------------------------------------------
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
            self.w_legend.value = self._legend_html()
            for k, btn in enumerate(self.w_answers.children[1].children):
                self._colour_button(btn, k)
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
        if self.show == "original":
            return self._original
        if self.show == "truth" and self.mask is not None:
            return self.mask
        return self._prediction

    def _draw_overlay(self) -> None:
        labels = self._shown_labels()
        if self.style == "outline":
            frame = render.outline_rgba(labels, self.palette, width=max(1, self.width // 96))
            frame[..., 3] = (frame[..., 3].astype(np.float32) * max(self.opacity, 0.2) + 0.5).astype(np.uint8)
        else:
            frame = render.segmentation_rgba(labels, self.palette, alpha=self.opacity)
        self.frames["overlay"] = frame
        self.view.set_layer("overlay", frame)

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
        if self._stroke and self.brush_class is not None:
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
        if g.texts:
            rows.append("<b>words</b>: " + "; ".join(html.escape(t) for t in g.texts))
        if self.mask is not None:
            rows.append(self._iou_table())
        self._sync_text_options()
        self.w_numbers.value = "<div style='overflow-wrap:anywhere'>" + "<br>".join(rows) + "</div>"
        losses = list(g.losses)
        self.loss_chart.update(range(1, len(losses) + 1), {"loss": losses})
        self.w_loss_caption.value = (
            f"<b>loss</b> (log scale): {losses[0]:.3g} &rarr; {losses[-1]:.3g} over {len(losses)} step(s)"
            if losses
            else "<b>loss</b>: no steps yet"
        )
        gamma = render.to_numpy(p["gamma_s"]).reshape(-1) if "gamma_s" in p else np.zeros(0)
        self.gamma_chart.update(gamma.tolist())
        top: list[int] = np.argsort(-np.abs(gamma))[:3].tolist() if gamma.size else []
        self.w_gamma_caption.value = (
            f"<b>gamma</b> per channel ({gamma.size} channels; red up, blue down); largest: "
            + ", ".join(f"#{int(c)} {gamma[c]:+.2f}" for c in top)
            if gamma.size and np.abs(gamma).max() > 0
            else "<b>gamma</b> per channel: all zero"
        )

    def _iou_table(self) -> str:
        """Per-class IoU, original vs now; green where better, red where worse; a flag when the
        last action lowered the mean IoU."""
        assert self.mask is not None
        iou_g = iou_per_class(self._prediction, self.mask, self.num_classes)
        iou_o = iou_per_class(self._original, self.mask, self.num_classes)
        self.iou = iou_g
        mean_g, mean_o = float(np.nanmean(iou_g)), float(np.nanmean(iou_o))

        def cell(now: float, before: float, bold: bool = False) -> str:
            if np.isnan(now):
                return "<td>–</td>"
            d = 0.0 if np.isnan(before) else now - before
            color = theme.GOOD if d > IOU_EPS else theme.BAD if d < -IOU_EPS else theme.TEXT
            arrow = " &#9650;" if d > IOU_EPS else " &#9660;" if d < -IOU_EPS else ""
            text = f"<b>{now:.3f}</b>" if bold else f"{now:.2f}"
            return f"<td style='color:{color}'>{text}{arrow}</td>"

        rows = "".join(
            f"<tr><td>{html.escape(self.classes[k])}</td><td>{'–' if np.isnan(iou_o[k]) else f'{iou_o[k]:.2f}'}</td>"
            f"{cell(iou_g[k], iou_o[k])}</tr>"
            for k in range(self.num_classes)
            if not np.isnan(iou_g[k]) or not np.isnan(iou_o[k])
        )
        table = (
            f"<table style='font-size:90%'><tr><th>class</th><th>IoU before</th><th>IoU now</th></tr>{rows}"
            f"<tr><td><b>mean</b></td><td>{mean_o:.3f}</td>{cell(mean_g, mean_o, bold=True)}</tr></table>"
        )
        last, self._last_mean = self._last_mean, mean_g
        self.regression = last is not None and mean_g < last - IOU_EPS
        if self.regression:
            table += (
                f"<div class='gw-bad' style='font-weight:bold'>&#9888; worse: mean IoU {last:.3f} &rarr; "
                f"{mean_g:.3f} after the last action. Undo (Ctrl+Z) or add a hint there.</div>"
            )
        return table

    def _value_at(self, y: int, x: int) -> str:
        k = int(self._prediction[y, x])
        text = f"guided: {self.classes[k]}"
        k0 = int(self._original[y, x])
        text += f" | original: {self.classes[k0]} ({self._probs[k0, y, x]:.0%})"
        if self.mask is not None:
            text += f" | truth: {self.classes[int(self.mask[y, x])]}"
        return text

    # ---- words ----------------------------------------------------------------------------------
    def _text_help(self) -> str:
        if self.text_guide is None:
            return f"<span class='gw-muted'>Hints in words are off: {html.escape(self._text_note)}.</span>"
        tok = self.text_guide.tokenizer
        return (
            "<span><b>Words</b> (templates: "
            + "; ".join(f"&ldquo;{html.escape(e)}&rdquo;" for e in tok.examples())
            + f"). Classes: {html.escape(', '.join(tok.named))}. Places: {html.escape(', '.join(tok.cells))}. "
            + f"Vocabulary: {html.escape(' '.join(tok.words[1:]))}.</span>"
        )

    def text_suggestions(self) -> list[str]:
        """What the text box offers: the queries generated for the shown prediction against the
        truth (when a mask is known; the largest mistake first), then the template examples."""
        if self.text_guide is None:
            return []
        tok = self.text_guide.tokenizer
        out: list[str] = []
        if self.mask is not None:
            import torch

            from ..guide.queries import generate_queries

            try:
                pred, truth = torch.from_numpy(self._prediction), torch.from_numpy(self.mask)
                out = [q.text for q in generate_queries(pred, truth, self.classes, n=tok.grid, ignore=tok.ignore)]
            except Exception:  # suggestions are a convenience; the box still takes typed sentences
                out = []
        return list(dict.fromkeys([*out[:12], *tok.examples()]))

    def _sync_text_options(self) -> None:
        if self.text_guide is not None:
            self.w_text.options = self.text_suggestions()

    def apply_text(self, sentence: str | None = None) -> bool:
        """Give a hint in words (default: the text box's sentence): the text guide predicts the
        block's parameters and the prediction changes at once (one forward pass). False, with the
        reason in ``status``, on a sentence the templates do not allow; nothing changes then."""
        sentence = self.w_text.value if sentence is None else sentence
        if self.text_guide is None:
            self.status = f"Hints in words are off: {self._text_note}."
            return False
        state = self._state()
        try:
            query = self.guide.add_text(sentence, text_guide=self.text_guide)
        except Exception as err:
            self._fail(err, "words not applied: ")
            return False
        self._push(state)
        self._after(0, f"Words {query.text!r}:")
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
        if cls is None:
            self.status = "Pick a brush class first (the Brush buttons above)."
            return False
        state = self._state()
        try:
            self.guide.add_stroke(points, cls, radius=radius, negative=negative)
        except Exception as err:
            self._fail(err)
            self._draw_hints()
            return False
        self._push(state)
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
    def _state(self) -> tuple[Any, ...]:
        """Everything Undo must bring back: the guide's state and what the widget shows of it."""
        return (self.guide.snapshot(), self._prediction.copy(), self.step_count, self.changed)

    def _push(self, state: tuple[Any, ...]) -> None:
        self._undo.append(state)
        self._redo.clear()
        self._sync_undo_buttons()

    def _sync_undo_buttons(self) -> None:
        self.w_undo.disabled, self.w_redo.disabled = not self._undo, not self._redo

    def _fail(self, err: BaseException, what: str = "") -> None:
        reason = getattr(self.guide, "closed_reason", None) if getattr(self.guide, "closed", False) else None
        self.status = f"Error: {what}{reason or error_text(err)}"

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
        state = self._state()
        try:
            loss = self.guide.step()
        except Exception as err:
            return self._fail(err, "the guide step failed: ")
        self._push(state)
        self._after(1, f"Step (loss {loss:.4g}):" if loss is not None else "Step:")

    def run(self) -> None:
        """Optimise until every hint is satisfied (or the step budget is spent)."""
        if not self.guide.hints:
            self.status = "Paint a hint first (click or drag on the image), then Run."
            return
        state = self._state()
        self._before = self._prediction  # live updates move _prediction; "changed" counts from here

        def live(i: int, loss: float) -> None:
            # every few steps: show the segmentation as it moves (the kernel is busy, messages still go out)
            if self.live_every and (i + 1) % self.live_every == 0:
                self._prediction = render.to_numpy(self.guide.prediction())
                self._draw_overlay()
                losses = self.guide.losses
                self.loss_chart.update(range(1, len(losses) + 1), {"loss": losses})

        try:
            n = self.guide.run(steps=self.run_steps or None, callback=live)
        except Exception as err:
            self._before = None
            return self._fail(err, "the guide run failed: ")
        self._push(state)
        self._after(n, f"Run: {n} step(s).")

    def reset(self) -> None:
        """Back to the plain prediction: block at zero, hints and history cleared (Undo brings it back)."""
        state = self._state()
        try:
            self.guide.reset(clear_hints=True)
        except Exception as err:
            return self._fail(err)
        self._push(state)
        self._stroke = []
        self.asking = None
        self.step_count = 0
        self.hint_count = 0
        self._after(0, "Reset.")
        self.changed = 0
        self.status = "Reset: plain prediction, no hints."
        self._readouts()

    def _swap(self, src: list[tuple[Any, ...]], dst: list[tuple[Any, ...]], word: str) -> bool:
        if not src:
            self.status = f"Nothing to {word.lower()}."
            return False
        state = src.pop()
        now = self._state()
        try:
            self.guide.restore(state[0])
        except Exception as err:
            src.append(state)
            self._fail(err)
            return False
        dst.append(now)
        self._prediction, self.step_count, self.changed = state[1].copy(), state[2], state[3]
        self.hint_count = len(self.guide.hints)
        self.asking = None
        self._sync_undo_buttons()
        self._draw_overlay()
        self._draw_hints()
        self._readouts()
        self.status = f"{word}: back to {self.hint_count} hint(s), {self.step_count} step(s)."
        return True

    def undo(self) -> bool:
        """Restore the exact state before the last action (hint, step, run, answer or reset)."""
        return self._swap(self._undo, self._redo, "Undo")

    def redo(self) -> bool:
        """Do again what :meth:`undo` took back."""
        return self._swap(self._redo, self._undo, "Redo")

    def ask(self) -> tuple[int, int] | None:
        """Let the network ask: mark its least certain pixel and wait for :meth:`answer`."""
        try:
            y, x = self.guide.ask()
        except Exception as err:
            self._fail(err)
            return None
        probs = render.to_numpy(self.guide.logits().softmax(1)[0, :, y, x].float())
        a, b = np.argsort(-probs)[:2]
        self.asking = (int(y), int(x))
        question = (
            f"Which class is the marked pixel (y={y}, x={x})? The network hesitates between "
            f"{self.classes[a]} ({probs[a]:.0%}) and {self.classes[b]} ({probs[b]:.0%})."
        )
        self.w_question.value = f"<b>{html.escape(question)}</b><br>Answer with a button:"
        self.status = question + " Answer with the buttons beside the image."
        return self.asking

    def answer(self, cls: int) -> None:
        """Answer the pending question: the asked pixel is class ``cls``; then the guide runs."""
        if self.asking is None:
            self.status = "Nothing was asked; press 'Ask me' first."
            return
        y, x = self.asking
        state = self._state()
        try:
            self.guide.add_hint(y, x, cls)
        except Exception as err:
            return self._fail(err)
        self.hint_count = len(self.guide.hints)
        self.asking = None
        n_undo = len(self._undo)
        self.run()
        del self._undo[n_undo:]  # the answer and its run are one action for Undo
        self._push(state)

    # ---- export and lifetime --------------------------------------------------------------------
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
        if "guide" in vars(self):  # a constructor that failed made none (ipywidgets closes on __del__ too)
            self.guide.close()
        super().close()
