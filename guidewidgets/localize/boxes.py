"""Weakly supervised localization from a map (the lecture's recipe): threshold at a fraction of
the map's maximum (default 20 %), keep the largest connected component, take its tight box."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

__all__ = [
    "largest_component",
    "map_to_box",
    "boxes_from_maps",
    "box_and_iou",
    "box_iou",
    "box_mask",
    "corloc",
    "mask_iou",
    "check_threshold",
    "as_map",
]

# 8-connectivity: a diagonal step keeps a thin stroke (a star's point) in one component.
_EIGHT = np.ones((3, 3), dtype=bool)


def check_threshold(threshold: float, name: str = "threshold") -> float:
    """``threshold`` as a float in (0, 1), else a ValueError that says so."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number in (0, 1), a fraction of the map's maximum; got {threshold!r}")
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(
            f"{name} must lie strictly between 0 and 1 (a fraction of the map's maximum, e.g. 0.2); got {t}"
        )
    return t


def as_map(m: torch.Tensor | np.ndarray, what: str = "map") -> np.ndarray:
    """A finite 2-D float64 numpy array from a (H, W) tensor/array (or a (1, H, W) one)."""
    a = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{what} must be 2-D (H, W), got shape {a.shape}; pass one map of a batch, maps[i]")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} holds NaN or inf values; replace them, e.g. torch.nan_to_num(map)")
    return a


def _check_empty(a: np.ndarray, what: str = "map") -> float:
    top = float(a.max())
    if top <= 0 or top == float(a.min()):
        raise ValueError(
            f"{what} is empty (its maximum is {top:g} and it has no positive peak to threshold); "
            "explain another class or image, or use a method that gives positive evidence"
        )
    return top


def largest_component(binary: torch.Tensor | np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2-D boolean array (all False if it has none)."""
    b = np.asarray(binary.detach().cpu() if isinstance(binary, torch.Tensor) else binary).astype(bool)
    if b.ndim != 2:
        raise ValueError(f"binary must be 2-D (H, W), got shape {b.shape}")
    labels, count = ndimage.label(b, structure=_EIGHT)
    if count == 0:
        return np.zeros_like(b)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(sizes.argmax()) + 1)


def map_to_box(
    m: torch.Tensor | np.ndarray, threshold: float = 0.2, largest: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Box ``[x0, y0, x1, y1]`` (int64, exclusive ends) and the kept region (H, W bool) of one map.

    Pixels ``>= threshold * max(map)`` are kept; with ``largest`` only the largest 8-connected
    component of them (Zhou et al. 2016's CAM boxes: 20 % of the max, largest component).
    Raises ValueError for an empty map (no positive maximum) or a threshold outside (0, 1).
    """
    t = check_threshold(threshold)
    a = as_map(m)
    top = _check_empty(a)
    region = a >= t * top
    if largest:
        region = largest_component(region)
    ys, xs = np.nonzero(region)
    box = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.long)
    return box, torch.from_numpy(region)


def boxes_from_maps(
    maps: torch.Tensor, threshold: float = 0.2, largest: bool = True, on_empty: str = "raise"
) -> torch.Tensor:
    """Boxes (B, 4) of maps (B, H, W). ``on_empty="zero"`` gives an empty box [0, 0, 0, 0] (IoU 0)
    for an empty map instead of raising, so one blank map does not stop a whole evaluation."""
    if on_empty not in ("raise", "zero"):
        raise ValueError(f"on_empty must be 'raise' or 'zero', got {on_empty!r}")
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a (B, H, W) tensor, got {shape}; add a batch dim with maps[None]")
    out = torch.zeros(len(maps), 4, dtype=torch.long)
    for i, m in enumerate(maps):
        try:
            out[i] = map_to_box(m, threshold, largest)[0]
        except ValueError as e:
            if on_empty == "raise" or "empty" not in str(e):
                raise
    return out


def _as_boxes(b: torch.Tensor | Sequence | np.ndarray, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(b.cpu() if isinstance(b, torch.Tensor) else b), dtype=torch.float64)
    if t.shape[-1:] != (4,):
        raise ValueError(f"{what} must be boxes [x0, y0, x1, y1] with shape (..., 4), got {tuple(t.shape)}")
    return t


def box_iou(a: torch.Tensor | Sequence, b: torch.Tensor | Sequence) -> torch.Tensor:
    """Intersection over union of boxes ``[x0, y0, x1, y1]`` (exclusive ends), broadcast over
    leading dims; an empty box gives IoU 0."""
    a, b = _as_boxes(a, "a"), _as_boxes(b, "b")
    w = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    h = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = w * h

    def area(x: torch.Tensor) -> torch.Tensor:
        return (x[..., 2] - x[..., 0]).clamp(min=0) * (x[..., 3] - x[..., 1]).clamp(min=0)

    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(union))


def box_mask(box: torch.Tensor | Sequence, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool mask of a box's pixels."""
    x0, y0, x1, y1 = (int(v) for v in _as_boxes(box, "box").tolist())
    m = torch.zeros(size, dtype=torch.bool)
    m[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return m


def box_and_iou(
    m: torch.Tensor | np.ndarray, threshold: float = 0.2, true_box: torch.Tensor | Sequence | None = None
) -> tuple[torch.Tensor | None, float | None]:
    """For a widget's box overlay: the map's box (None when the map is empty) and its IoU with
    ``true_box`` (None when no truth is known). Never raises for an empty map."""
    check_threshold(threshold)
    try:
        box = map_to_box(m, threshold)[0]
    except ValueError as e:
        if "empty" not in str(e):
            raise
        return None, (0.0 if true_box is not None else None)
    return box, (float(box_iou(box, true_box)) if true_box is not None else None)


def corloc(
    pred: torch.Tensor, truth: Sequence[torch.Tensor] | torch.Tensor, iou: float = 0.5
) -> tuple[float, torch.Tensor]:
    """CorLoc: the fraction of images whose predicted box has IoU >= ``iou`` with a true box.

    ``pred`` is (B, 4); ``truth`` is (B, 4) or a list of (N_i, 4) (best match counts).
    Returns (corloc, best IoU per image).
    """
    pred = _as_boxes(pred, "pred")
    if pred.dim() != 2:
        raise ValueError(f"pred must be (B, 4) boxes, got {tuple(pred.shape)}")
    if len(truth) != len(pred):
        raise ValueError(f"{len(pred)} predicted boxes but {len(truth)} true box sets; give one per image")
    best = torch.zeros(len(pred), dtype=torch.float64)
    for i, t in enumerate(truth):
        t = _as_boxes(t, "truth").reshape(-1, 4)
        if len(t) == 0:
            raise ValueError(f"image {i} has no true box; CorLoc needs at least one box per image")
        best[i] = box_iou(pred[i][None], t).max()
    return float((best >= iou).double().mean()), best


def mask_iou(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> float:
    """IoU of two boolean masks of the same size (1.0 when both are empty)."""
    p = np.asarray(pred.cpu() if isinstance(pred, torch.Tensor) else pred).astype(bool)
    t = np.asarray(truth.cpu() if isinstance(truth, torch.Tensor) else truth).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"masks differ in size: {p.shape} vs {t.shape}; resize one to the other first")
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)
