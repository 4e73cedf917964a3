"""Linear pieces of the localization lecture: PCA / whitening, the linear classifier as a set of
templates, and what a CAM-ready head (GAP + one linear layer) costs against a fully connected one.

>>> w = fit_whitening(pixels)            # (N, D) zero-centred, decorrelated, unit variance
>>> w.apply(pixels, zca=True)            # covariance ~ identity, still looks like the input
>>> lin, acc = fit_linear(flat_images, labels)
>>> templates(lin, (3, 24, 24))          # one image per class: what the classifier matches
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..zoo.models import ShapeClassifier

__all__ = ["Whitening", "fit_whitening", "fit_linear", "templates", "head_inputs", "compare_heads"]


@dataclass(frozen=True)
class Whitening:
    """PCA of the training data: ``mean`` (D,), ``components`` (D, D) as rows, ``variances`` (D,)."""

    mean: torch.Tensor
    components: torch.Tensor
    variances: torch.Tensor
    eps: float

    def apply(self, x: torch.Tensor, zca: bool = False, keep: int | None = None) -> torch.Tensor:
        """Whiten ``x`` (N, D): PCA whitening (rotated to the components), or ZCA (rotated back).

        Args:
            x: rows to transform, same D as the training data.
            zca: rotate back to the input axes, so images still look like images.
            keep: use only the ``keep`` largest components (PCA dimensionality reduction).

        Returns:
            (N, keep) for PCA, (N, D) for ZCA.
        """
        comps, var = self.components[:keep], self.variances[:keep]
        z = (x - self.mean) @ comps.T / torch.sqrt(var + self.eps)
        return z @ comps if zca else z


def fit_whitening(x: torch.Tensor, eps: float = 1e-5) -> Whitening:
    """PCA of zero-centred rows ``x`` (N, D), largest variance first.

    Args:
        x: training rows (pixels, patches or flattened images).
        eps: added to each variance before the square root (keeps near-empty directions finite).

    Returns:
        A :class:`Whitening`; ``apply`` gives data with (close to) identity covariance.
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be (N, D) rows with N >= 2, got {tuple(x.shape)}")
    x = x.double()
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / (x.shape[0] - 1)
    var, vec = torch.linalg.eigh(cov)
    order = var.flip(0).clamp_min(0)
    return Whitening(mean.float(), vec.flip(1).T.float(), order.float(), float(eps))


def fit_linear(x: torch.Tensor, labels: torch.Tensor, steps: int = 200, lr: float = 1e-2, seed: int = 0) -> nn.Linear:
    """Multinomial logistic regression ``W x + b`` on rows ``x`` (N, D), full-batch Adam.

    Args:
        x: (N, D) inputs.
        labels: (N,) class indices.
        steps: optimiser steps.
        lr: Adam's learning rate.
        seed: seeds the initial weights.

    Returns:
        The trained ``nn.Linear`` (D -> number of classes).
    """
    torch.manual_seed(seed)
    lin = nn.Linear(x.shape[1], int(labels.max()) + 1)
    opt = torch.optim.Adam(lin.parameters(), lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy(lin(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return lin.requires_grad_(False)


def templates(lin: nn.Linear, shape: tuple[int, int, int]) -> torch.Tensor:
    """Each class's weight row as an image (K, C, H, W), min-max scaled to [0, 1] per class.

    A linear score ``w_c . x`` is a match of the image with the template ``w_c``.
    """
    w = lin.weight.detach().view(-1, *shape)
    lo = w.flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = w.flatten(1).amax(1).view(-1, 1, 1, 1)
    return (w - lo) / (hi - lo).clamp_min(1e-12)


@torch.no_grad()
def head_inputs(classifier: ShapeClassifier, images: torch.Tensor) -> torch.Tensor:
    """The frozen classifier's last feature maps (N, C, h, w) of ``images`` (N, 3, H, W)."""
    was = classifier.training
    classifier.eval()
    try:
        return torch.cat(
            [classifier.features(classifier.normalize(images[i : i + 128])) for i in range(0, len(images), 128)]
        )
    finally:
        classifier.train(was)


def compare_heads(
    train: tuple[torch.Tensor, torch.Tensor], test: tuple[torch.Tensor, torch.Tensor], steps: int = 200
) -> dict[str, dict[str, float]]:
    """Train a GAP + linear head and a flatten + FC head on the same frozen feature maps.

    Args:
        train: (feature maps (N, C, h, w), labels (N,)) from :func:`head_inputs`.
        test: the same for held-out images.
        steps: full-batch Adam steps for each head.

    Returns:
        Per head (``"gap"``, ``"fc"``): ``accuracy`` on ``test`` and ``parameters``.
    """
    out = {}
    for name, pool in (("gap", lambda f: f.mean((2, 3))), ("fc", lambda f: f.flatten(1))):
        lin = fit_linear(pool(train[0]), train[1], steps=steps, lr=1e-2 if name == "gap" else 1e-3)
        acc = float((lin(pool(test[0])).argmax(1) == test[1]).float().mean())
        out[name] = {"accuracy": acc, "parameters": float(sum(p.numel() for p in lin.parameters()))}
    return out
