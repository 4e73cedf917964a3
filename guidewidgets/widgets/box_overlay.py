"""The ExplainWidget's box overlay: where the map says the object is, as a box.

The lecture's weakly supervised localization (Zhou et al. 2016's CAM boxes): keep the map's pixels
above a fraction of its maximum (default 20 %), take the largest connected component and its
tight box (:func:`guidewidgets.localize.boxes.box_and_iou`). The box is drawn white on black (readable
over any colour map), the true box of the explained class green, and the IoU of the two goes into
the heading when the image's boxes are known (ShapeScenes items carry ``boxes``/``box_labels``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import traitlets as T

from ..localize.boxes import box_and_iou, box_iou, check_threshold

BOX = (255, 255, 255, 255)  # the map's box: white, with a black rim outside
RIM = (0, 0, 0, 255)
TRUTH = (0, 200, 0, 255)  # the true box: green

TrueBoxes = tuple[torch.Tensor, torch.Tensor | None]  # (N, 4) boxes [x0, y0, x1, y1], (N,) classes or None


def item_boxes(item: Any) -> TrueBoxes | None:
    """The true boxes a dataset item carries (``{"boxes": (N, 4), "box_labels": (N,)}``), else None."""
    if not isinstance(item, dict) or item.get("boxes") is None:
        return None
    b = torch.as_tensor(item["boxes"], dtype=torch.long).reshape(-1, 4)
    lab = item.get("box_labels")
    return b, None if lab is None else torch.as_tensor(lab, dtype=torch.long).reshape(-1)


def source_boxes(images: Any, n: int) -> list[TrueBoxes | None]:
    """True boxes of the first ``n`` items of an image source, in the order ``inputs.labelled_images``
    reads them (a dict's values, a sequence's items); None where an item has none."""
    if isinstance(images, dict) and "image" not in images:
        items: Iterable[Any] = list(images.values())[:n]
    elif isinstance(images, dict):
        items = [images]
    elif hasattr(images, "__len__") and hasattr(images, "__getitem__") and not hasattr(images, "shape"):
        items = [images[i] for i in range(min(n, len(images)))]
    else:
        items = []
    out = [item_boxes(it) for it in items]
    return (out + [None] * n)[:n]


def fit_boxes(boxes: torch.Tensor, hw: tuple[int, ...], size: int | None) -> torch.Tensor:
    """Boxes of an ``hw`` image moved to what ``inputs.fit(image, size)`` makes of it (centre
    square crop, resize), clipped to the picture; unchanged when ``size`` is None or already fits."""
    h, w = hw
    if size is None or (h, w) == (size, size):
        return boxes
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    b = boxes.double() - torch.tensor([left, top, left, top], dtype=torch.float64)
    b = (b * size / s).round().clamp(0, size)
    return b.long()


def draw_box(frame: np.ndarray, box: Any, colour: tuple[int, ...], width: int, rim: bool = False) -> None:
    """Draw a box ``[x0, y0, x1, y1]`` (exclusive ends) into an RGBA frame, ``width`` pixels thick
    inside its edges; with ``rim`` a one-pixel black line just outside, so it reads over any map."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    if rim:
        draw_box(frame, (x0 - 1, y0 - 1, x1 + 1, y1 + 1), RIM, 1)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    t = max(1, width)
    frame[y0 : min(y0 + t, y1), x0:x1] = colour
    frame[max(y1 - t, y0) : y1, x0:x1] = colour
    frame[y0:y1, x0 : min(x0 + t, x1)] = colour
    frame[y0:y1, max(x1 - t, x0) : x1] = colour


@dataclass
class BoxInfo:
    """What the box overlay shows: the map's box (None for an empty map), the true boxes of the
    explained class (None when unknown) and the best IoU between them (None when unknown)."""

    box: list[int] | None
    truth: torch.Tensor | None
    iou: float | None
    threshold: float

    def text(self, class_name: str) -> str:
        """A heading fragment, e.g. ``"box at 20 % of max: IoU 0.71 with the true star box"``."""
        head = f"box at {self.threshold:.0%} of max"
        if self.box is None:
            return f"{head}: none (the map is flat or nowhere positive: no peak to box)"
        if self.truth is None:
            return f"{head} (no true box known for this image)"
        if len(self.truth) == 0:
            return f"{head} (no {class_name} in this image's true boxes)"
        return f"{head}: IoU {self.iou:.2f} with the true {class_name} box"


class BoxOverlay(T.HasTraits):
    """Mixin for the ExplainWidget: ``box`` (draw it) and ``box_threshold`` (fraction of the map's
    maximum, default 0.2); ``box_info`` holds what is drawn (a :class:`BoxInfo`, None when off)."""

    box = T.Bool(False, help="draw the map's box (threshold + largest component) and the true box")
    box_threshold = T.Float(0.2, help="fraction of the map's maximum the box keeps (0 < t < 1)")
    box_info: BoxInfo | None = None
    session: Any
    image_index: int
    target: int
    _reject: Callable[..., Any]

    @T.validate("box_threshold")
    def _valid_box_threshold(self, proposal: dict) -> float:
        try:
            return check_threshold(proposal["value"], "box threshold")
        except (TypeError, ValueError) as err:
            return self._reject("box_threshold", err)

    def _with_box(self, frame: np.ndarray, result: dict[str, np.ndarray]) -> np.ndarray:
        """``frame`` with the box overlay drawn on a copy (unchanged when ``box`` is off)."""
        self.box_info = None
        if not self.box:
            return frame
        truth = self.session.true_boxes(self.image_index, self.target)
        box, _ = box_and_iou(result["map"], self.box_threshold)
        iou = None
        if truth is not None:
            iou = float(box_iou(box[None], truth).max()) if box is not None and len(truth) else 0.0
        out = frame.copy()
        width = max(1, frame.shape[1] // 96)
        for t in [] if truth is None else truth.tolist():
            draw_box(out, t, TRUTH, width)
        if box is not None:
            draw_box(out, box.tolist(), BOX, width, rim=True)
        self.box_info = BoxInfo(None if box is None else box.tolist(), truth, iou, self.box_threshold)
        return out

    def box_text(self) -> str:
        """The heading's box fragment ("" when the box is off)."""
        if self.box_info is None:
            return ""
        return " | " + self.box_info.text(self.session.class_name(self.target))
