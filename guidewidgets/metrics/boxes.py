"""Box IoU, the package's only one: pairwise, (pred, truth) order, 0 for empty boxes.

Boxes are ``[x0, y0, x1, y1]`` pixel positions with exclusive ends (``mask[y0:y1, x0:x1]``), as
ShapeScenes and torchvision detectors give them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["box_iou", "check_boxes"]

Boxes = torch.Tensor | np.ndarray | Sequence


def check_boxes(b: Boxes, what: str = "boxes") -> torch.Tensor:
    """Boxes as a float tensor of shape (..., 4), refused when malformed.

    A float tensor keeps its dtype, device and graph (a detector's boxes stay differentiable);
    anything else becomes float64 on the CPU.

    Args:
        b: box or boxes ``[x0, y0, x1, y1]``.
        what: the argument's name for error messages.

    Returns:
        The boxes as a tensor.
    """
    if isinstance(b, torch.Tensor) and not b.is_complex():
        t = b if b.is_floating_point() else b.double()
    else:
        try:
            a = np.asarray(b)
        except ValueError:  # a ragged nested list
            a = np.asarray([], dtype=object)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"{what} must be boxes [x0, y0, x1, y1] of numbers, got {b!r}")
        t = torch.as_tensor(a, dtype=torch.float64)
    if t.shape[-1:] != (4,):
        raise ValueError(f"{what} must be boxes [x0, y0, x1, y1] with shape (..., 4), got {tuple(t.shape)}")
    v = t.detach()
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"{what} holds NaN or inf coordinates; a box is four finite pixel positions [x0, y0, x1, y1]")
    # Why refuse: an inverted box has no area, so its IoU would be a silent 0, not an answer.
    bad = (v[..., 2] < v[..., 0]) | (v[..., 3] < v[..., 1])
    if bool(bad.any()):
        first = v.reshape(-1, 4)[bad.reshape(-1)][0].tolist()
        raise ValueError(
            f"{what} holds an inverted box {[round(x, 3) for x in first]}: a box is [x0, y0, x1, y1] with "
            "x1 >= x0 and y1 >= y0 (exclusive ends); check the coordinate order (not [y0, x0, ...] or [x, y, w, h])"
        )
    return t


def _pairs(b: Boxes, what: str) -> torch.Tensor:
    t = check_boxes(b, what)
    if t.dim() == 1:
        return t[None]
    if t.dim() != 2:
        raise ValueError(f"{what} must be one box (4,) or N boxes (N, 4), got shape {tuple(t.shape)}")
    return t


def box_iou(pred: Boxes, truth: Boxes) -> torch.Tensor:
    """Intersection over union of every predicted box with every true box.

    Args:
        pred: (N, 4) boxes, or one box (4,) read as N = 1.
        truth: (M, 4) boxes, or one box (4,) read as M = 1.

    Returns:
        (N, M) IoU in [0, 1] (symmetric: ``box_iou(b, a) == box_iou(a, b).T``); 0 where either
        box is empty (zero width or height) or the boxes are disjoint (touching edges included).
        On ``pred``'s device, in the wider of the two float dtypes.
    """
    a, b = _pairs(pred, "pred"), _pairs(truth, "truth")
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype), b.to(device=a.device, dtype=dtype)
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    union = area_a[:, None] + area_b[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))
