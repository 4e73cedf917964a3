"""Perturbation methods: occlusion and RISE. Forward passes only, batched, under ``no_grad``."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..hooks import model_output
from .batching import Progress, auto_batch_size, autocast, chunks
from .occlusion_incremental import occlusion_drops
from .registry import Call, method

__all__ = ["occlusion", "rise"]


def _pair(v: int | Sequence[int], name: str) -> tuple[int, int]:
    """(h, w) from an int or a pair of ints (numpy ints too); floats and bools are refused."""
    if isinstance(v, torch.Tensor) and v.dim() == 0 and not v.is_floating_point():
        v = int(v)
    items: list[Any] = [v, v] if not isinstance(v, (Sequence, torch.Tensor)) or isinstance(v, str) else list(v)  # type: ignore[arg-type]
    if type(v).__module__ == "numpy" and hasattr(v, "tolist"):
        items = [v, v] if getattr(v, "ndim", 0) == 0 else list(v)  # type: ignore[arg-type]
    for p in items:
        if isinstance(p, bool) or not isinstance(p, numbers.Integral):
            kind = type(p).__name__
            fix = f" (use int({p!r}))" if isinstance(p, numbers.Real) and not isinstance(p, bool) else ""
            raise TypeError(
                f"{name} must be a positive int or a (height, width) pair of ints, got {v!r}: a {kind}{fix}"
            )
    if len(items) != 2 or not all(int(p) >= 1 for p in items):
        raise ValueError(f"{name} must be a positive int or a (height, width) pair of them, got {v!r}")
    return int(items[0]), int(items[1])


def _fill(fill: float | Sequence[float], x: torch.Tensor) -> torch.Tensor:
    f = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    c = x.shape[1]
    if f.numel() == c:
        return f.view(c, 1, 1)
    if f.numel() != 1:
        raise ValueError(f"fill must be one value or one per channel ({c}), got {fill!r}")
    return f.view(1, 1, 1)


def _check_mode(mode: str, tau: float, refine: float) -> None:
    if mode not in ("auto", "plain", "incremental", "approximate"):
        raise ValueError(f"mode must be 'auto', 'plain', 'incremental' or 'approximate', got {mode!r}")
    for name, v in (("tau", tau), ("refine", refine)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < v <= 1:
            raise ValueError(f"{name} must be a number in (0, 1] (1 switches the approximation off), got {v!r}")


def _positions(
    x: torch.Tensor, window: int | Sequence[int] | None, stride: int | Sequence[int] | None
) -> tuple[list[int], list[int], tuple[int, int], tuple[int, int]]:
    """Occlusion's patch rows, patch columns, window and stride (defaults filled in, checked)."""
    h, w = x.shape[-2:]
    if window is None:
        window = max(1, round(min(h, w) / 7))
    wh, ww = _pair(window, "window")
    if stride is None:
        stride = (max(1, wh // 2), max(1, ww // 2))
    sh, sw = _pair(stride, "stride")
    if wh > h or ww > w:
        raise ValueError(f"window {(wh, ww)} is larger than the image {(h, w)}; use a smaller window")
    # Why ceil: the last patch is cut at the border (as Captum), so the bottom and right edges
    # are covered even when the stride does not tile the image.
    ys = [k * sh for k in range(math.ceil((h - wh) / sh) + 1)]
    xs = [k * sw for k in range(math.ceil((w - ww) / sw) + 1)]
    return ys, xs, (wh, ww), (sh, sw)


def _spread(
    drops: torch.Tensor,
    grid_shape: tuple[int, int],
    window: tuple[int, int],
    stride: tuple[int, int],
    size: Sequence[int],
) -> torch.Tensor:
    """(B, H, W) map from (positions, B) drops: each drop is spread over its window; overlapping
    windows are averaged."""
    h, w = size
    grid = drops.t().reshape(drops.shape[1], 1, *grid_shape)
    ones = torch.ones(1, 1, *window, device=drops.device, dtype=drops.dtype)
    total = F.conv_transpose2d(grid, ones, stride=stride)
    count = F.conv_transpose2d(torch.ones_like(grid[:1]), ones, stride=stride)
    # The spread windows reach past the border where the last patch was cut: crop them back.
    total, count = total[..., :h, :w], count[..., :h, :w]
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))[:, 0]


@method("occlusion", signed=True, slow=True, quick={"window": 8, "stride": 8})
def occlusion(
    c: Call,
    *,
    window: int | Sequence[int] | None = None,
    stride: int | Sequence[int] | None = None,
    fill: float | Sequence[float] = 0.5,
    batch_size: int | None = None,
    mode: str = "plain",
    tau: float = 1.0,
    refine: float = 0.25,
) -> torch.Tensor:
    """Occlusion sensitivity: slide a ``window`` patch of value ``fill`` with step ``stride``
    (defaults: a seventh of the shorter side, half of that) and record the score drop; each pixel
    gets the mean drop of the patches that cover it. Captum's ``Occlusion`` definition:
    ``ceil((H - window) / stride) + 1`` positions per axis, the last patch cut at the border when
    the stride does not tile the image, so every pixel is covered.

    ``mode``: ``"plain"`` (the default: one forward per occluded image), ``"auto"`` (incremental
    where the model can be traced, else plain, silently; the maps are the same either way),
    ``"incremental"`` (same maps to float
    tolerance, faster: each layer recomputes only what the patch can change; see
    :mod:`guidewidgets.explain.occlusion_incremental` and ``occlusion_plan`` for where a model
    falls back to full computation) or ``"approximate"`` (incremental with Krypton's adaptive
    drill-down, which computes every second position and the ``refine`` fraction of the rest with
    the largest interpolated drop, and its projective-field threshold ``tau``, which caps each
    layer's recomputed window at that fraction of the map's side). ``tau`` and ``refine`` act
    only in this mode; 1.0 switches either off. ``tau`` is off by default: on the random-weight
    ResNet-18 of ``benchmarks/occlusion.py`` ``tau=0.5`` cost more correlation with the exact map
    than drill-down for less speed.

    Threads: the incremental modes trace the model with ``torch.fx``, which patches
    ``nn.Module.__call__`` for the whole process while it traces (a few milliseconds per call). A
    model called from another thread in that moment (a widget's background job, your own cell)
    would be caught by the tracer, which is why they are opt-in and plain stays the default."""
    _check_mode(mode, tau, refine)
    model, x, t = c.model, c.x, c.target
    b = x.shape[0]
    ys, xs, (wh, ww), (sh, sw) = _positions(x, window, stride)
    spots = [(y, x0) for y in ys for x0 in xs]
    value = _fill(fill, x)
    done = Progress(c.progress, len(spots))
    per = max(1, auto_batch_size(x, batch_size) // b)

    def plain_scores(chunk: list[tuple[int, int]]) -> torch.Tensor:
        k = len(chunk)
        batch = x.unsqueeze(0).repeat(k, 1, 1, 1, 1)
        for j, (y, x0) in enumerate(chunk):
            batch[j, :, :, y : y + wh, x0 : x0 + ww] = value
        return t.scores(model_output(model(batch.view(k * b, *x.shape[1:]))), k).view(k, b)

    with torch.no_grad():
        out = model_output(model(x))
        t = t.fix(out)
        base = t.scores(out)
        if mode == "plain":
            drops = torch.empty(len(spots), b, device=x.device, dtype=x.dtype)
            for start in range(0, len(spots), per):
                chunk = spots[start : start + per]
                drops[start : start + len(chunk)] = base.unsqueeze(0) - plain_scores(chunk)
                done.advance(len(chunk))
        else:
            approx = mode == "approximate"
            # Windows are small, so more positions fit in one batch than whole images do.
            per_inc = per if batch_size is not None else max(1, 32 // b)
            drops, info = occlusion_drops(
                model, x, t, base, (ys, xs), (wh, ww), value, per_inc, done,
                tau=tau if approx else 1.0, refine=refine if approx else 1.0, plain=plain_scores,
            )  # fmt: skip
            if not info.traced and mode != "auto":
                warnings.warn(f"occlusion mode={mode!r} ran plain occlusion: {info.reason}", UserWarning, stacklevel=3)
        return _spread(drops, (len(ys), len(xs)), (wh, ww), (sh, sw), x.shape[-2:])


def _rise_masks(
    gen: torch.Generator, n: int, cells: int, p: float, h: int, w: int, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grids = (torch.rand((n, 1, cells, cells), generator=gen, device=x.device) < p).to(x.dtype)
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)
    dy = torch.randint(0, ch, (n,), generator=gen, device=x.device)
    dx = torch.randint(0, cw, (n,), generator=gen, device=x.device)
    return grids, dy, dx


def _crop_upsampled(grids: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, h: int, w: int) -> torch.Tensor:
    cells = grids.shape[-1]
    ch, cw = math.ceil(h / cells), math.ceil(w / cells)
    up = F.interpolate(grids, size=((cells + 1) * ch, (cells + 1) * cw), mode="bilinear", align_corners=False)[:, 0]
    rows = dy[:, None] + torch.arange(h, device=up.device)
    cols = dx[:, None] + torch.arange(w, device=up.device)
    up = up.gather(1, rows[:, :, None].expand(-1, -1, up.shape[2]))
    return up.gather(2, cols[:, None, :].expand(-1, h, -1))


@method("rise", slow=True, quick={"masks": 8, "cells": 2})
def rise(
    c: Call,
    *,
    masks: int = 1000,
    cells: int = 7,
    p: float = 0.5,
    fill: float | Sequence[float] = 0.0,
    seed: int = 0,
    probabilities: bool = True,
    batch_size: int | None = None,
    amp: bool = False,
) -> torch.Tensor:
    """RISE: sum_i score(x * M_i + fill * (1 - M_i)) M_i / (masks * p), with M_i a random
    ``cells`` x ``cells`` binary grid (keep probability ``p``) upsampled bilinearly and shifted.

    The score is the class probability (softmax) for classifiers with class targets, as in the
    paper, else the target score. The masks depend only on ``seed`` and the image size, so a
    sample gets the same map alone or in a batch. ``batch_size`` (images per forward) defaults
    to a CPU pixel budget, or on CUDA to what the free device memory holds.

    ``amp=True`` runs the masked forwards in mixed precision (float16 on CUDA, bfloat16 on CPU)
    and accumulates in the input's dtype; ``benchmarks/dataset.py`` measures its error against
    full precision (benchmarks/README.md: below 1 % of the map's maximum on the embedded
    classifier with bfloat16 on CPU, which was not faster there).
    """
    model, x = c.model, c.x
    b, _, h, w = x.shape
    if not isinstance(masks, int) or isinstance(masks, bool) or masks < 1:
        raise ValueError(f"masks must be a positive int, got {masks!r}")
    if not isinstance(cells, int) or not 1 <= cells <= min(h, w):
        raise ValueError(f"cells must be an int from 1 to the image size {min(h, w)}, got {cells!r}")
    if not 0 < p <= 1:
        raise ValueError(f"p (the probability of keeping a cell) must be in (0, 1], got {p!r}")
    value = _fill(fill, x)
    mixed = autocast(x, amp)
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    grids, dy, dx = _rise_masks(gen, masks, cells, p, h, w, x)
    done = Progress(c.progress, masks)
    maps = torch.zeros(b, h, w, device=x.device, dtype=x.dtype)
    t = c.fixed_target()
    with torch.no_grad():
        for start, stop in chunks(masks, b, auto_batch_size(x, batch_size)):
            k = stop - start
            m = _crop_upsampled(grids[start:stop], dy[start:stop], dx[start:stop], h, w)
            # fill + (x - fill) * mask in one pass over the k * B images
            batch = torch.addcmul(value, x - value, m[:, None, None]).view(k * b, *x.shape[1:])
            with mixed:
                out = model_output(model(batch)).to(x.dtype)
            if probabilities and t.fn is None and out.dim() == 2:
                out = out.softmax(1)
            scores = t.scores(out, k).view(k, b)
            maps += torch.einsum("kb,khw->bhw", scores, m)
            done.advance(k)
    return maps / (masks * p)
