"""Segmentation scores from label maps: one confusion matrix, per-class IoU, mIoU, pixel accuracy.

Conventions (the only ones in the package):

- Argument order is ``(pred, truth)``, as in :mod:`guidewidgets.metrics.boxes`.
- ``confusion(...)[i, j]`` counts pixels whose **truth is i** (rows) and whose **prediction is
  j** (columns).
- Pixels whose truth is ``ignore_index`` (255, PASCAL VOC's border label) or negative are left out;
  the prediction there is not looked at.
- The IoU of a class in neither the truth nor the prediction (union 0) is NaN: it is absent, not
  wrong. mIoU is the mean over the classes that are present (PASCAL VOC); NaN when none is.
- Every score is a fraction in [0, 1] (multiply by 100 for percent).
"""

from __future__ import annotations

import numpy as np
import torch

from ..checks import check_int

__all__ = [
    "confusion",
    "iou_from_confusion",
    "miou_from_confusion",
    "accuracy_from_confusion",
    "iou_per_class",
    "miou",
]

LabelMap = torch.Tensor | np.ndarray


def _labels(a: object, what: str) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{what} must hold integer class indices, got dtype {t.dtype}; use logits.argmax(1)")
    return t


def confusion(pred: LabelMap, truth: LabelMap, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Confusion matrix of two label maps of the same shape (any shape: pixels or images).

    Args:
        pred: predicted class indices.
        truth: true class indices; ``ignore_index`` or negative values mark unlabelled pixels.
        num_classes: K, the number of classes.
        ignore_index: truth value of pixels to leave out.

    Returns:
        (K, K) int64 CPU tensor, rows = truth, columns = prediction; it sums to the number of
        labelled pixels.
    """
    k = check_int(num_classes, "num_classes", 1)
    p, t = _labels(pred, "pred"), _labels(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred and truth differ in shape: {tuple(p.shape)} vs {tuple(t.shape)}; resize one first")
    keep = (t != ignore_index) & (t >= 0)
    t, p = t[keep].long(), p.to(t.device)[keep].long()
    for v, what in ((t, "truth"), (p, "pred")):
        if v.numel() and (int(v.min()) < 0 or int(v.max()) >= k):
            bad = int(v.max()) if int(v.max()) >= k else int(v.min())
            raise ValueError(
                f"{what} holds class {bad}, outside 0..{k - 1} for num_classes={k}; "
                f"mark unlabelled truth pixels with ignore_index={ignore_index}"
            )
    return torch.bincount(t * k + p, minlength=k * k).view(k, k).cpu()


def _square(conf: torch.Tensor) -> torch.Tensor:
    if not isinstance(conf, torch.Tensor) or conf.dim() != 2 or conf.shape[0] != conf.shape[1]:
        shape = tuple(conf.shape) if isinstance(conf, torch.Tensor) else type(conf).__name__
        raise ValueError(f"conf must be a (K, K) confusion matrix from metrics.confusion, got {shape}")
    return conf.double()


def iou_from_confusion(conf: torch.Tensor) -> torch.Tensor:
    """Per-class IoU ``TP / (TP + FP + FN)`` of a confusion matrix.

    Args:
        conf: (K, K) matrix from :func:`confusion` (sums of several are fine).

    Returns:
        (K,) float64 tensor; NaN for a class in neither truth nor prediction.
    """
    c = _square(conf)
    inter = c.diag()
    union = c.sum(0) + c.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))


def miou_from_confusion(conf: torch.Tensor) -> float:
    """Mean IoU over the classes present in truth or prediction (a fraction; NaN when none is).

    Args:
        conf: (K, K) matrix from :func:`confusion`.

    Returns:
        The mean of :func:`iou_from_confusion` over its non-NaN entries.
    """
    iou = iou_from_confusion(conf)
    present = ~iou.isnan()
    return float(iou[present].mean()) if bool(present.any()) else float("nan")


def accuracy_from_confusion(conf: torch.Tensor) -> float:
    """Share of labelled pixels predicted right (a fraction; 0 when no pixel is labelled).

    Args:
        conf: (K, K) matrix from :func:`confusion`.

    Returns:
        trace / sum.
    """
    c = _square(conf)
    return float(c.diag().sum() / c.sum().clamp(min=1))


def iou_per_class(pred: LabelMap, truth: LabelMap, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Per-class IoU of two label maps (see :func:`confusion` for the arguments).

    Returns:
        (K,) float64 tensor, NaN where the class is in neither map.
    """
    return iou_from_confusion(confusion(pred, truth, num_classes, ignore_index))


def miou(pred: LabelMap, truth: LabelMap, num_classes: int, ignore_index: int = 255) -> float:
    """Mean IoU of two label maps over the classes present (see :func:`confusion` for the arguments).

    Returns:
        A fraction in [0, 1]; NaN when no pixel is labelled.
    """
    return miou_from_confusion(confusion(pred, truth, num_classes, ignore_index))
