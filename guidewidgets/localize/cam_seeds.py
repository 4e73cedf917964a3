"""CAM seeds for weakly supervised segmentation: their limits, measured, and three remedies.

The visualization lecture lists the limits of CAM as a pseudo-label ("poor & unsharp result",
"concentrated only in the discriminative area", "bigger than the object, blob shapes") and the
remedies ("enhancing boundaries", "use saliency as well", self-supervision). With ShapeScenes'
true masks the limits are numbers: :func:`seed_quality` gives a seed's precision and recall at
each threshold. The remedies here: adversarial erasing (:func:`erase_and_expand`: hide what the
map found, ask again, keep the union; Wei et al., CVPR 2017), colour-affinity propagation
(:func:`affinity_refine`: a random walk that spreads the map inside regions of similar colour, the
idea of AffinityNet, Ahn & Kwak, CVPR 2018, with colour instead of a learned affinity) and GrabCut
(:func:`guidewidgets.localize.grabcut_from_map`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["normalise", "seed_quality", "erase_and_expand", "affinity_refine"]


def normalise(m: torch.Tensor) -> torch.Tensor:
    """A map scaled to [0, 1] by its maximum (negative values clipped; an empty map stays 0)."""
    m = m.detach().float().clamp_min(0)
    return m / m.max().clamp_min(1e-12)


def seed_quality(m: torch.Tensor, truth: torch.Tensor, thresholds: list[float]) -> dict[str, list[float]]:
    """Precision and recall of the seed ``m >= t * max(m)`` against a true mask, per threshold.

    Args:
        m: (H, W) map.
        truth: (H, W) bool object mask.
        thresholds: fractions of the map's maximum.

    Returns:
        ``precision`` (the seed's pixels on the object) and ``recall`` (the object's pixels in the
        seed), one value per threshold; precision is 1.0 for an empty seed.
    """
    if m.shape != truth.shape:
        raise ValueError(f"map {tuple(m.shape)} and mask {tuple(truth.shape)} must have the same size")
    m, truth = normalise(m), truth.bool()
    prec, rec = [], []
    for t in thresholds:
        seed = m >= t
        hit = float((seed & truth).sum())
        prec.append(hit / float(seed.sum()) if seed.any() else 1.0)
        rec.append(hit / max(float(truth.sum()), 1.0))
    return {"precision": prec, "recall": rec}


@torch.no_grad()
def _erase(image: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    fill = image.mean((1, 2), keepdim=True)  # the image's mean colour: no new edge to find
    return torch.where(region[None], fill, image)


def erase_and_expand(
    model: nn.Module, image: torch.Tensor, cls: int, rounds: int = 2, threshold: float = 0.5
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Adversarial erasing: CAM, erase its region, CAM of the erased image, ...; the union of all.

    Args:
        model: a GAP-linear classifier (CAM-ready), e.g. ``zoo.load("shapes-classifier")``.
        image: (3, H, W) in [0, 1].
        cls: the class whose object to grow.
        rounds: how many times to erase (0 gives the plain CAM).
        threshold: fraction of each round's maximum erased before the next round.

    Returns:
        (the union map (H, W) in [0, 1] as the pixel-wise maximum of the rounds' normalised maps,
        the list of those maps, one per round).
    """
    from ..explain import cam  # Why lazy: explain imports far more than this module needs

    maps, x, erased = [], image, torch.zeros(image.shape[-2:], dtype=torch.bool)
    for _ in range(rounds + 1):
        m = normalise(cam(model, x[None], cls)[0])
        m = torch.where(erased, torch.zeros_like(m), m)  # an erased pixel was already claimed
        maps.append(m)
        erased |= m >= threshold
        x = _erase(image, erased)
    return torch.stack(maps).amax(0), maps


def affinity_refine(image: torch.Tensor, m: torch.Tensor, iters: int = 30, sigma: float = 0.1) -> torch.Tensor:
    """Spread a map along colour: ``m <- T m`` for a random walk on the 4-neighbour pixel grid.

    ``T`` moves to a neighbour with weight ``exp(-|I_p - I_q|^2 / (2 sigma^2))`` (and stays with
    weight 1): across an edge of the image the walk hardly moves, inside a uniform region it
    mixes, so a blob that spills over an object's edge shrinks to it and a seed on part of an
    object spreads over the rest.

    Args:
        image: (3, H, W) in [0, 1].
        m: (H, W) map.
        iters: random-walk steps.
        sigma: colour scale of the affinity.

    Returns:
        The refined map (H, W) in [0, 1].
    """
    if image.shape[-2:] != m.shape:
        raise ValueError(f"image {tuple(image.shape)} and map {tuple(m.shape)} must have the same size")
    if sigma <= 0 or iters < 0:
        raise ValueError(f"need sigma > 0 and iters >= 0, got sigma={sigma}, iters={iters}")
    img = F.pad(image.float()[None], (1, 1, 1, 1), mode="replicate")[0]
    h, w = m.shape
    shifts = [(0, 1), (2, 1), (1, 0), (1, 2)]  # up, down, left, right in the padded frame
    weights = [
        torch.exp(-((img[:, dy : dy + h, dx : dx + w] - image) ** 2).sum(0) / (2 * sigma**2)) for dy, dx in shifts
    ]
    total = 1.0 + sum(weights)
    out = normalise(m)
    for _ in range(iters):
        p = F.pad(out[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
        out = (out + sum(wt * p[dy : dy + h, dx : dx + w] for wt, (dy, dx) in zip(weights, shifts))) / total
    return normalise(out)
