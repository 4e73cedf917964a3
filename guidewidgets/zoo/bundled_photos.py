"""Real photos that ship inside scikit-image's wheel (no download): cat, coffee, astronaut, rocket."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PHOTOS", "photos", "photo"]

#: Photo names -> scikit-image loader names (``chelsea`` is the cat's own name).
PHOTOS: dict[str, str] = {"cat": "chelsea", "coffee": "coffee", "astronaut": "astronaut", "rocket": "rocket"}
_ALIASES = {"chelsea": "cat"}


def _load(name: str) -> np.ndarray:
    from skimage import data

    key = _ALIASES.get(name, name)
    if key not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; choose one of {list(PHOTOS)}")
    img = getattr(data, PHOTOS[key])()
    return np.ascontiguousarray(img[..., :3])


def photo(name: str, *, tensor: bool = False, size: int | None = None) -> np.ndarray | torch.Tensor:
    """scikit-image's bundled photo ``name`` ("cat", "coffee", "astronaut" or "rocket").

    By default an (H, W, 3) uint8 array; ``tensor=True`` gives a (3, H, W) float32 tensor in
    [0, 1], ready for a model after ``[None]``. ``size`` resizes (antialiased) so the shorter
    side is ``size`` and centre-crops a ``size`` x ``size`` square, the input ImageNet models expect.
    """
    img = _load(name)
    if size is None and not tensor:
        return img
    t = torch.from_numpy(img).permute(2, 0, 1).float().div_(255)
    if size is not None:
        if not isinstance(size, int) or size < 8:
            raise ValueError(f"size must be an int of at least 8 pixels, got {size!r}")
        h, w = t.shape[-2:]
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        t = F.interpolate(t[None], size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
        top, left = (nh - size) // 2, (nw - size) // 2
        t = t[:, top : top + size, left : left + size].clamp(0, 1).contiguous()
    if tensor:
        return t
    return (t.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()


def photos(*, tensor: bool = False, size: int | None = None) -> dict[str, np.ndarray | torch.Tensor]:
    """All bundled photos, ``{name: photo(name, tensor=tensor, size=size)}``."""
    return {name: photo(name, tensor=tensor, size=size) for name in PHOTOS}
