"""Small random segmenters and helpers the Guide tests share (``from tests.guide_models import ...``).

The fixtures ``tiny`` and ``image`` are imported by the test files that use them as
``tiny_fixture`` and ``image_fixture`` (pytest finds a fixture imported into a test module as if it
were defined there, under its ``name``; the other name keeps the test arguments from shadowing it).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TinySeg",
    "SkipSeg",
    "NoEmptyBatch",
    "FallbackSeg",
    "snapshot",
    "assert_untouched",
    "tiny_fixture",
    "image_fixture",
]


class TinySeg(nn.Module):
    """Plain encoder/decoder with BatchNorm, in-place ReLUs and a 3-D intermediate output."""

    def __init__(self, k: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, 2, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, 1, 1),
            nn.ReLU(inplace=True),
        )
        self.flat = nn.Flatten(2)  # (B, C, H*W): not a feature map a guide can use
        self.decoder = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(16, k, 1))
        self.classes = [f"class{i}" for i in range(k)]
        self.task = "segmentation"
        self.default_guide_layer = "encoder.5"

    def forward(self, x):
        x = (x - 0.5) / 0.25
        f = self.encoder(x)
        f = self.flat(f).view_as(f)
        return F.interpolate(self.decoder(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


class SkipSeg(nn.Module):
    """U-Net-like: the tail reads an early head feature map through a skip connection."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(inplace=True))
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(inplace=True))
        self.mid = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(16 + 8, k, 3, 1, 1)
        self.classes = ["a", "b", "c"]

    def forward(self, x):
        s = self.stem(x)
        m = self.mid(self.down(s))
        up = F.interpolate(m, size=s.shape[-2:], mode="nearest")
        return self.head(torch.cat([up, s], 1))


class NoEmptyBatch(nn.Module):
    """A head module that cannot run on an empty batch: the fast path must fall back."""

    def forward(self, x):
        return x.view(1, *x.shape[1:]) * 1.0


class FallbackSeg(TinySeg):
    def __init__(self):
        super().__init__()
        self.odd = NoEmptyBatch()

    def forward(self, x):
        f = self.encoder(self.odd((x - 0.5) / 0.25))
        return F.interpolate(self.decoder(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


def snapshot(model: nn.Module):
    """The model's weights, ``requires_grad`` flags and train/eval modes, for :func:`assert_untouched`."""
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [p.requires_grad for p in model.parameters()],
        [m.training for m in model.modules()],
    )


def assert_untouched(model: nn.Module, snap) -> None:
    """The model is as :func:`snapshot` saw it: same weights, flags and modes, no gradient, no hook."""
    state, flags, training = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[k], v) for k, v in state.items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == training
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


@pytest.fixture(name="tiny")
def tiny_fixture():
    """A seeded :class:`TinySeg` in eval mode."""
    torch.manual_seed(0)
    return TinySeg().eval()


@pytest.fixture(name="image")
def image_fixture():
    """A seeded random (3, 40, 48) image in [0, 1]."""
    return torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(1))
