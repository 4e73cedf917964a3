"""Localisation scores of a map against where the object is: the pointing game and energy-based pointing."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from ..checks import check_int, check_number

__all__ = ["pointing_game", "energy_pointing", "default_tolerance", "check_maps"]

#: Zhang et al. 2016 ("Top-down neural attention by excitation backprop", ECCV), the pointing
#: game's paper, count a hit within 15 px of the object at 224 px inputs; we scale that.
ZHANG_TOLERANCE_PX, ZHANG_IMAGE_PX = 15, 224


def default_tolerance(size: tuple[int, int]) -> float:
    """The pointing game's tolerance in pixels for an image of ``size``: 15 px at 224 px, scaled."""
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
        raise TypeError(f"size must be the image's (H, W), got {size!r}")
    h, w = check_int(size[0], "size[0] (H)", 1), check_int(size[1], "size[1] (W)", 1)
    return ZHANG_TOLERANCE_PX * min(h, w) / ZHANG_IMAGE_PX


def check_maps(maps: torch.Tensor, regions: torch.Tensor, what: str = "masks") -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (B, H, W) float and regions (B, H, W) bool, on the CPU, or a ValueError naming the fix."""
    if not isinstance(maps, torch.Tensor) or not isinstance(regions, torch.Tensor):
        raise TypeError(f"maps and {what} must be torch tensors (B, H, W)")
    if maps.dim() == 2:
        maps = maps[None]
    if regions.dim() == 2:
        regions = regions[None]
    if maps.dim() != 3:
        raise ValueError(f"maps must be (B, H, W), got {tuple(maps.shape)}")
    if maps.shape != regions.shape:
        raise ValueError(
            f"maps {tuple(maps.shape)} and {what} {tuple(regions.shape)} differ in size; "
            "upsample the maps to the image size (F.interpolate(maps[:, None], size, mode='bilinear'))"
        )
    if maps.numel() == 0:
        raise ValueError(f"maps are empty, shape {tuple(maps.shape)}: give at least one map of at least one pixel")
    if maps.is_complex() or regions.is_complex():
        raise TypeError(f"maps and {what} must be real tensors, got {maps.dtype} and {regions.dtype}")
    maps = maps.detach().float().cpu()
    if not torch.isfinite(maps).all():
        raise ValueError("maps hold NaN or inf values; replace them, e.g. torch.nan_to_num(maps)")
    regions = regions.detach().cpu()
    # Why refuse: a map passed as a mask (0.3, NaN) would silently count as object everywhere it is not 0.
    if regions.dtype != torch.bool and not bool(((regions == 0) | (regions == 1)).all()):
        raise ValueError(f"{what} must be bool (or hold only 0 and 1); threshold a map first, e.g. mask > 0.5")
    return maps, regions.bool()


def pointing_game(
    maps: torch.Tensor, masks: torch.Tensor, tolerance: float | None = None, on_empty: str = "raise"
) -> torch.Tensor:
    """Per-image hits (B,) bool: the map's maximum lies within ``tolerance`` px of the object mask.

    ``tolerance`` defaults to Zhang et al. 2016's 15 px at 224 px, scaled to the image (6.4 px at
    96 px). When several pixels tie for the maximum, every one of them must be within tolerance,
    so a flat map scores no hit. An empty map (constant) raises, or with ``on_empty="miss"`` is a miss.
    """
    maps, masks = check_maps(maps, masks)
    if on_empty not in ("raise", "miss"):
        raise ValueError(f"on_empty must be 'raise' or 'miss', got {on_empty!r}")
    if tolerance is None:
        tol = default_tolerance((int(maps.shape[1]), int(maps.shape[2])))
    else:
        # Why refuse NaN: every distance <= NaN is false, so every image would silently be a miss.
        tol = check_number(tolerance, "tolerance (pixels)", 0.0)
    hits = torch.zeros(len(maps), dtype=torch.bool)
    for i, (m, k) in enumerate(zip(maps, masks)):
        if not k.any():
            raise ValueError(f"mask {i} is empty: the pointing game needs the object's pixels")
        if float(m.max()) == float(m.min()):
            if on_empty == "raise":
                raise ValueError(f"map {i} is empty (constant): it points nowhere; use on_empty='miss' to score a miss")
            continue
        # Distance of every pixel to the nearest object pixel.
        dist = ndimage.distance_transform_edt(~k.numpy())
        peaks = (m == m.max()).numpy()
        hits[i] = bool(np.all(dist[peaks] <= tol))
    return hits


def energy_pointing(maps: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Per-image share (B,) of the map's positive energy inside ``regions`` (Wang et al. 2020,
    Score-CAM: the energy inside the object's bounding box over the total). 0 for an empty map."""
    maps, regions = check_maps(maps, regions, "regions")
    pos = maps.clamp(min=0)
    total = pos.sum(dim=(1, 2))
    inside = (pos * regions).sum(dim=(1, 2))
    return torch.where(total > 0, inside / total.clamp(min=1e-30), torch.zeros_like(total))
