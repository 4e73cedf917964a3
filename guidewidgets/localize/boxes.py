"""Weakly supervised localization from a map (the lecture's recipe): threshold at a fraction of
the map's maximum (default 20 %), keep the largest connected component, take its tight box."""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from ..checks import check_int, check_number
from ..metrics.boxes import box_iou, check_boxes

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
    "as_mask",
    "EmptyMapError",
]

# 8-connectivity: a diagonal step keeps a thin stroke (a star's point) in one component.
_EIGHT = np.ones((3, 3), dtype=bool)


class EmptyMapError(ValueError):
    """A map with nothing to localise (no positive value, the same value everywhere, or GrabCut
    seeds on one side only). A ValueError, so callers that score many maps can catch just this."""


def check_threshold(threshold: float, name: str = "threshold") -> float:
    """``threshold`` as a float in (0, 1), else a ValueError that says so."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise TypeError(f"{name} must be a number in (0, 1), a fraction of the map's maximum; got {threshold!r}")
    t = float(threshold)
    if not 0.0 < t < 1.0:
        raise ValueError(
            f"{name} must lie strictly between 0 and 1 (a fraction of the map's maximum, e.g. 0.2); got {t}"
        )
    return t


def _numpy(m: object, what: str) -> np.ndarray:
    a = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold real numbers, got dtype {a.dtype}; pass a float tensor or array")
    return a


def as_map(m: torch.Tensor | np.ndarray, what: str = "map") -> np.ndarray:
    """A finite, non-empty 2-D float64 numpy array from a (H, W) tensor/array (or a (1, H, W) one)."""
    try:
        a = _numpy(m, what)
    except ValueError:  # a ragged nested list
        raise TypeError(f"{what} must be a 2-D (H, W) tensor or array, got {type(m).__name__}") from None
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{what} must be 2-D (H, W), got shape {a.shape}; pass one map of a batch, maps[i]")
    if a.size == 0:
        raise ValueError(f"{what} is empty: shape {a.shape}; a map needs at least one pixel")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{what} holds NaN or inf values; replace them, e.g. torch.nan_to_num(map)")
    return a


def as_mask(m: torch.Tensor | np.ndarray, what: str = "mask", ndim: int | None = 2) -> np.ndarray:
    """A bool numpy array (``ndim`` dims; None: any) from a bool (or 0/1) tensor/array; other values
    (0.3, NaN) are refused, since reading them as True would silently turn a map into a mask."""
    a = _numpy(m, what)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{what} must be 2-D (H, W), got shape {a.shape}")
    if a.dtype != bool and not np.isin(a, (0, 1)).all():
        odd = a[~np.isin(a, (0, 1))].flat[0].item()
        raise ValueError(
            f"{what} must be boolean (or hold only 0 and 1), got values such as {odd!r}; "
            "threshold a map first, e.g. map >= 0.5 * map.max()"
        )
    return a.astype(bool)


def _check_empty(a: np.ndarray, what: str = "map") -> float:
    top, low = float(a.max()), float(a.min())
    if top == low:
        raise EmptyMapError(
            f"{what} is empty of evidence: it is constant ({top:g} at every pixel), so it has no peak to "
            "localise; explain another class or image, or use another method"
        )
    if top <= 0:
        raise EmptyMapError(
            f"{what} is empty (its maximum is {top:g}): it has no positive peak to threshold; "
            "explain another class or image, or use a method that gives positive evidence"
        )
    return top


def largest_component(binary: torch.Tensor | np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2-D boolean array (all False if it has none)."""
    b = as_mask(binary, "binary")
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
    Raises :class:`EmptyMapError` (a ValueError) for a map with no positive maximum or a constant
    map, and ValueError for a threshold outside (0, 1).
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
    for an empty or constant map instead of raising, so one blank map does not stop a whole evaluation."""
    if on_empty not in ("raise", "zero"):
        raise ValueError(f"on_empty must be 'raise' or 'zero', got {on_empty!r}")
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        fix = {2: "; add a batch dim with maps[None]", 4: "; drop the channel dim with maps[:, 0]"}
        hint = fix.get(maps.dim(), "") if isinstance(maps, torch.Tensor) else ""
        raise ValueError(f"maps must be a (B, H, W) tensor, got {shape}{hint}")
    check_threshold(threshold)
    out = torch.zeros(len(maps), 4, dtype=torch.long)
    for i, m in enumerate(maps):
        try:
            out[i] = map_to_box(m, threshold, largest)[0]
        except EmptyMapError:
            if on_empty == "raise":
                raise
    return out


def _as_boxes(b: torch.Tensor | Sequence | np.ndarray, what: str) -> torch.Tensor:
    return check_boxes(b, what).detach().cpu().to(torch.float64)


def box_mask(box: torch.Tensor | Sequence, size: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool mask of a box's pixels (integer coordinates; the part inside the image)."""
    t = _as_boxes(box, "box")
    if t.shape != (4,):
        raise ValueError(f"box must be one box [x0, y0, x1, y1], got shape {tuple(t.shape)}; pass boxes[i]")
    if not bool((t == t.round()).all()):
        raise ValueError(f"box {t.tolist()} has fractional pixel coordinates; round it first, box.round().long()")
    if not isinstance(size, Sequence) or len(size) != 2:
        raise TypeError(f"size must be the image's (H, W), got {size!r}")
    h, w = check_int(size[0], "size[0] (H)", 0), check_int(size[1], "size[1] (W)", 0)
    x0, y0, x1, y1 = (int(v) for v in t.tolist())
    m = torch.zeros((h, w), dtype=torch.bool)
    m[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return m


def box_and_iou(
    m: torch.Tensor | np.ndarray, threshold: float = 0.2, true_box: torch.Tensor | Sequence | None = None
) -> tuple[torch.Tensor | None, float | None]:
    """For a widget's box overlay: the map's box (None when the map is empty or constant) and its
    IoU with ``true_box`` (None when no truth is known). Never raises for an empty map."""
    check_threshold(threshold)
    if true_box is not None:
        _as_boxes(true_box, "true_box")  # a bad truth is refused whether or not the map is empty
    try:
        box = map_to_box(m, threshold)[0]
    except EmptyMapError:
        return None, (0.0 if true_box is not None else None)
    return box, (float(box_iou(box, true_box)) if true_box is not None else None)


def corloc(
    pred: torch.Tensor, truth: Sequence[torch.Tensor] | torch.Tensor, iou: float = 0.5
) -> tuple[float, torch.Tensor]:
    """CorLoc: the fraction of images whose predicted box has IoU >= ``iou`` with a true box.

    ``pred`` is (B, 4) with B >= 1; ``truth`` is (B, 4) or a list of (N_i, 4) (best match counts).
    Returns (corloc, best IoU per image).
    """
    thr = check_number(iou, "iou", 0.0, 1.0, low_open=True)
    pred = _as_boxes(pred, "pred")
    if pred.dim() != 2:
        raise ValueError(f"pred must be (B, 4) boxes, got {tuple(pred.shape)}")
    if len(pred) == 0:
        raise ValueError("pred holds no boxes: CorLoc is a fraction of images, so it needs at least one image")
    if not isinstance(truth, (torch.Tensor, np.ndarray, Sequence)) or isinstance(truth, str):
        raise TypeError(f"truth must be (B, 4) boxes or a list of (N_i, 4) boxes, got {type(truth).__name__}")
    if len(truth) != len(pred):
        raise ValueError(f"{len(pred)} predicted boxes but {len(truth)} true box sets; give one per image")
    best = torch.zeros(len(pred), dtype=torch.float64)
    for i, t in enumerate(truth):
        t = _as_boxes(t, "truth").reshape(-1, 4)
        if len(t) == 0:
            raise ValueError(f"image {i} has no true box; CorLoc needs at least one box per image")
        best[i] = box_iou(pred[i][None], t).max()
    return float((best >= thr).double().mean()), best


def mask_iou(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> float:
    """IoU of two boolean (or 0/1) masks of the same size (1.0 when both are empty)."""
    p, t = _numpy(pred, "pred"), _numpy(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"masks differ in size: {p.shape} vs {t.shape}; resize one to the other first")
    p, t = as_mask(p, "pred", None), as_mask(t, "truth", None)
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)
