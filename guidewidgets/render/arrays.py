"""Arrays in, RGBA ``uint8`` out: conversion, resizing, tiling, upscaling and PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

ArrayLike = Any  # torch.Tensor | np.ndarray | nested sequences


def to_numpy(x: ArrayLike) -> np.ndarray:
    """A numpy view/copy of ``x``; torch tensors are detached and moved to the CPU here, once."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):  # no numpy twin for bfloat16
            x = x.float()
        return x.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise TypeError(f"expected a torch tensor or numpy array, got {type(x).__name__}") from err


def _squeeze_batch(a: np.ndarray, want_ndim: int, what: str) -> np.ndarray:
    while a.ndim > want_ndim and a.shape[0] == 1:
        a = a[0]
    if a.ndim > want_ndim:
        raise ValueError(
            f"{what} has shape {tuple(a.shape)}: render one item at a time "
            f"(index the batch, e.g. x[0]), or use render.grid for several"
        )
    return a


def to_rgba(image: ArrayLike) -> np.ndarray:
    """An image as ``(H, W, 4) uint8`` RGBA (opaque unless it already carries alpha).

    Accepts ``(3, H, W)`` or ``(1, 3, H, W)`` tensors/arrays (channels first, the model
    convention), ``(H, W, 3)``/``(H, W, 4)`` channels last, or ``(H, W)`` grayscale; floats are
    taken to be in [0, 1] (values outside are clipped), integers in [0, 255].
    """
    is_tensor = isinstance(image, torch.Tensor)
    a = to_numpy(image)
    if a.ndim == 4:
        a = _squeeze_batch(a, 3, "image")
    if a.ndim == 3 and a.shape[0] in (1, 3) and (is_tensor or a.shape[-1] not in (1, 3, 4)):
        a = np.moveaxis(a, 0, -1)  # channels first (torch convention) -> last
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.stack([a, a, a], axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"image has shape {tuple(a.shape)}; expected (3, H, W), (H, W, 3), (H, W, 4) or (H, W)")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[-1] == 3:
        out = np.empty(a.shape[:2] + (4,), dtype=np.uint8)
        out[..., :3] = a
        out[..., 3] = 255
        return out
    return np.ascontiguousarray(a)


def resize(a: np.ndarray, size: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """Resize an ``(H, W)`` float map or ``(H, W, C) uint8`` image to ``size = (H, W)``."""
    from PIL import Image

    h, w = size
    if a.shape[:2] == (h, w):
        return a
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    if a.ndim == 2:
        return np.asarray(Image.fromarray(a.astype(np.float32)).resize((w, h), resample))
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c])).resize((w, h), resample))
        for c in range(a.shape[-1])
    ]
    return np.stack(chans, axis=-1)


def grid(
    tiles: Sequence[ArrayLike],
    cols: int | None = None,
    pad: int = 2,
    fill: tuple[int, int, int, int] = (255, 255, 255, 255),
) -> np.ndarray:
    """Tiles (each anything :func:`to_rgba` takes) side by side in rows of ``cols``, ``pad`` px apart.

    Tiles of different sizes are placed top-left in equal cells of the largest size.
    """
    rgba = [to_rgba(t) for t in tiles]
    if not rgba:
        raise ValueError("grid needs at least one tile")
    n = len(rgba)
    cols = n if cols is None else max(1, min(int(cols), n))
    rows = -(-n // cols)
    th = max(t.shape[0] for t in rgba)
    tw = max(t.shape[1] for t in rgba)
    pad = max(0, int(pad))
    out = np.empty((rows * th + (rows - 1) * pad, cols * tw + (cols - 1) * pad, 4), dtype=np.uint8)
    out[...] = np.asarray(fill, dtype=np.uint8)
    for i, t in enumerate(rgba):
        r, c = divmod(i, cols)
        y, x = r * (th + pad), c * (tw + pad)
        out[y : y + t.shape[0], x : x + t.shape[1]] = t
    return out


def upscale(rgba: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (each pixel becomes a scale x scale block)."""
    s = int(scale)
    if s < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if s == 1:
        return rgba
    return np.repeat(np.repeat(rgba, s, axis=0), s, axis=1)


def to_png(rgba: ArrayLike) -> bytes:
    """PNG bytes of an image (lossless; RGBA kept)."""
    from PIL import Image

    a = to_rgba(rgba)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()
