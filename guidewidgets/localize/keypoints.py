"""Localization as regression, with a multitask loss: class + keypoints from one shared layer.

The localization lecture frames human pose as "a CNN-regression problem towards body joints" (a
2k-vector of joint coordinates, an l2 loss) and classification + localization as a multitask
problem trained with ``L = alpha * S + (1 - alpha) * R``. On ShapeScenes the "joints" are three
keypoints of the object, known exactly for every scene: its box's top-left and bottom-right
corners and its centroid. A small trainable block on the frozen classifier's ``block3`` features
feeds both heads, so alpha decides which task the shared block serves; training takes seconds.

>>> data = keypoint_data(zoo.load("shapes-classifier"), ShapeScenes(512, seed=3))
>>> model = train_multitask(data, alpha=0.5)
>>> evaluate(model, test)    # {"accuracy": ..., "keypoint_px": ...}
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import eval_mode
from ..zoo.models import ShapeClassifier
from ..zoo.scenes import CLASSES, ShapeScenes

__all__ = ["KEYPOINTS", "GRID", "keypoint_data", "MultitaskHead", "multitask_loss", "train_multitask", "evaluate"]

#: The keypoints, in output order (each an (x, y) pair in [0, 1] of the image side).
KEYPOINTS = ["top-left", "bottom-right", "centre"]
GRID = 6


def _keypoints(item: dict[str, Any]) -> torch.Tensor:
    box = item["boxes"][0].float()
    ys, xs = (item["mask"] > 0).nonzero(as_tuple=True)
    centre = torch.stack([xs.float().mean(), ys.float().mean()]) + 0.5
    return torch.cat([box, centre]) / item["image"].shape[-1]


@torch.no_grad()
def keypoint_data(classifier: ShapeClassifier, scenes: ShapeScenes, layer: str = "block3") -> dict[str, torch.Tensor]:
    """Frozen features of ``scenes`` (classification task) with labels and keypoints.

    Args:
        classifier: the embedded ``shapes-classifier`` (its ``normalize`` and ``features`` are used).
        scenes: classification ShapeScenes (one object each).
        layer: the last ``features`` block to run; the trainable part starts after it.

    Returns:
        ``features`` (N, C, 6, 6) average-pooled to a 6 x 6 grid, ``labels`` (N,), ``keypoints`` (N, 6) as (x, y) pairs in [0, 1].
    """
    if scenes.task != "classification":
        raise ValueError("keypoint_data needs classification scenes (one object per image)")
    items = [scenes[i] for i in range(len(scenes))]
    x = torch.stack([it["image"] for it in items])
    names = [n for n, _ in classifier.features.named_children()]
    if layer not in names:
        raise ValueError(f"layer must be one of {names}, got {layer!r}")
    trunk = nn.Sequential(classifier.normalize, classifier.features[: names.index(layer) + 1])
    with eval_mode(classifier):
        feats = torch.cat([trunk(x[i : i + 128]) for i in range(0, len(x), 128)])
    # Why pool here: a 6 x 6 grid keeps where things are (regression needs it, GAP would lose it)
    # and makes the trainable part a small MLP that trains in a second.
    feats = F.adaptive_avg_pool2d(feats, GRID)
    labels = torch.tensor([it["label"] for it in items])
    return {"features": feats, "labels": labels, "keypoints": torch.stack([_keypoints(it) for it in items])}


class MultitaskHead(nn.Module):
    """A shared layer (FC on the pooled feature grid) and two heads: class logits and keypoints."""

    def __init__(self, channels: int = 64, hidden: int = 64, classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Flatten(), nn.Linear(channels * GRID * GRID, hidden), nn.ReLU())
        self.classify = nn.Linear(hidden, classes)
        self.regress = nn.Linear(hidden, 2 * len(KEYPOINTS))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits (B, K), keypoints (B, 6) in [0, 1])."""
        z = self.shared(features)
        return self.classify(z), torch.sigmoid(self.regress(z))


def multitask_loss(
    logits: torch.Tensor, points: torch.Tensor, labels: torch.Tensor, truth: torch.Tensor, alpha: float
) -> torch.Tensor:
    """``alpha * S + (1 - alpha) * R``: cross-entropy S and the mean squared keypoint error R."""
    return alpha * F.cross_entropy(logits, labels) + (1 - alpha) * F.mse_loss(points, truth)


def train_multitask(data: dict[str, torch.Tensor], alpha: float, steps: int = 200, seed: int = 0) -> MultitaskHead:
    """Train a :class:`MultitaskHead` on :func:`keypoint_data` with the multitask loss.

    Args:
        data: from :func:`keypoint_data`.
        alpha: weight of the classification loss, in [0, 1] (1 - alpha weighs the regression).
        steps: full-batch Adam steps.
        seed: seeds the initial weights (same seed, same head for every alpha).

    Returns:
        The trained head in eval mode.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha!r}")
    torch.manual_seed(seed)
    head = MultitaskHead(channels=data["features"].shape[1])
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(steps):
        logits, points = head(data["features"])
        loss = multitask_loss(logits, points, data["labels"], data["keypoints"], alpha)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head.eval()


@torch.no_grad()
def evaluate(head: MultitaskHead, data: dict[str, torch.Tensor], size: int = 96) -> dict[str, float]:
    """Class accuracy and the mean keypoint error in pixels (of a ``size``-pixel image).

    Returns:
        ``accuracy`` in [0, 1], ``keypoint_px`` the mean Euclidean distance over the keypoints.
    """
    logits, points = head(data["features"])
    acc = float((logits.argmax(1) == data["labels"]).float().mean())
    err = (points - data["keypoints"]).view(len(points), -1, 2).norm(dim=2) * size
    return {"accuracy": acc, "keypoint_px": float(err.mean())}
