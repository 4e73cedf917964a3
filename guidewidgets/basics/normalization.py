"""Preprocessing statistics: per-channel mean/std (ResNet), per-channel mean (VGG), mean image (AlexNet).

The lecture's rule: normalisation statistics are parameters of the model. Compute them on the
training split only and apply the same numbers to validation and test images. The wrong way
(statistics over train + test, or over the test batch itself) is here too, so it can be shown,
and it warns.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import torch

__all__ = ["Stats", "LeakageWarning", "training_stats", "leaked_stats", "normalize"]

Kind = Literal["channel", "channel-mean", "image"]
_KINDS = ("channel", "channel-mean", "image")


class LeakageWarning(UserWarning):
    """Statistics computed with test images in them: the test score is no longer honest."""


@dataclass(frozen=True)
class Stats:
    """Normalisation statistics: ``mean`` and ``std`` shaped to broadcast over (B, C, H, W).

    ``kind``: "channel" (C means and C stds), "channel-mean" (C means, std 1) or "image" (a
    mean image (C, H, W), std 1). ``split`` records where they came from; ``n`` how many images.
    """

    mean: torch.Tensor
    std: torch.Tensor
    kind: str
    split: str
    n: int


def _check_images(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} must be a (B, C, H, W) tensor, got {shape}; stack the images with torch.stack")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be float, got {x.dtype}; use x.float() / 255 for uint8 images")
    if x.shape[0] < 1:
        raise ValueError(f"{what} is empty; statistics need at least one image")


def _stats(x: torch.Tensor, kind: str, split: str) -> Stats:
    if kind not in _KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {list(_KINDS)}")
    x = x.double()  # Why: sums over millions of pixels lose digits in float32
    if kind == "image":
        mean = x.mean(0, keepdim=True)
        std = torch.ones(1, x.shape[1], 1, 1, dtype=x.dtype)
    else:
        mean = x.mean((0, 2, 3), keepdim=True)
        if kind == "channel":
            std = x.std((0, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-8)
        else:
            std = torch.ones_like(mean)
    return Stats(mean.float(), std.float(), kind, split, int(x.shape[0]))


def training_stats(images: torch.Tensor, kind: Kind = "channel", *, split: str = "train") -> Stats:
    """Statistics of the training images (the right way).

    ``split`` names the images; anything but "train" is refused, because statistics are model
    parameters and must not see validation or test data.
    """
    if split != "train":
        raise ValueError(
            f"normalisation statistics are model parameters: compute them on the training split, not on "
            f"{split!r}; pass the training images (split='train') and apply the result to {split!r} with normalize()"
        )
    _check_images(images, "images")
    return _stats(images, kind, "train")


def leaked_stats(train: torch.Tensor, test: torch.Tensor, kind: Kind = "channel") -> Stats:
    """The wrong way, for teaching: statistics over training *and* test images. Warns (LeakageWarning)."""
    _check_images(train, "train")
    _check_images(test, "test")
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(f"train and test images differ in shape ({tuple(train.shape[1:])} vs {tuple(test.shape[1:])})")
    x = torch.cat([train, test])
    warnings.warn(
        "these statistics include test images (normalise first, split later): the test set leaks into the "
        "model; use training_stats(train) instead",
        LeakageWarning,
        stacklevel=2,
    )
    return _stats(x, kind, "train+test")


def normalize(x: torch.Tensor, stats: Stats) -> torch.Tensor:
    """``(x - mean) / std`` with ``stats`` (from :func:`training_stats`); same dtype as ``x``.

    Stats that saw test images warn (LeakageWarning); a mean image of another size is refused.
    """
    if not isinstance(stats, Stats):
        raise TypeError(f"stats must be a Stats from training_stats(), got {type(stats).__name__}")
    _check_images(x, "x")
    if x.shape[1] != stats.mean.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} channels but the statistics have {stats.mean.shape[1]}; "
            "compute them on images like these"
        )
    if stats.kind == "image" and tuple(stats.mean.shape[-2:]) != tuple(x.shape[-2:]):
        raise ValueError(
            f"a mean image of size {tuple(stats.mean.shape[-2:])} cannot normalise images of size "
            f"{tuple(x.shape[-2:])}; resize the images or use kind='channel' (3 numbers fit any size)"
        )
    if stats.split != "train":
        warnings.warn(
            f"normalising with statistics from {stats.split!r}: test images leaked into them; "
            "use training_stats(train)",
            LeakageWarning,
            stacklevel=2,
        )
    return ((x - stats.mean.to(x)) / stats.std.to(x)).to(x.dtype)
