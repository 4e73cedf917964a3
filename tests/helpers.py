"""Small helpers several test files share (``from tests.helpers import ...``; tests/ is a package).

Widget-free (the session tests import it without ipywidgets): two stand-in models, a GAP-linear
classifier and a small segmenter, that the session, widget and close tests share.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from guidewidgets import zoo


def until(cond: Callable[[], object], timeout: float = 120.0, poll: float = 0.02) -> bool:
    """Poll ``cond`` until it is true (True) or ``timeout`` seconds pass (False): a wait, not a timing."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(poll)
    return False


def hook_count(model: nn.Module) -> int:
    """Every forward, pre-forward, backward and pre-backward hook left on ``model``'s modules."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )


class TinyCNN(nn.Module):
    """A GAP-linear classifier (CAM works) with an inplace ReLU."""

    classes = ["red", "green", "blue", "grey"]
    task = "classification"
    default_explain_layer = "features.2"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class TinySeg(nn.Module):
    """A three-class segmenter (background, disc, bar) at half resolution, upsampled to the input."""

    classes = ["background", "disc", "bar"]
    task = "segmentation"
    default_guide_layer = "enc.2"
    default_explain_layer = "enc.2"

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()
        )
        self.head = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        y = self.head(self.enc(x))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class PlainNet(nn.Module):
    """A GAP-linear classifier without BatchNorm: every sample is independent of the others, so
    GAIN's trainer gives the same weights in one process and under DDP (whose BatchNorm statistics
    stay per process)."""

    def __init__(self, classes: list[str], stride: int = 2) -> None:
        super().__init__()
        self.classes = list(classes)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=stride, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(8, len(self.classes))

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def scene_tensors(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` ShapeScenes of ``seed`` as model input: images (n, 3, H, W) in [0, 1], labels (n,) and
    object masks (n, H, W) bool."""
    b = zoo.ShapeScenes(n, seed=seed).batch()
    return b["images"].float() / 255, b["labels"], b["masks"] > 0
