"""Superpixels and the coalition scores the superpixel methods share (LIME, KernelSHAP, feature
ablation, Shapley value sampling).

A coalition ``z`` (one bool per superpixel) is the image with the superpixels where ``z`` is 0
replaced by a baseline. Every method here asks for the target score of many coalitions; this
module builds them on the model's device, runs them in batched forwards and returns the scores.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..hooks import model_output
from .batching import Progress, auto_batch_size, chunks
from .targets import Target

__all__ = ["Segmenter", "slic", "superpixels", "as_baseline", "coalition_scores"]

#: image (H, W, C) float in [0, 1] -> superpixel labels (H, W), ints
Segmenter = Callable[[np.ndarray], np.ndarray]


def slic(image: np.ndarray, n_segments: int = 50) -> np.ndarray:
    """scikit-image's SLIC superpixels in their zero-parameter form (SLICO), the default segmenter.

    SLICO adapts the compactness to each superpixel, so it splits noise and flat images as well as
    photos (plain SLIC at compactness 10 returns a single segment for a 64 px noise image).

    Args:
        image: (H, W, C) floats in [0, 1].
        n_segments: roughly how many superpixels.

    Returns:
        (H, W) integer labels starting at 0.
    """
    from skimage.segmentation import slic as _slic  # lazily: scikit-image takes ~0.3 s to import

    channel_axis = -1 if image.shape[-1] in (3, 4) else None
    img = image if channel_axis is not None else image[..., 0]
    return _slic(img, n_segments=n_segments, slic_zero=True, start_label=0, channel_axis=channel_axis)


def _display(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) model input -> (H, W, C) in [0, 1] for a segmenter: min-max over the image, since
    a normalised input (ImageNet mean/std) is not in [0, 1]."""
    img = x.detach().float().cpu()
    lo, hi = img.amin(), img.amax()
    img = (img - lo) / (hi - lo).clamp_min(1e-12)
    return img.permute(1, 2, 0).numpy().astype(np.float64)


def _relabel(labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Consecutive labels 0..S-1 (a segmenter may skip numbers) and S."""
    _, inverse = torch.unique(labels, return_inverse=True)
    return inverse, int(inverse.max()) + 1


def superpixels(
    x: torch.Tensor,
    segmenter: Segmenter | None = None,
    feature_mask: torch.Tensor | None = None,
    segments: int = 50,
) -> tuple[torch.Tensor, list[int]]:
    """Superpixel labels (B, H, W) on ``x``'s device and the number of superpixels per sample.

    ``feature_mask`` (B, H, W) or (H, W) ints gives them directly (as Captum's argument of that
    name); otherwise ``segmenter`` (default :func:`slic` with about ``segments`` superpixels) runs
    on each image, min-max scaled to [0, 1]. A sample with a single superpixel is refused: every method here would give one number
    for the whole image.
    """
    b, _, h, w = x.shape
    if feature_mask is not None:
        if not isinstance(feature_mask, torch.Tensor) or feature_mask.is_floating_point():
            raise TypeError("feature_mask must be an integer tensor of superpixel labels, (H, W) or (B, H, W)")
        fm = feature_mask.to(x.device)
        if tuple(fm.shape) == (h, w):
            fm = fm.expand(b, h, w)
        if tuple(fm.shape) != (b, h, w):
            raise ValueError(
                f"feature_mask must have shape ({h}, {w}) or ({b}, {h}, {w}), got {tuple(feature_mask.shape)}"
            )
        raw = [fm[i] for i in range(b)]
    else:
        if isinstance(segments, bool) or not isinstance(segments, numbers.Integral) or segments < 2:
            raise ValueError(f"segments (how many superpixels SLIC aims for) must be an int >= 2, got {segments!r}")
        seg = segmenter if segmenter is not None else functools.partial(slic, n_segments=int(segments))
        if not callable(seg):
            raise TypeError(f"segmenter must be a callable(image (H, W, C) in [0, 1]) -> (H, W) labels, got {seg!r}")
        raw = [torch.as_tensor(np.asarray(seg(_display(x[i])))) for i in range(b)]
    labels, counts = [], []
    for i, lab in enumerate(raw):
        if tuple(lab.shape) != (h, w) or lab.is_floating_point():
            raise ValueError(
                f"the segmenter must return ({h}, {w}) integer labels, got {lab.dtype} {tuple(lab.shape)} for sample {i}"
            )
        lab, n = _relabel(lab.to(x.device).long())
        if n < 2:
            raise ValueError(
                f"the segmenter gave sample {i} a single superpixel, so the image cannot be split into parts "
                "to switch on and off: use more segments (e.g. slic with a larger n_segments) or another segmenter"
            )
        labels.append(lab)
        counts.append(n)
    return torch.stack(labels), counts


def as_baseline(baseline: float | Sequence[float] | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The baseline broadcast to ``x`` (B, C, H, W): a number, one value per channel, (C, H, W) or (B, C, H, W)."""
    if isinstance(baseline, bool):
        raise TypeError("baseline must be a number, one value per channel, or a tensor shaped like the image")
    b, c, h, w = x.shape
    if isinstance(baseline, numbers.Real):
        return torch.full_like(x, float(baseline))
    t = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    if t.dim() == 1 and t.numel() == c:
        return t.view(1, c, 1, 1).expand_as(x)
    if tuple(t.shape) == (c, h, w):
        return t.unsqueeze(0).expand_as(x)
    if tuple(t.shape) == (b, c, h, w):
        return t
    raise ValueError(
        f"baseline must be a number, {c} values (one per channel), shape ({c}, {h}, {w}) or ({b}, {c}, {h}, {w}); "
        f"got shape {tuple(t.shape)}"
    )


def coalition_scores(
    model: torch.nn.Module,
    x: torch.Tensor,
    target: Target,
    labels: torch.Tensor,
    baseline: torch.Tensor,
    coalitions: torch.Tensor,
    batch_size: int | None,
    progress: Progress,
) -> torch.Tensor:
    """Target scores (B, K) of ``coalitions`` (B, K, S) bool: superpixel ``s`` of sample ``b`` keeps
    the image where ``coalitions[b, k, s]`` is true and the baseline elsewhere.

    ``target`` must be fixed (:meth:`Target.fix`) so that every coalition is scored for the class
    of the clean image.
    """
    b, k_total, _ = coalitions.shape
    scores = torch.empty(b, k_total, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        for start, stop in chunks(k_total, b, auto_batch_size(x, batch_size)):
            k = stop - start
            # keep[k, b, h, w]: coalition k of sample b, painted onto its superpixels
            keep = torch.stack([coalitions[i, start:stop][:, labels[i]] for i in range(b)], 1).to(x.dtype)
            images = torch.addcmul(baseline, x - baseline, keep[:, :, None]).reshape(k * b, *x.shape[1:])
            out = model_output(model(images)).to(x.dtype)
            scores[:, start:stop] = target.scores(out, k).view(k, b).T
            progress.advance(k)
    return scores


def paint(values: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Maps (B, H, W): each pixel gets its superpixel's value (``values[b]`` has one per superpixel)."""
    return torch.stack([v[lab] for v, lab in zip(values, labels, strict=True)])
