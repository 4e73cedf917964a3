"""GrabCut on saliency: a segmentation without pixel supervision (the visualisation lecture).

The map seeds OpenCV's GrabCut: pixels at ``>= fg * max`` are probable foreground, pixels below
``bg * max`` sure background, the rest probable background; GrabCut's colour models then move the
boundary to the image's edges.
"""

from __future__ import annotations

import numpy as np
import torch

from .boxes import EmptyMapError, _check_empty, as_map, check_int, check_threshold

__all__ = ["grabcut_from_map"]


def _check_image(image: object) -> None:
    """A finite float (3, H, W) image in [0, 1], else a TypeError/ValueError naming the fix."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a (3, H, W) float tensor in [0, 1], got {shape}; pass one image, x[i]")
    if image.numel() == 0:
        raise ValueError(f"image is empty: shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"image must be a float tensor in [0, 1], got {image.dtype}; for 8-bit use image.float() / 255")
    if not bool(torch.isfinite(image).all()):
        raise ValueError("image holds NaN or inf values; replace them, e.g. torch.nan_to_num(image)")
    lo, hi = float(image.min()), float(image.max())
    # Why refuse, not clamp: a normalised image (ImageNet mean/std) clamped to [0, 1] loses its colours.
    if lo < 0 or hi > 1:
        raise ValueError(
            f"image values must lie in [0, 1], got {lo:.3g} to {hi:.3g}; undo the normalisation "
            "(x * std + mean) or divide 8-bit values by 255"
        )


def grabcut_from_map(
    image: torch.Tensor,
    m: torch.Tensor | np.ndarray,
    fg: float = 0.5,
    bg: float = 0.2,
    iterations: int = 5,
    seed: int = 0,
) -> torch.Tensor:
    """(H, W) bool foreground mask of ``image`` (3, H, W) float in [0, 1] from GrabCut seeded by ``m``.

    ``fg`` and ``bg`` are fractions of the map's maximum (0 < bg <= fg < 1). Raises ValueError when
    image and map differ in size or the image is not finite in [0, 1], and :class:`EmptyMapError` (a
    ValueError) when the map is empty or constant or the seeds leave no foreground or background.
    """
    import cv2  # Why lazily: OpenCV is only needed here, and its import costs ~0.2 s.

    fg, bg = check_threshold(fg, "fg"), check_threshold(bg, "bg")
    if bg > fg:
        raise ValueError(f"bg ({bg}) must not exceed fg ({fg}): pixels below bg * max are background")
    iterations, seed = check_int(iterations, "iterations", 1), check_int(seed, "seed", 0, 2**31 - 1)
    _check_image(image)
    a = as_map(m)
    if a.shape != tuple(image.shape[1:]):
        raise ValueError(
            f"map is {a.shape[0]}x{a.shape[1]} but the image is {image.shape[1]}x{image.shape[2]}; "
            "upsample the map to the image size (F.interpolate(..., mode='bilinear'))"
        )
    top = _check_empty(a)
    seeds = np.full(a.shape, cv2.GC_PR_BGD, dtype=np.uint8)
    seeds[a < bg * top] = cv2.GC_BGD
    seeds[a >= fg * top] = cv2.GC_PR_FGD
    if not (seeds == cv2.GC_PR_FGD).any() or not (seeds != cv2.GC_PR_FGD).any():
        raise EmptyMapError("the seeds hold no foreground or no background pixels; change fg / bg")
    img = (image.detach().cpu().float().permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    img = np.ascontiguousarray(img[:, :, ::-1])  # OpenCV's BGR order
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)  # Why: GrabCut's k-means initialisation is random
    cv2.grabCut(img, seeds, (0, 0, 0, 0), bgd, fgd, int(iterations), cv2.GC_INIT_WITH_MASK)
    return torch.from_numpy((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD))
