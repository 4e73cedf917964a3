"""Turning what a user hands a widget (tensors, arrays, PIL images, datasets, uploaded files) into
``(3, H, W)`` float images in [0, 1], with messages a student understands when that fails."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Uploads above these limits are refused before decoding (a widget must stay responsive).
MAX_UPLOAD_BYTES = 25 * 2**20
MAX_UPLOAD_PIXELS = 40_000_000


class UploadError(ValueError):
    """An uploaded file that cannot be used as an image; the message says why and what to do."""


def as_image(obj: Any, what: str = "image", notes: list[str] | None = None) -> torch.Tensor:
    """One image as a ``(3, H, W)`` float32 tensor in [0, 1] (on its own device).

    Takes ``(3, H, W)``/``(1, 3, H, W)`` tensors (the model convention), ``(H, W, 3)`` or
    ``(H, W)`` numpy arrays (uint8 or float in [0, 1]), PIL images, dataset items (a dict with
    ``"image"``, or an ``(image, label)`` tuple) and file paths. Float images whose values go
    above 1.5 are taken to be in 0..255 and rescaled; ``notes`` (a list) then gets a sentence.
    """
    if isinstance(obj, dict) and "content" in obj and "image" not in obj:  # an ipywidgets.FileUpload entry
        return decode_upload(bytes(obj["content"]), str(obj.get("name", what)))[0]
    if isinstance(obj, dict):
        if "image" not in obj:
            raise ValueError(f"{what} is a dict without an 'image' key (keys: {sorted(obj)})")
        obj = obj["image"]
    elif (
        isinstance(obj, tuple)
        and len(obj) == 2
        and (np.isscalar(obj[1]) or (isinstance(obj[1], torch.Tensor) and obj[1].dim() == 0))
    ):
        obj = obj[0]  # torchvision-style (image, label)
    if isinstance(obj, (str, bytes, bytearray)) or hasattr(obj, "__fspath__"):
        data = obj if isinstance(obj, (bytes, bytearray)) else Path(obj).read_bytes()
        return decode_upload(bytes(data), str(obj)[:40] if not isinstance(obj, (bytes, bytearray)) else what)[0]
    if _is_pil(obj):
        return _from_pil(obj)[0]
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        while t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 2:
            t = t[None].expand(3, -1, -1)
        if t.dim() != 3:
            raise ValueError(f"{what} has shape {tuple(obj.shape)}; expected (3, H, W)")
        if t.shape[0] not in (1, 3) and t.shape[-1] in (1, 3, 4):
            t = t.permute(2, 0, 1)  # channels last tensor
        if t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        if t.shape[0] == 4:
            t = t[:3]
        if t.shape[0] != 3:
            raise ValueError(f"{what} has shape {tuple(obj.shape)}; expected 3 colour channels (3, H, W)")
        t = t.float() / 255.0 if t.dtype == torch.uint8 else t.float()
        return _unit_range(t, what, notes)
    a = np.asarray(obj)
    if a.dtype == object or a.ndim not in (2, 3):
        raise TypeError(f"{what}: expected a tensor, array, PIL image or file, got {type(obj).__name__}")
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, -1)
    if a.shape[-1] != 3 and a.shape[0] == 3:
        a = np.moveaxis(a, 0, -1)
    if a.shape[-1] != 3:
        raise ValueError(f"{what} has shape {a.shape}; expected (H, W, 3) or (H, W)")
    t = torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1)  # uploads are read-only buffers
    t = t.float()
    if a.dtype == np.uint8 or (np.issubdtype(a.dtype, np.integer) and a.max() > 1):
        t = t / 255.0  # 8-bit values, whatever the array's dtype
    return _unit_range(t, what, notes)


def _unit_range(t: torch.Tensor, what: str, notes: list[str] | None) -> torch.Tensor:
    """Clamp a float image to [0, 1]; one whose values reach above 1.5 is in 0..255: rescale it."""
    if t.numel():
        finite = t[torch.isfinite(t)]
        if finite.numel() and float(finite.max()) > 1.5:
            t = t / 255.0
            if notes is not None:
                notes.append(f"{what}: float values in 0..255 rescaled to 0..1")
    return torch.nan_to_num(t, nan=0.0).clamp(0, 1).contiguous()


def as_images(images: Any, limit: int = 32, notes: list[str] | None = None) -> list[tuple[str, torch.Tensor]]:
    """Named images from a batch tensor, a single image, a list, a dict of name -> image, or a dataset.

    Datasets (anything with ``__len__`` and ``__getitem__``) give their first ``limit`` items.
    """
    return [(name, im) for name, im, _ in labelled_images(images, limit, notes)]


def _label_of(item: Any) -> int | None:
    lab = (
        item.get("label") if isinstance(item, dict) else item[1] if isinstance(item, tuple) and len(item) == 2 else None
    )
    if isinstance(lab, torch.Tensor) and lab.dim() == 0:
        lab = int(lab)
    return int(lab) if isinstance(lab, (int, np.integer)) and not isinstance(lab, bool) else None


def labelled_images(
    images: Any, limit: int = 32, notes: list[str] | None = None
) -> list[tuple[str, torch.Tensor, int | None]]:
    """Like :func:`as_images`, with each item's true label where the input carries one (dataset
    items ``{"image", "label"}`` or ``(image, label)``; a dict value may be such an item too)."""
    if isinstance(images, (torch.Tensor, np.ndarray)):
        if images.ndim == 4:
            return [(f"image {i}", as_image(im, f"image {i}", notes), None) for i, im in enumerate(images[:limit])]
        return [("image 0", as_image(images, "image 0", notes), None)]
    if _is_pil(images) or isinstance(images, (str, bytes)):
        return [("image 0", as_image(images, "image 0", notes), None)]
    if isinstance(images, dict) and "image" not in images:
        if not images:
            raise ValueError("no images given: the dict is empty; pass name -> image pairs")
        return [(str(k), as_image(v, str(k), notes), _label_of(v)) for k, v in list(images.items())[:limit]]
    if hasattr(images, "__len__") and hasattr(images, "__getitem__"):
        n = min(len(images), limit)
        out = []
        for i in range(n):
            item = images[i]
            name = str(item.get("name", f"image {i}")) if isinstance(item, dict) and "content" in item else f"image {i}"
            if isinstance(item, dict) and "label" in item and hasattr(images, "classes"):
                with contextlib.suppress(Exception):
                    name = f"{i}: {images.classes[int(item['label'])]}"
            out.append((name, as_image(item, name, notes), _label_of(item)))
        if not out:
            raise ValueError("no images given: pass a (B, 3, H, W) tensor, a list of images or a dataset")
        return out
    if isinstance(images, Iterable):
        return labelled_images(list(images), limit, notes)
    return [("image 0", as_image(images, "image 0", notes), None)]


def fit(image: torch.Tensor, size: int | None) -> torch.Tensor:
    """Centre-crop to a square and resize to ``size`` x ``size`` (antialiased); None keeps it."""
    if size is None:
        return image
    _, h, w = image.shape
    if (h, w) == (size, size):
        return image
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    sq = image[:, top : top + s, left : left + s]
    return F.interpolate(sq[None], size=(size, size), mode="bilinear", antialias=s > size, align_corners=False)[
        0
    ].clamp(0, 1)


def decode_upload(data: bytes, name: str = "upload") -> tuple[torch.Tensor, str]:
    """Decode uploaded file bytes into an image; returns ``(image, note)``.

    Grayscale, palette, 16-bit and CMYK images are converted to RGB and RGBA images are put on a
    white background; ``note`` says so. Files that are not images, are too large or are
    decompression bombs raise :class:`UploadError` with the reason.
    """
    from PIL import Image, UnidentifiedImageError

    if len(data) == 0:
        raise UploadError(f"{name!r} is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(
            f"{name!r} is {len(data) / 2**20:.0f} MB; the limit is {MAX_UPLOAD_BYTES // 2**20} MB. "
            "Shrink it (any image editor) and upload again."
        )
    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > MAX_UPLOAD_PIXELS:
            raise UploadError(
                f"{name!r} is {w}x{h} pixels; the limit is {MAX_UPLOAD_PIXELS // 10**6} megapixels. "
                "Resize it and upload again."
            )
        im.load()
    except UploadError:
        raise
    except UnidentifiedImageError:
        raise UploadError(f"{name!r} is not an image PIL can read (PNG, JPEG, GIF, BMP, TIFF, WebP ...)") from None
    except Image.DecompressionBombError as err:
        raise UploadError(f"{name!r} is too large to decode safely: {err}") from None
    except Exception as err:  # truncated / corrupt files
        raise UploadError(f"{name!r} could not be decoded as an image ({type(err).__name__}: {err})") from None
    t, note = _from_pil(im)
    return t, note


def _is_pil(obj: Any) -> bool:
    return type(obj).__module__.startswith("PIL.")


def _from_pil(im: Any) -> tuple[torch.Tensor, str]:
    from PIL import Image

    note = ""
    mode = im.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, rgba).convert("RGB")
        note = f"{mode} image: transparency put on white"
    elif mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        note = f"{mode} image: rescaled to 8-bit grayscale and converted to RGB"
        return as_image(a.astype(np.float32)), note
    elif mode != "RGB":
        im = im.convert("RGB")
        note = f"{mode} image converted to RGB" if mode not in ("L", "1") else "grayscale image converted to RGB"
    return as_image(np.asarray(im, dtype=np.uint8)), note
