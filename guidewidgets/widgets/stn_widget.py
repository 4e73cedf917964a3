"""STNWidget: distort a scene live and watch the spatial transformer undo it.

Left: the distorted input with the STN's sampling grid drawn over it (the outline is where the
48 x 48 output is read from; inner lines every 6 output pixels). Right: the rectified output the
classifier sees. Below: the class the STN classifier and the plain classifier (same trunk, whole
image) predict, with the truth. A thin view over :class:`guidewidgets.attend.STNSession`
(``w.session``: the scene, its distortion and both predictions). Sliders rotate, scale and move the object (the background and
clutter stay), and every change recomputes at once (one forward pass of two small CNNs).
State lives in traitlets (``image_index``, ``angle``, ``scale``, ``shift_x``, ``shift_y``), linked
to the controls, so a notebook can set it and a test can drive it without a browser.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import numpy as np
import torch
import traitlets as T
from torch import nn

from .. import render
from ..attend import stn
from ..attend.stn_session import STNSession
from . import theme
from .base import WidgetBase, error_text

ZOOM = 3  # the 96 px input is shown 3x (288 px); the 48 px output 6x, the same size
GRID_LINES = 9  # grid lines each way (8 cells of 6 output pixels)


def draw_grid(
    image: torch.Tensor | np.ndarray,
    theta: torch.Tensor,
    *,
    zoom: int = ZOOM,
    lines: int = GRID_LINES,
    color: tuple[int, int, int, int] = (255, 255, 0, 255),
) -> np.ndarray:
    """``image`` (3, H, W) enlarged ``zoom`` times with ``theta``'s sampling grid drawn on it (RGBA).

    Output coordinates ``t`` in [-1, 1] go to input coordinates ``theta @ (t, 1)``; with
    ``align_corners=False`` input x = -1 is the left edge of pixel 0, so the display x is
    ``(x + 1) / 2 * W * zoom``. The outer quad is the region the STN reads.
    """
    from PIL import Image, ImageDraw

    rgba = render.upscale(render.to_rgba(image), int(zoom))
    h, w = rgba.shape[:2]
    th = torch.as_tensor(theta, dtype=torch.float32).reshape(2, 3)
    t = torch.linspace(-1.0, 1.0, int(lines))

    def to_px(xs: torch.Tensor, ys: torch.Tensor) -> list[tuple[float, float]]:
        pts = torch.stack([xs, ys, torch.ones_like(xs)], 1) @ th.T
        return [((float(x) + 1) / 2 * w, (float(y) + 1) / 2 * h) for x, y in pts]

    im = Image.fromarray(rgba)
    draw = ImageDraw.Draw(im)
    dense = torch.linspace(-1.0, 1.0, 2)
    for i, v in enumerate(t):
        width = 2 if i in (0, len(t) - 1) else 1
        draw.line(to_px(dense, torch.full_like(dense, float(v))), fill=color, width=width)
        draw.line(to_px(torch.full_like(dense, float(v)), dense), fill=color, width=width)
    # the output's top-left corner, so a rotation or a flip can be read off the grid
    (x0, y0) = to_px(torch.tensor([-1.0]), torch.tensor([-1.0]))[0]
    draw.ellipse([x0 - 4, y0 - 4, x0 + 4, y0 + 4], fill=(255, 64, 64, 255))
    return np.asarray(im).copy()


class STNWidget(WidgetBase):
    """Pick a distorted scene, distort it further with sliders, see the STN's grid and rectified view.

    Args:
        model: an :class:`~guidewidgets.attend.stn.STNClassifier` (default: the shipped one).
        plain: the baseline classifier to compare with (default: the shipped one; ``False`` for none).
        scenes: a :class:`~guidewidgets.attend.stn.DistortedScenes` (default: 64 held-out scenes).
        presenter: larger text for a projector (default: ``theme.set_presenter``).
    """

    image_index = T.Int(0, help="the scene shown (index into ``scenes``)")
    angle = T.Float(0.0, help="rotation of the object in degrees")
    scale = T.Float(1.0, help="object size relative to the clean scene")
    shift_x = T.Float(0.0, help="object centre, x (normalised: -1 left edge, +1 right edge)")
    shift_y = T.Float(0.0, help="object centre, y (normalised: -1 top edge, +1 bottom edge)")
    export_stem = "stn"

    def __init__(
        self,
        model: nn.Module | None = None,
        plain: nn.Module | bool | None = None,
        scenes: stn.DistortedScenes | None = None,
        *,
        presenter: bool | None = None,
    ) -> None:
        super().__init__(presenter=presenter)
        with self._building():
            self.session = STNSession(model, plain, scenes)
            self.result: dict[str, Any] = {}
            self.w_image = W.IntSlider(min=0, max=len(self.session.scenes) - 1, description="Scene")
            self.w_angle = W.FloatSlider(min=-180.0, max=180.0, step=5.0, description="Rotate (°)")
            self.w_scale = W.FloatSlider(min=0.25, max=1.2, step=0.05, description="Scale")
            self.w_shift_x = W.FloatSlider(min=-0.7, max=0.7, step=0.05, description="Shift x")
            self.w_shift_y = W.FloatSlider(min=-0.7, max=0.7, step=0.05, description="Shift y")
            self.w_reset = W.Button(description="Scene's own distortion", tooltip="the distortion the data set drew")
            self.w_input, self.w_output = W.Image(format="png"), W.Image(format="png")
            self.w_input_caption = W.HTML("<b>Input</b> with the STN's sampling grid")
            self.w_output_caption = W.HTML("<b>Rectified output</b> (what the classifier sees)")
            self.w_prediction = W.HTML()
            for name in ("image_index", "angle", "scale", "shift_x", "shift_y"):
                W.link((self, name), (getattr(self, "w_" + name.replace("image_index", "image")), "value"))
            self.w_reset.on_click(lambda _: self.reset())
            self.add_class("gw-stn")
            self._base_controls()
            self.w_opacity.layout.display = "none"  # nothing is blended here
            controls = [
                W.HBox([self.w_image, self.w_reset]),
                W.HBox([self.w_angle, self.w_scale]),
                W.HBox([self.w_shift_x, self.w_shift_y]),
            ]
            for w in (self.w_input, self.w_output):
                w.add_class("gw-pixels")
            panels = W.HBox(
                [
                    W.VBox([self.w_input_caption, self.w_input], layout=W.Layout(flex="0 1 auto")),
                    W.VBox(
                        [self.w_output_caption, self.w_output], layout=W.Layout(margin="0 0 0 12px", flex="0 1 auto")
                    ),
                ]
            )
            panels.add_class("gw-panel")
            self.children = [
                *controls,
                panels,
                self.w_prediction,
                self._status_row(),
                self.w_export_out,
            ]
            with self._quiet():
                self._set_from_scene()
            self.observe(self._on_change, names=["angle", "scale", "shift_x", "shift_y"])
            self.observe(self._on_image, names=["image_index"])
            self.refresh()

    # ---- the session's parts, read-only ----------------------------------------------------------
    @property
    def model(self) -> Any:
        return self.session.model

    @property
    def plain(self) -> nn.Module | None:
        return self.session.plain

    @property
    def scenes(self) -> stn.DistortedScenes:
        return self.session.scenes

    @property
    def classes(self) -> list[str]:
        return self.session.classes

    # ---- state ------------------------------------------------------------------------------------
    def _check(self, name: str, proposal: dict, check: Any) -> Any:
        try:
            return check(proposal["value"]) if "session" in vars(self) else proposal["value"]
        except (TypeError, ValueError) as err:
            return self._reject(name, err)

    @T.validate("image_index")
    def _valid_index(self, proposal: dict) -> int:
        return self._check("image_index", proposal, lambda i: self.session.check_index(i))

    @T.validate("scale")
    def _valid_scale(self, proposal: dict) -> float:
        return self._check("scale", proposal, lambda s: self.session.check_scale(s))

    def _set_from_scene(self) -> None:
        self.angle, self.scale, (self.shift_x, self.shift_y) = self.session.own_distortion(self.image_index)

    def reset(self) -> None:
        """Back to the distortion the data set drew for this scene."""
        with self._quiet():
            self._set_from_scene()
        self.refresh()

    def _on_image(self, change: dict) -> None:
        if not self._syncing:
            with self._working():
                self.reset()

    def _on_change(self, change: dict) -> None:
        if not self._syncing:
            with self._working():  # a slider drag: feedback before the two forward passes
                self.refresh()

    # ---- compute and draw ---------------------------------------------------------------------------
    def image(self) -> torch.Tensor:
        """The current input (3, 96, 96): the scene with the distortion last drawn."""
        return self.session.image()

    def refresh(self) -> None:
        """Recompute the grid, the output and both predictions; errors go to the status line."""
        s = self.session
        try:
            s.index = s.check_index(self.image_index)
            self.result = s.distort(self.angle, self.scale, (self.shift_x, self.shift_y))
        except Exception as err:
            self.status = f"Error: {error_text(err)}"
            return
        r = self.result
        self.input_rgba = draw_grid(r["input"], r["theta"])
        self.output_rgba = render.upscale(render.to_rgba(r["output"].clamp(0, 1)), ZOOM * stn.SIZE // stn.OUT)
        for w, rgba in ((self.w_input, self.input_rgba), (self.w_output, self.output_rgba)):
            w.value = render.to_png(rgba)
            w.layout.width, w.layout.height = f"{rgba.shape[1]}px", f"{rgba.shape[0]}px"
        self.w_prediction.value = self._prediction_html()
        self._clear_error()
        self.status = s.describe()

    def _verdict(self, key: str) -> str:
        said = self.session.verdict(key)
        if said is None:
            return ""
        text, ok = said
        colour = theme.GOOD if ok else theme.BAD
        return f'<span style="color:{colour}">{html.escape(text)} {"✓" if ok else "✗"}</span>'

    def _prediction_html(self) -> str:
        r = self.result
        parts = [f"<b>STN</b>: {self._verdict('stn')}"]
        if r.get("plain") is not None:
            parts.append(f"<b>plain</b>: {self._verdict('plain')}")
        parts.append(f"<b>truth</b>: {html.escape(self.classes[r['label']])}")
        return " &nbsp;|&nbsp; ".join(parts)

    # ---- export -----------------------------------------------------------------------------------
    def display_scale(self) -> int:
        return 1  # composite() is already at display size (the grid lines need it)

    def composite(self) -> np.ndarray:
        return render.grid([self.input_rgba, self.output_rgba], pad=12)

    def close(self) -> None:
        if "session" in vars(self):  # a constructor that failed made none
            self.session.close()
        super().close()

    def heading(self) -> str:
        r = self.result
        text = f"STN: {self.classes[r['stn']]} {100 * r['stn_p']:.0f}%"
        if r.get("plain") is not None:
            text += f" | plain: {self.classes[r['plain']]} {100 * r['plain_p']:.0f}%"
        return text + f" | truth: {self.classes[r['label']]} (left: input and sampling grid, right: STN output)"
