"""Score-CAM and Ablation-CAM on layers with many channels: ``max_channels`` keeps each image's
channels of largest mean activation, the work is announced (progress counts the masked forwards,
a warning names their number before a long run), bad values are refused, and a batch gives the
single-image maps (exactly so in float64, on a ConvNeXt)."""

import warnings

import pytest
import torch
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt

from guidewidgets import explain as E

PERTURBATION_CAMS = ["score-cam", "ablation-cam"]


class Rows(nn.Module):
    """Identity that counts the rows (images) passing through it."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return x


class Net(nn.Module):
    """Conv + ReLU ("body", ``channels`` maps) + GAP + linear; only the first ``live`` channels
    fire (the others are exactly 0); ``rows`` counts the images the tail runs on."""

    def __init__(self, channels: int = 12, live: int | None = None) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.rows = Rows()
        self.fc = nn.Linear(channels, 4)
        if live is not None:
            with torch.no_grad():
                self.body[0].weight[live:] = 0
                self.body[0].bias[live:] = 0
                self.body[0].bias[:live] = self.body[0].bias[:live].abs() + 0.05  # every live channel fires

    def forward(self, x):
        return self.fc(self.rows(self.body(x)).mean((2, 3)))


def net(**kw) -> Net:
    torch.manual_seed(0)
    return Net(**kw).eval()


def images(b: int = 2, size: int = 12, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("method", PERTURBATION_CAMS)
def test_max_channels_at_the_channel_count_is_the_default(method):
    model, x = net(), images()
    default = E.explain(model, x, method, target=[1, 2], layer="body")
    for keep in (12, 50):
        assert torch.equal(E.explain(model, x, method, target=[1, 2], layer="body", max_channels=keep), default)


@pytest.mark.parametrize("method", PERTURBATION_CAMS)
def test_max_channels_runs_that_many_masked_forwards_and_progress_counts_them(method):
    model, x, k = net(), images(), 5
    reports: list[float] = []
    maps = E.explain(model, x, method, layer="body", max_channels=k, batch_size=2, progress=reports.append)
    assert maps.shape == (2, 12, 12) and torch.isfinite(maps).all()
    assert model.rows.rows == 2 * (1 + k)  # the clean pass, then k masked copies of each image
    assert reports == pytest.approx([j / k for j in range(1, k + 1)])  # one channel per forward here
    model.rows.rows = 0
    E.explain(model, x, method, layer="body")
    assert model.rows.rows == 2 * (1 + 12)


def test_ablation_cam_of_the_live_channels_equals_the_full_map():
    """Channels that never fire add nothing to the map and lose nothing when ablated (weight 0):
    keeping only the live ones, which have the largest mean activation, changes nothing."""
    model, x = net(live=4), images()
    full = E.ablation_cam(model, x, [0, 3], layer="body", relu=False)
    kept = E.ablation_cam(model, x, [0, 3], layer="body", relu=False, max_channels=4)
    assert torch.allclose(kept, full, rtol=1e-5, atol=1e-6 * float(full.abs().max()))
    assert not torch.allclose(E.ablation_cam(model, x, [0, 3], layer="body", relu=False, max_channels=2), full)


def test_score_cam_of_the_live_channels_is_the_full_map_rescaled():
    """Dead channels mask the image to black; their scores only enlarge the softmax's
    denominator. Keeping the live channels scales each image's map by one factor > 1."""
    model, x = net(live=4), images()
    full = E.score_cam(model, x, [0, 3], layer="body", relu=False)
    kept = E.score_cam(model, x, [0, 3], layer="body", relu=False, max_channels=4)
    for b in range(2):
        scale = float(kept[b].abs().sum() / full[b].abs().sum())
        assert scale > 1
        assert torch.allclose(kept[b], scale * full[b], rtol=1e-4, atol=1e-6 * float(kept[b].abs().max()))


@pytest.mark.parametrize("method", PERTURBATION_CAMS)
@pytest.mark.parametrize(
    "bad, error", [(0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError), ("8", TypeError)]
)
def test_bad_max_channels_are_refused_with_a_sentence(method, bad, error):
    model, x = net(), images()
    with pytest.raises(error, match=r"max_channels must be .* got"):
        E.explain(model, x, method, layer="body", max_channels=bad)
    assert model.rows.rows == 0  # refused before any forward


@pytest.mark.parametrize("method", PERTURBATION_CAMS)
def test_many_forwards_warn_before_they_start_and_name_the_fix(method):
    model, x = net(channels=130), images(size=6)
    with pytest.warns(UserWarning, match=r"260 masked forwards \(130 channels x 2 images\).*max_channels=") as got:
        E.explain(model, x, method, layer="body", batch_size=64)
    assert len(got) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a chosen max_channels, or a short run, is not nagged about
        E.explain(model, x, method, layer="body", max_channels=130)
        E.explain(model, x[:1], method, layer="body")


def test_ablation_cam_refuses_a_zero_target_score():
    model, x = net(), images()
    with pytest.raises(ValueError, match="score is exactly 0 for image 0.*another target"):
        E.ablation_cam(model, x, lambda out: torch.zeros(out.shape[0]), layer="body")


def tiny_convnext() -> nn.Module:
    """torchvision's ConvNeXt (LayerNorm2d, depthwise 7 x 7, layer scale) at a test's size."""
    torch.manual_seed(0)
    blocks = [
        CNBlockConfig(16, 32, 1),
        CNBlockConfig(32, 64, 1),
        CNBlockConfig(64, 128, 1),
        CNBlockConfig(128, None, 1),
    ]
    return ConvNeXt(blocks, num_classes=10).eval().double()


@pytest.mark.parametrize("max_channels", [None, 16])
def test_score_cam_batch_equals_single_images_in_float64_on_a_convnext(max_channels):
    """Nothing in Score-CAM mixes images (per-image masks, softmax and channel choice): in float64
    a batch of two gives each image's own map to 1e-6. (In float32 a near-flat map of a random
    ConvNeXt moves by a few % between batch sizes: rounding, see the docstring.)"""
    model = tiny_convnext()
    x = images(2, 64, torch.float64)
    both = E.score_cam(model, x, 3, relu=False, max_channels=max_channels)  # unrectified: never all 0
    for b in range(2):
        one = E.score_cam(model, x[b : b + 1], 3, relu=False, max_channels=max_channels)[0]
        assert one.abs().max() > 0
        assert float((both[b] - one).abs().max() / one.abs().max()) <= 1e-6
