"""Faithfulness: does removing what the map calls important change the model's score?

* Deletion and insertion (Petsiuk et al. 2018, RISE): remove (deletion: to black) or insert (into a
  blurred copy) pixels in the order the map ranks them, ``steps`` equal steps, and take the area
  under the curve of the target's probability (deletion: lower is better; insertion: higher).
  All steps of all images go through the model in batches of ``batch_size``; ``batch_size=1``
  is the per-step loop, kept for the benchmark.
* ROAD (Rong et al. 2022, "A consistent and efficient evaluation strategy for attribution
  methods"): remove the most (MoRF) or least (LeRF) relevant fraction of pixels and fill them by
  noisy linear imputation (each removed pixel is the weighted mean of its 8 neighbours, 1/6 for
  edge and 1/12 for corner neighbours, solved as one sparse system, plus Gaussian noise of std
  0.01), so the removal's shape does not leak the ranking. MoRF: lower is better; LeRF: higher.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from scipy.sparse import linalg as splinalg
from torch import nn

from ..checks import check_int, check_number
from ..explain.targets import Target, check_input
from ..hooks import eval_mode, model_lock, model_output
from ..localize.boxes import as_mask

__all__ = [
    "relevance_order",
    "perturbation_curves",
    "deletion",
    "insertion",
    "noisy_linear_imputation",
    "road",
    "auc",
]

# Rong et al.'s neighbour weights: edge neighbours 1/6, corner neighbours 1/12.
_NEIGHBOURS = [
    ((0, 1), 1 / 6),
    ((0, -1), 1 / 6),
    ((1, 0), 1 / 6),
    ((-1, 0), 1 / 6),
    ((1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((-1, 1), 1 / 12),
    ((-1, -1), 1 / 12),
]


def _check_maps(maps: object) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must be a (B, H, W) tensor, got {shape}")
    if maps.is_complex():
        raise TypeError(f"maps must be real, got {maps.dtype}")
    if not torch.isfinite(maps).all():
        raise ValueError("maps hold NaN or inf values; replace them, e.g. torch.nan_to_num(maps)")
    return maps


def _check(model: nn.Module, x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    x = check_input(model, x)
    maps = _check_maps(maps)
    if maps.shape[0] != x.shape[0] or maps.shape[1:] != x.shape[2:]:
        raise ValueError(
            f"maps {tuple(maps.shape)} do not match images {tuple(x.shape)}: one (H, W) map per image of its size; "
            "upsample with F.interpolate(maps[:, None], x.shape[-2:], mode='bilinear')[:, 0]"
        )
    return maps.detach().to(x.device, torch.float32)


def relevance_order(maps: torch.Tensor) -> torch.Tensor:
    """(B, H*W) rank of every pixel, 0 = most relevant (a stable sort: ties keep raster order)."""
    flat = _check_maps(maps).flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order))
    return rank


def _targets(model: nn.Module, x: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    """One class per image: checked against the model's classes (a sentence, not an index error)."""
    if callable(target) and not isinstance(target, torch.Tensor):
        raise TypeError(
            "these scores follow one class's softmax probability, so target must be None (the predicted "
            "class), an int or one int per image, not a callable"
        )
    spec = Target(target, len(x))
    with torch.no_grad():
        out = model_output(model(x))
    if out.dim() != 2:
        raise ValueError(
            f"the model returns {tuple(out.shape)}, not (B, classes) logits: deletion, insertion and ROAD "
            "score a classifier's class probability"
        )
    return spec.classes(out)


def _probabilities(
    model: nn.Module,
    images: Callable[[int, int], torch.Tensor],
    n: int,
    cls: torch.Tensor,
    batch_size: int,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Softmax probability of ``cls[i]`` for the n images ``images(start, stop)`` makes, in batches."""
    out = torch.empty(n, device=cls.device)
    with torch.no_grad():
        for s in range(0, n, batch_size):
            e = min(n, s + batch_size)
            out[s:e] = model_output(model(images(s, e))).softmax(dim=1).gather(1, cls[s:e, None])[:, 0]
            if progress is not None:
                progress(e / n)
    return out


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under curves (B, steps + 1) sampled evenly on [0, 1] (trapezoid rule)."""
    if not isinstance(curves, torch.Tensor) or curves.dim() != 2 or curves.shape[1] < 2:
        shape = tuple(curves.shape) if isinstance(curves, torch.Tensor) else type(curves).__name__
        raise ValueError(f"curves must be (B, steps + 1) with at least 2 points each, got {shape}")
    if not curves.is_floating_point():
        raise TypeError(f"curves must be float probabilities, got {curves.dtype}")
    if not bool(torch.isfinite(curves).all()):
        raise ValueError("curves hold NaN or inf values; an area under them is no score")
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    # Why float64: a tiny sigma (1e-200) is 0 in float32, and 0 / 0 is NaN.
    t = torch.arange(-r, r + 1, dtype=torch.float64, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def perturbation_curves(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    mode: str = "deletion",
    steps: int = 32,
    blur_sigma: float | None = None,
    batch_size: int = 64,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """(B, steps + 1) target probabilities as pixels are deleted / inserted in the map's order.

    ``mode="deletion"`` starts from the image and sets pixels to 0 (RISE's black); ``"insertion"``
    starts from a Gaussian-blurred copy (``blur_sigma`` px, default 1/8 of the image side) and
    restores pixels. Why so strong a blur: ShapeScenes objects are flat colour blobs that survive
    a light one (the classifier kept 0.90 of its probability at side/20, 0.57 at side/8, on 16
    scenes); RISE's own code blurs far less (an 11-tap kernel) on textured ImageNet photos. ``target`` None: the class the model predicts on the unperturbed image.
    """
    maps = _check(model, x, maps)
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    steps, batch_size = check_int(steps, "steps", 1), check_int(batch_size, "batch_size", 1)
    B, _, H, W = x.shape
    if blur_sigma is not None:
        # Why a cap: the kernel spans 6 sigma; far past the image side it only costs memory (the blur is flat).
        blur_sigma = check_number(blur_sigma, "blur_sigma (pixels)", 0.0, 4.0 * max(H, W), low_open=True)
    n_pix = H * W
    with model_lock(model), eval_mode(model):
        cls = _targets(model, x, target)
        rank = relevance_order(maps).view(B, 1, H, W)
        if mode == "deletion":
            start, end = x, torch.zeros_like(x)
        else:
            sigma = min(H, W) / 8 if blur_sigma is None else float(blur_sigma)
            start, end = _blur(x, sigma), x
        # Step k has changed the k * n_pix / steps most relevant pixels.
        counts = torch.round(torch.arange(steps + 1, device=x.device) * n_pix / steps).long()

        def images(s: int, e: int) -> torch.Tensor:
            idx = torch.arange(s, e, device=x.device)
            img, k = idx // (steps + 1), idx % (steps + 1)
            changed = rank[img] < counts[k].view(-1, 1, 1, 1)
            return torch.where(changed, end[img], start[img])

        probs = _probabilities(model, images, B * (steps + 1), cls.repeat_interleave(steps + 1), batch_size, progress)
    return probs.view(B, steps + 1)


def deletion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target=None, **kw) -> torch.Tensor:
    """Deletion AUC per image (B,): lower means the map found what the score needs (RISE)."""
    return auc(perturbation_curves(model, x, maps, target, mode="deletion", **kw))


def insertion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target=None, **kw) -> torch.Tensor:
    """Insertion AUC per image (B,): higher means the map found what the score needs (RISE)."""
    return auc(perturbation_curves(model, x, maps, target, mode="insertion", **kw))


def noisy_linear_imputation(
    image: torch.Tensor, removed: torch.Tensor, noise: float = 0.01, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``image`` (C, H, W) with the ``removed`` (H, W) pixels filled by Rong et al.'s noisy linear
    imputation: each removed pixel equals the weighted mean of its in-image neighbours (solved
    jointly, one sparse system for all channels), plus N(0, noise^2)."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or not image.is_floating_point():
        what = f"{tuple(image.shape)} {image.dtype}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be one float image (C, H, W), got {what}; pass x[i]")
    if not bool(torch.isfinite(image).all()):
        raise ValueError("image holds NaN or inf values; replace them, e.g. torch.nan_to_num(image)")
    noise = check_number(noise, "noise (std)", 0.0)
    C, H, W = image.shape
    rem = as_mask(removed, "removed")
    if rem.shape != (H, W):
        raise ValueError(f"removed is {rem.shape} but the image is {(H, W)}")
    if rem.all():
        raise ValueError("every pixel is removed: nothing is left to impute from; remove a fraction below 1")
    img = image.detach().cpu().double().numpy().reshape(C, -1)
    ys, xs = np.nonzero(rem)
    n = len(ys)
    if n == 0:
        return image.clone()
    index = np.full((H, W), -1, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    diag = np.zeros(n)
    rhs = np.zeros((n, C))
    rows, cols, vals = [], [], []
    for (dy, dx), w in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        ok = (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
        u, ny, nx = np.nonzero(ok)[0], ny[ok], nx[ok]
        diag[u] += w
        j = index[ny, nx]
        unknown = j >= 0
        rows.append(u[unknown])
        cols.append(j[unknown])
        vals.append(np.full(int(unknown.sum()), -w))
        known = ~unknown
        np.add.at(rhs, u[known], w * img[:, ny[known] * W + nx[known]].T)
    a = sparse.csc_matrix(
        (np.concatenate([diag, *vals]), (np.concatenate([np.arange(n), *rows]), np.concatenate([np.arange(n), *cols]))),
        shape=(n, n),
    )
    filled = splinalg.spsolve(a, rhs).reshape(n, C)
    out = image.detach().clone()
    vals_t = torch.as_tensor(filled.T, dtype=image.dtype, device=image.device)
    if noise > 0:
        vals_t = vals_t + noise * torch.randn(vals_t.shape, generator=generator).to(image.device, image.dtype)
    out[:, torch.as_tensor(ys, device=image.device), torch.as_tensor(xs, device=image.device)] = vals_t
    return out


def road(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    target: int | Sequence[int] | torch.Tensor | None = None,
    order: str = "morf",
    fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    noise: float = 0.01,
    batch_size: int = 64,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ROAD: (mean over ``fractions`` (B,), probabilities (B, len(fractions))) of the target after
    removing the most (``"morf"``) or least (``"lerf"``) relevant fraction of pixels with noisy
    linear imputation. MoRF: lower is better; LeRF: higher is better."""
    maps = _check(model, x, maps)
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' (most relevant first) or 'lerf' (least relevant first), got {order!r}")
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence) or not fractions:
        raise TypeError(f"fractions must be a non-empty sequence of numbers in (0, 1), got {fractions!r}")
    fr = [check_number(f, "each fraction", 0.0, 1.0) for f in fractions]
    if not all(0 < f < 1 for f in fr):
        raise ValueError(f"fractions must lie strictly between 0 and 1, got {list(fractions)}")
    batch_size, seed = check_int(batch_size, "batch_size", 1), check_int(seed, "seed", 0)
    noise = check_number(noise, "noise (std)", 0.0)
    B, _, H, W = x.shape
    g = torch.Generator().manual_seed(seed)
    with model_lock(model), eval_mode(model):
        cls = _targets(model, x, target)
        rank = relevance_order(maps if order == "morf" else -maps).view(B, H, W)
        imputed = torch.stack(
            [noisy_linear_imputation(x[i], rank[i] < round(f * H * W), noise, g) for i in range(B) for f in fr]
        )
        probs = _probabilities(
            model, lambda s, e: imputed[s:e], len(imputed), cls.repeat_interleave(len(fr)), batch_size
        ).view(B, len(fr))
    return probs.mean(dim=1), probs
