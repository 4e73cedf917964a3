"""The ExplainWidget's targets beyond a class: a region for segmentation models ("class k inside
this box") and a detected box for torchvision detectors.

A segmenter's class k is explained by default through the sum of its logits over the whole image.
In Region mode a rectangle dragged on the image (mouse down, move, up) makes the target
:func:`~guidewidgets.explain.task_targets.segmentation_target` ``(k, box=region)`` instead: the
map answers "why does the model call *these* pixels class k". The region is part of the map's cache
key (``MapKey.region``), drawn on the view's ``hints`` layer (white on a black rim) and cleared
with "Whole image" (``clear_region()``). ``set_region((x0, y0, x1, y1))`` does the same from
Python (exclusive ends, image pixels); a region outside the image, an empty one or one on a
classifier is refused with a status message and changes nothing.

For a detector (a model returning ``[{"boxes", "labels", "scores"}]``) the session's targets are
the detected boxes: the Target menu (then called "Box") lists them as "label score", every box is
drawn on the map (grey; the chosen one white on a black rim) and the chosen one is explained
through :class:`~guidewidgets.explain.task_targets.DetectorBoxScore` with target 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets as T

from .box_overlay import BOX, BoxOverlay, draw_box

Region = tuple[int, int, int, int]
OTHER = (160, 160, 160, 255)  # the detections not explained


def check_region(region: Sequence[Any], height: int, width: int) -> Region:
    """``region`` as four ints (x0, y0, x1, y1) with 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height,
    or a ValueError/TypeError whose sentence says what to give instead."""
    try:
        vals = [float(v) for v in region]
    except (TypeError, ValueError):
        raise TypeError(f"a region is four numbers (x0, y0, x1, y1) in image pixels, got {region!r}") from None
    if len(vals) != 4 or not all(np.isfinite(vals)):
        raise ValueError(f"a region is four finite numbers (x0, y0, x1, y1) in image pixels, got {region!r}")
    x0, y0, x1, y1 = (int(round(v)) for v in vals)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(
            f"region {(x0, y0, x1, y1)} is empty: it needs x1 > x0 and y1 > y0 (corners, exclusive ends); "
            "drag a rectangle at least one pixel wide"
        )
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(
            f"region {(x0, y0, x1, y1)} lies (partly) outside the {height}x{width} image; "
            f"give 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}"
        )
    return x0, y0, x1, y1


class RegionSelect(BoxOverlay):
    """Mixin for the ExplainWidget: ``region`` (``()`` = the whole image, else (x0, y0, x1, y1)) and
    ``region_mode`` (drags on the image draw a region). Only segmentation models take a region;
    for detectors it draws the detected boxes on the map (``target`` is then a box's index)."""

    region = T.Tuple(help="() = whole image; (x0, y0, x1, y1), exclusive ends: explain the class inside")
    region_mode = T.Bool(False, help="drags on the image draw the region (segmentation models)")
    session: Any
    view: Any
    w_target: Any
    status: str
    update: Callable[[], None]
    _drag_start: tuple[int, int] | None = None  # (y, x) where the current drag began

    @property
    def region_box(self) -> Region | None:
        """The region as the map's cache key holds it (None for the whole image)."""
        return tuple(self.region) if self.region else None  # type: ignore[return-value]

    def set_region(self, region: Sequence[Any] | None) -> bool:
        """Explain the target class inside ``region`` (x0, y0, x1, y1), image pixels, exclusive
        ends (None: the whole image). A bad region sets ``status`` and changes nothing; returns
        whether the region was taken."""
        if region is None:
            self.region = ()
            return True
        try:
            if not self.session.segmentation:
                raise ValueError(
                    "a region target needs a segmentation model (output (B, K, H, W)); this model is a classifier"
                )
            box = check_region(region, *self.session.images[0].shape[-2:])
        except (TypeError, ValueError) as err:
            self.status = f"Error: {err}"
            return False
        self.region = box
        return True

    def clear_region(self) -> None:
        """Back to the whole image (class k's logits summed over every pixel)."""
        self.region = ()

    # ---- view ---------------------------------------------------------------------------------
    def _build_region_controls(self) -> None:
        """The Region toggle, the "Whole image" button and the mouse handlers (called by build_controls)."""
        self.w_region_mode = W.ToggleButton(
            description="Region", icon="crop", tooltip="drag a rectangle: explain the class inside it only"
        )
        self.w_region_clear = W.Button(description="Whole image", icon="expand", tooltip="explain the whole image")
        self.w_region_text = W.HTML()
        self.w_region_bar = W.HBox([self.w_region_mode, self.w_region_clear, self.w_region_text])
        W.link((self, "region_mode"), (self.w_region_mode, "value"))
        self.w_region_clear.on_click(lambda _: self.clear_region())
        try:
            seg = bool(self.session.images) and self._is_segmenter()
        except Exception:  # the model failing on an image is reported by the widget itself
            seg = False
        self.w_region_bar.layout.display = None if seg else "none"
        if self.session.detection:
            self.w_target.description = "Box"
        self.view.on("down", self._region_down)
        self.view.on("drag", self._region_drag)
        self.view.on("up", self._region_up)
        self.observe(self._on_region, "region")

    def _is_segmenter(self) -> bool:
        self.session.probabilities(0)  # cached: the widget needs these scores anyway
        return bool(self.session.segmentation)

    def _on_region(self, change: dict) -> None:
        self._draw_region(self.region_box)
        r = self.region_box
        self.w_region_text.value = "whole image" if r is None else "inside ({}, {})-({}, {})".format(*r)
        self.update()

    def _draw_region(self, box: Sequence[int] | None) -> None:
        if box is None:
            self.view.set_layer("hints", None)
            return
        frame = np.zeros((self.view.height, self.view.width, 4), np.uint8)
        draw_box(frame, box, BOX, 1, rim=True)
        self.view.set_layer("hints", frame)

    def _drag_box(self, y: int, x: int) -> Region | None:
        if self._drag_start is None:
            return None
        y0, x0 = self._drag_start
        return min(x0, x), min(y0, y), max(x0, x) + 1, max(y0, y) + 1  # both corner pixels inside

    def _region_down(self, y: int, x: int) -> None:
        if self.region_mode:
            self._drag_start = (y, x)

    def _region_drag(self, y: int, x: int) -> None:
        box = self._drag_box(y, x)
        if box is not None:
            self._draw_region(box)  # a preview; nothing is computed until the button goes up

    def _region_up(self, y: int, x: int) -> None:
        box = self._drag_box(y, x)
        self._drag_start = None
        if box is None:
            return
        if (box[2] - box[0]) * (box[3] - box[1]) < 4:  # a click, not a drag: keep what was there
            self._draw_region(self.region_box)
            self.status = "Error: the region is empty; drag a rectangle (at least 2x2 pixels) on the image"
            return
        if not self.set_region(box):
            self._draw_region(self.region_box)

    # ---- detectors ----------------------------------------------------------------------------
    def _with_box(self, frame: np.ndarray, result: dict[str, np.ndarray]) -> np.ndarray:
        frame = super()._with_box(frame, result)
        dets = self.session.detections.get(self.image_index) if self.session.detection else None
        if dets is None:
            return frame
        out = frame.copy()
        width = max(1, frame.shape[1] // 128)
        boxes = dets["boxes"].round().long().tolist()
        for j, b in enumerate(boxes):
            if j != self.target:
                draw_box(out, b, OTHER, width)
        if 0 <= self.target < len(boxes):
            draw_box(out, boxes[self.target], BOX, width, rim=True)
        return out
