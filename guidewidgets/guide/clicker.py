"""The simulated user of the NoC protocol (Xu et al. 2016; f-BRS; RITM): where the next click goes.

The click goes to the interior point (the largest distance to the region's boundary, the image
border counting as boundary) of the larger error region: positive for missed object pixels
(false negatives), negative for pixels wrongly given to the object (false positives). NoC@85 and
NoC@90 count the clicks until the object's IoU reaches 85 % / 90 %, at most :data:`MAX_CLICKS`.
On a multi-class label map every class is an object (see :func:`next_click`). The evaluation
that plays the protocol with each refiner is in ``noc.py``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage

from ..metrics.segmentation import iou_per_class, miou
from .checks import check_index
from .questions import VOID

__all__ = [
    "Click",
    "Clicker",
    "simulated_click",
    "next_click",
    "clicks_to_reach",
    "MAX_CLICKS",
    "THRESHOLDS",
]

MAX_CLICKS = 20
THRESHOLDS = (0.85, 0.90)


class Click(NamedTuple):
    """One simulated click: pixel (y, x), the class it is about, and whether it says "class ``cls``
    is here" (positive) or "class ``cls`` is not here" (negative). Unpacks as ``y, x, cls, positive``;
    ``guide.add_hint(y, x, cls, negative=not positive)`` gives it to a :class:`Guide`."""

    y: int
    x: int
    cls: int
    positive: bool


def _as_array(value: object, name: str, what: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"{name} must be {what} (a torch.Tensor or numpy array), got {type(value).__name__}")


def _check_mask(value: object, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as an (H, W) numpy bool array; refused (not converted) when it is not bool."""
    want = "an (H, W) bool mask"
    arr = _as_array(value, name, want)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be {want}, got shape {tuple(arr.shape)}")
    if arr.dtype != np.bool_:
        raise TypeError(f"{name} must be {want}, got dtype {arr.dtype}; for a 0/1 mask pass {name} == 1")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} has shape {tuple(arr.shape)} but the truth is {shape}; give both at the same size")
    return arr


def _check_labels(value: object, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as an (H, W) integer label map (a float or bool map is refused)."""
    want = "an (H, W) integer label map"
    arr = _as_array(value, name, want)
    if arr.ndim != 2:
        fix = "; for a (1, H, W) map use map[0]" if arr.ndim == 3 and arr.shape[0] == 1 else ""
        raise ValueError(f"{name} must be {want}, got shape {tuple(arr.shape)}{fix}")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
        fix = "; for logits use logits.argmax(1)[0]" if np.issubdtype(arr.dtype, np.floating) else ""
        raise TypeError(f"{name} must be {want} (class indices), got dtype {arr.dtype}{fix}")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} has shape {tuple(arr.shape)} but the truth is {shape}; give both at the same size")
    return arr


def _depth(region: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel of ``region`` to the nearest pixel outside it (0 outside).

    Why the padding: as in f-BRS and RITM, the image border counts as the region's boundary, so a
    click never lands on the edge of the picture just because the error runs off it.
    """
    return ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]


def _binary_click(
    pred: np.ndarray, truth: np.ndarray, void: np.ndarray | None, clicked: np.ndarray | None
) -> tuple[int, int, bool, float] | None:
    """(y, x, positive, depth) of the protocol's next click on a binary problem, or None."""
    care = ~void if void is not None else np.ones_like(truth)
    fn = truth & ~pred & care
    fp = pred & ~truth & care
    d_fn, d_fp = _depth(fn), _depth(fp)
    if clicked is not None:  # f-BRS's clicker never clicks a pixel twice
        d_fn[clicked] = 0
        d_fp[clicked] = 0
    m_fn, m_fp = float(d_fn.max()), float(d_fp.max())
    if max(m_fn, m_fp) == 0:
        return None
    positive = m_fn > m_fp  # a tie is a negative click, as in f-BRS and RITM
    depth = d_fn if positive else d_fp
    y, x = divmod(int(depth.argmax()), truth.shape[1])  # first maximum in raster order: deterministic
    return y, x, positive, float(depth[y, x])


def simulated_click(
    pred_mask: torch.Tensor | np.ndarray,
    truth_mask: torch.Tensor | np.ndarray,
    void: torch.Tensor | np.ndarray | None = None,
    clicked: torch.Tensor | np.ndarray | None = None,
) -> tuple[int, int, bool] | None:
    """The next click of the NoC protocol on a binary object: ``(y, x, positive)``, or None.

    The false negatives (object pixels predicted as background) and the false positives are two
    error regions; the one with the deeper interior (larger maximum of the Euclidean distance
    transform, the image border counting as boundary) gets the click, at its deepest pixel (the
    first in raster order on a tie; FN must be strictly deeper to win, as in f-BRS). Positive for a
    false negative, negative for a false positive. ``void`` pixels are neither scored nor clicked;
    ``clicked`` pixels are not clicked again. None when no error pixel is left to click.

    Args:
        pred_mask: (H, W) bool predicted object.
        truth_mask: (H, W) bool true object, not empty.
        void: optional (H, W) bool pixels to ignore.
        clicked: optional (H, W) bool pixels clicked before.
    """
    truth = _check_mask(truth_mask, "truth_mask")
    pred = _check_mask(pred_mask, "pred_mask", truth.shape)
    v = None if void is None else _check_mask(void, "void", truth.shape)
    c = None if clicked is None else _check_mask(clicked, "clicked", truth.shape)
    if not (truth & ~v if v is not None else truth).any():
        raise ValueError("truth_mask has no (non-void) pixels; the protocol needs an object of at least one pixel")
    found = _binary_click(pred, truth, v, c)
    return None if found is None else found[:3]


def _object_class(truth: np.ndarray, obj: np.ndarray, ignore_index: int) -> int:
    labels = truth[obj & (truth != ignore_index)]
    if labels.size == 0:
        raise ValueError(
            "object_mask covers no labelled pixel of the truth; an object needs at least one pixel "
            "(pass the instance's mask, e.g. scene['instances'] == i + 1)"
        )
    values, counts = np.unique(labels, return_counts=True)
    return int(values[counts.argmax()])  # the object's class: its most common true label


def next_click(
    prediction: torch.Tensor | np.ndarray,
    truth: torch.Tensor | np.ndarray,
    object_mask: torch.Tensor | np.ndarray | None = None,
    *,
    clicked: torch.Tensor | np.ndarray | None = None,
    ignore_index: int = VOID,
) -> Click | None:
    """The simulated user's next click on a multi-class prediction, as a :class:`Click`, or None.

    With ``object_mask`` (one object): the binary protocol of :func:`simulated_click` on "class c"
    vs the rest, where c is the object's class in ``truth``; other pixels of class c outside the
    object (another instance) are void. Without it (the whole label map, e.g. a widget's image):
    every class in the truth or the prediction is an object and the click goes to the deepest
    error region among all of them (ties: the lower class, negative before positive).

    Args:
        prediction: (H, W) integer class map (``guide.prediction()``).
        truth: (H, W) integer label map; ``ignore_index`` pixels are void.
        object_mask: optional (H, W) bool mask of one object.
        clicked: optional (H, W) bool pixels clicked before (never clicked again).
        ignore_index: the void label (255, as PASCAL VOC).
    """
    t = _check_labels(truth, "truth")
    p = _check_labels(prediction, "prediction", t.shape)
    c = None if clicked is None else _check_mask(clicked, "clicked", t.shape)
    void = t == ignore_index
    if object_mask is not None:
        obj = _check_mask(object_mask, "object_mask", t.shape)
        k = _object_class(t, obj, ignore_index)
        found = _binary_click(p == k, obj, void | ((t == k) & ~obj), c)
        return None if found is None else Click(found[0], found[1], k, found[2])
    if void.all():
        raise ValueError("truth has no labelled pixel (all void); the protocol needs a ground truth to click from")
    best: tuple[float, int, int, int, bool] | None = None
    for k in sorted(set(np.unique(t[~void]).tolist()) | set(np.unique(p).tolist())):
        found = _binary_click(p == k, t == k, void, c)
        if found is not None and (best is None or found[3] > best[0]):
            best = (found[3], int(k), found[0], found[1], found[2])
    return None if best is None else Click(best[2], best[3], best[1], best[4])


class Clicker:
    """The simulated user across the clicks on one object (or a whole label map): the protocol's state.

    ``clicker.next_click(prediction)`` returns the next :class:`Click` (None when nothing is left to
    fix) and remembers it, so a pixel is never clicked twice; ``clicker.score(prediction)`` is the
    object's IoU (the label map's mIoU without ``object_mask``) in [0, 1].

    Args:
        truth: (H, W) integer label map (``ignore_index`` = void).
        object_mask: optional (H, W) bool mask of the object to segment.
        ignore_index: the void label.
    """

    def __init__(
        self,
        truth: torch.Tensor | np.ndarray,
        object_mask: torch.Tensor | np.ndarray | None = None,
        *,
        ignore_index: int = VOID,
    ) -> None:
        self.truth = _check_labels(truth, "truth").copy()
        self.ignore_index = check_index(ignore_index, "ignore_index")
        self.object_mask = None if object_mask is None else _check_mask(object_mask, "object_mask", self.truth.shape)
        self.cls = None if self.object_mask is None else _object_class(self.truth, self.object_mask, self.ignore_index)
        if self.object_mask is None and (self.truth == self.ignore_index).all():
            raise ValueError("truth has no labelled pixel (all void); the protocol needs a ground truth to click from")
        self.clicked = np.zeros(self.truth.shape, dtype=bool)
        self.clicks: list[Click] = []

    def next_click(self, prediction: torch.Tensor | np.ndarray) -> Click | None:
        """The click the protocol makes on ``prediction`` (recorded), or None if no error is left."""
        click = next_click(
            prediction, self.truth, self.object_mask, clicked=self.clicked, ignore_index=self.ignore_index
        )
        if click is not None:
            self.clicked[click.y, click.x] = True
            self.clicks.append(click)
        return click

    def score(self, prediction: torch.Tensor | np.ndarray) -> float:
        """IoU of the object in ``prediction`` (void pixels ignored), or the mIoU of the label map."""
        p = _check_labels(prediction, "prediction", self.truth.shape)
        care = self.truth != self.ignore_index
        if self.object_mask is not None:
            care &= ~((self.truth == self.cls) & ~self.object_mask)
            return _iou(p == self.cls, self.object_mask, care)
        k = int(max(p[care].max(), self.truth[care].max())) + 1  # care has a pixel: checked in __init__
        return miou(p, self.truth, k, self.ignore_index)

    def undo(self) -> Click | None:
        """Forget the last click (a widget's undo), so it can be made again; returns it (None if none)."""
        if not self.clicks:
            return None
        click = self.clicks.pop()
        self.clicked[click.y, click.x] = any((c.y, c.x) == (click.y, click.x) for c in self.clicks)
        return click

    def reset(self) -> None:
        """Forget the clicks (a new round on the same truth)."""
        self.clicked[:] = False
        self.clicks.clear()


def _iou(pred: np.ndarray, truth: np.ndarray, care: np.ndarray) -> float:
    """IoU of two (H, W) bool masks over the ``care`` pixels; 1 when both are empty there."""
    labels = np.where(care, truth.astype(np.int64), VOID)
    iou = float(iou_per_class(pred.astype(np.int64), labels, 2, VOID)[1])
    return 1.0 if math.isnan(iou) else iou


def check_threshold(threshold: object) -> float:
    """``threshold`` as a float in (0, 1]; a percentage such as 90 is refused with the fix.

    Args:
        threshold: the IoU a NoC counts clicks to (0.9 = 90 %).

    Returns:
        The threshold as a float.
    """
    if isinstance(threshold, (bool, np.bool_)) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"the IoU threshold must be a number in (0, 1], e.g. 0.9, got {threshold!r}")
    t = float(threshold)
    if not (0 < t <= 1):  # also refuses NaN
        fix = f"; for {t:g} % pass {t / 100:g}" if 1 < t <= 100 else ""
        raise ValueError(f"the IoU threshold must lie in (0, 1] (0.9 = 90 % IoU), got {threshold!r}{fix}")
    return t


def clicks_to_reach(ious: Sequence[float], threshold: float, max_clicks: int = MAX_CLICKS) -> tuple[int, bool]:
    """(NoC, failed) of one object: the fewest clicks k <= ``max_clicks`` with ``ious[k] >= threshold``.

    ``ious[k]`` is the IoU after k clicks (``ious[0]``: the plain prediction, which may already be
    good enough: NoC 0, unlike the papers' networks, which need a first click to know the object).
    An object that never reaches the threshold counts ``max_clicks`` and is a failure.
    """
    t = check_threshold(threshold)
    n = check_index(max_clicks, "max_clicks")
    if n < 1:
        raise ValueError(f"max_clicks must be >= 1 (the papers use 20), got {n}")
    for k, value in enumerate(list(ious)[: n + 1]):
        if value >= t:
            return k, False
    return n, True
