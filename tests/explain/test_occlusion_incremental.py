"""Incremental and approximate occlusion (issue 17 items 1, 2): same maps as plain occlusion,
fallback points reported, clear errors, models left as they were. Random weights, small images."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from guidewidgets import explain as E
from guidewidgets.explain.batching import Progress
from guidewidgets.explain.occlusion_incremental import occlusion_drops, occlusion_plan
from guidewidgets.explain.targets import Target

_MODELS: dict[str, nn.Module] = {}


def model(name: str) -> nn.Module:
    if name not in _MODELS:
        torch.manual_seed(0)
        if name == "bottleneck":  # torchvision's Bottleneck block, one per stage (resnet50 is slow here)
            m: nn.Module = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10)
        else:
            m = getattr(torchvision.models, name)(weights=None, num_classes=10)
        _MODELS[name] = m.eval()
    return _MODELS[name]


def image(size: int, b: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(1))


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(b.abs().max())
    assert scale > 0, "the plain map is all zeros: the comparison would prove nothing"
    # Windowed convolutions sum in another order than full ones: float rounding only.
    assert float((a - b).abs().max()) <= 1e-4 * scale + 1e-7


CASES = [
    ("resnet18", 64, 8, 6),
    ("resnet18", 64, (12, 8), (8, 6)),
    ("resnet18", 72, 17, 9),
    ("vgg11", 64, 12, 12),
    ("vgg16", 64, 16, 16),
    ("mobilenet_v2", 64, 8, 8),
    ("mobilenet_v2", 64, 12, 6),
    ("bottleneck", 64, 10, 6),
]


@pytest.mark.parametrize("name,size,window,stride", CASES)
def test_incremental_equals_plain(name, size, window, stride):
    m, x = model(name), image(size)
    kw = {"target": 3, "window": window, "stride": stride, "fill": 0.5}
    plain = E.explain(m, x, "occlusion", **kw)
    inc = E.explain(m, x, "occlusion", mode="incremental", **kw)
    assert inc.shape == plain.shape
    assert_same(inc, plain)


@pytest.mark.parametrize("name", ["shapes-classifier", "shapes-segmenter"])
def test_embedded_models_trace_and_match_plain_without_warning(name):
    from guidewidgets import zoo

    task = "segmentation" if name == "shapes-segmenter" else "classification"
    m, x = zoo.load(name), zoo.ShapeScenes(2, seed=5, task=task).batch()["images"].float() / 255
    target = E.segmentation_target(1, box=(0, 0, 96, 96)) if task == "segmentation" else 2
    kw = {"target": target, "window": 16, "stride": 8}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "falls back to plain occlusion" warning: the model traces
        inc = E.explain(m, x, "occlusion", mode="incremental", **kw)
    assert_same(inc, E.explain(m, x, "occlusion", **kw))
    assert occlusion_plan(m, x, 16).traced
    with pytest.raises(ValueError, match="batch dim"):  # the input checks still run outside tracing
        m(x[0])


def test_incremental_batch_of_images_and_per_channel_fill():
    m, x = model("resnet18"), image(64, b=2)
    kw = {"target": [1, 7], "window": 14, "stride": 10, "fill": [0.1, 0.5, 0.9]}
    assert_same(E.occlusion(m, x, mode="incremental", **kw), E.occlusion(m, x, **kw))
    # batch_size sets positions per batch in every mode; the map does not depend on it
    assert_same(E.occlusion(m, x, mode="incremental", batch_size=6, **kw), E.occlusion(m, x, **kw))


def test_fully_convolutional_output_and_dict_outputs():
    class Seg(nn.Module):  # no fallback at all: every node runs on windows up to the output
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, stride=2, padding=2, dilation=2)
            self.p = nn.AvgPool2d(3, 1, 1)
            self.c = nn.Conv2d(16, 4, 1)
            self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1))

        def forward(self, x):
            h = torch.relu(self.a((x - self.mean) / 0.25))  # normalising inside the model is windowed too
            y = self.p(self.b(h))
            return {"out": self.c(torch.cat([y + y, y * 0.5], dim=1))}

    torch.manual_seed(0)
    m, x = Seg().eval(), image(32)
    target = lambda out: out[:, 2].mean((1, 2))  # noqa: E731
    info = occlusion_plan(m, x, window=6)
    assert info.traced and info.fallback is None
    assert {"sub", "truediv", "a", "b", "p", "add", "c", "cat"} <= set(info.windowed)
    kw = {"target": target, "window": 6, "stride": 3}
    assert_same(E.occlusion(m, x, mode="incremental", **kw), E.occlusion(m, x, **kw))


def test_fallback_point_is_reported_and_maps_still_equal():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.up = nn.Upsample(scale_factor=2)  # not windowed: everything from here runs in full
            self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            h = self.conv2(self.up(torch.relu(self.conv(x))))
            return self.head(h.mean((2, 3)))

    torch.manual_seed(0)
    m, x = Odd().eval(), image(32)
    info = occlusion_plan(m, x, window=8)
    assert info.traced
    assert (info.fallback, info.fallback_op) == ("up", "Upsample")
    assert "conv" in info.windowed and "conv2" not in info.windowed
    assert 0 < info.region["conv"] < 1
    kw = {"target": 2, "window": 8, "stride": 4}
    assert_same(E.occlusion(m, x, mode="incremental", **kw), E.occlusion(m, x, **kw))
    # torchvision classifiers fall back at their global pooling
    r = occlusion_plan(model("resnet18"), image(64))
    assert r.fallback == "avgpool" and "layer4_1_conv2" in r.windowed


def test_untraceable_model_runs_plain_with_a_warning():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            if x.mean() > 2:  # data-dependent control flow: torch.fx cannot trace it
                x = x * 2
            return self.conv(x).mean((2, 3))

    torch.manual_seed(0)
    m, x = Branchy().eval(), image(24)
    info = occlusion_plan(m, x)
    assert not info.traced and "torch.fx" in info.reason
    with pytest.warns(UserWarning, match="ran plain occlusion"):
        inc = E.occlusion(m, x, target=1, window=6, stride=3, mode="incremental")
    plain = E.occlusion(m, x, target=1, window=6, stride=3, mode="plain")
    assert_same(inc, plain)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "auto" falls back silently
        assert torch.equal(E.occlusion(m, x, target=1, window=6, stride=3, mode="auto"), plain)


def test_auto_mode_is_incremental_where_the_model_traces():
    m, x = model("resnet18"), image(64)
    kw = {"target": 3, "window": 8, "stride": 6}
    auto, inc = E.occlusion(m, x, mode="auto", **kw), E.occlusion(m, x, mode="incremental", **kw)
    assert torch.equal(auto, inc)  # the same code path, so the same bits
    assert_same(auto, E.occlusion(m, x, **kw))


def test_clear_errors():
    m, x = model("resnet18"), image(32)
    with pytest.raises(ValueError, match="larger than the image"):
        E.occlusion(m, x, window=40, mode="incremental")
    with pytest.raises(ValueError, match="larger than the image"):
        occlusion_plan(m, x, window=33)
    with pytest.raises(ValueError, match="mode must be"):
        E.occlusion(m, x, window=8, mode="fast")
    with pytest.raises(ValueError, match="tau must be"):
        E.occlusion(m, x, window=8, mode="approximate", tau=0)
    with pytest.raises(ValueError, match="refine must be"):
        E.occlusion(m, x, window=8, mode="approximate", refine=1.5)


def test_model_left_unmodified():
    torch.manual_seed(0)
    m = torchvision.models.resnet18(weights=None, num_classes=10)
    m.train()
    before = copy.deepcopy(m.state_dict())
    inplace = [mod.inplace for mod in m.modules() if isinstance(mod, nn.ReLU)]
    E.occlusion(m, image(32), target=0, window=8, stride=8, mode="incremental")
    E.occlusion(m, image(32), target=0, window=8, stride=8, mode="approximate")
    occlusion_plan(m, image(32))
    assert all(mod.training for mod in m.modules())
    assert [mod.inplace for mod in m.modules() if isinstance(mod, nn.ReLU)] == inplace
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())
    assert all(p.grad is None for p in m.parameters())
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_model_with_hooks_runs_plain():
    m, x = copy.deepcopy(model("resnet18")), image(32)
    seen = []
    h = m.layer1.register_forward_hook(lambda *a: seen.append(1))
    try:
        assert "hooks" in occlusion_plan(m, x).reason
        with pytest.warns(UserWarning, match="hooks"):
            E.occlusion(m, x, target=0, window=16, stride=16, mode="incremental")
    finally:
        h.remove()
    # The clean forward runs in every mode; the occluded ones too only when the real forward was used.
    assert len(seen) >= 2


def test_approximate_with_approximations_off_is_exact():
    m, x = model("mobilenet_v2"), image(64)
    kw = {"target": 3, "window": 8, "stride": 8}
    assert_same(E.occlusion(m, x, mode="approximate", tau=1.0, refine=1.0, **kw), E.occlusion(m, x, **kw))


def test_drilldown_is_exact_where_it_computes_and_thresholding_changes_the_map():
    m, x = model("resnet18"), image(64)
    ys = xs = list(range(0, 64 - 8 + 1, 6))  # 10 x 10 positions
    value = torch.tensor(0.5).view(1, 1, 1)
    with torch.no_grad():
        out = m(x)
    t = Target(3, 1).fix(out)
    base = t.scores(out)

    def drops(**kw):
        return occlusion_drops(m, x, t, base, (ys, xs), (8, 8), value, 16, Progress(None, 100), **kw)[0]

    exact = drops()
    approx = drops(refine=0.2)
    first = [0, 2, 4, 6, 8, 9]  # every second row / column and the last
    coarse = [i * 10 + j for i in first for j in first]
    torch.testing.assert_close(approx[coarse], exact[coarse], rtol=1e-4, atol=1e-6)
    computed = (approx - exact).abs().flatten() <= 1e-6 + 1e-4 * exact.abs().max()
    # coarse (36) + a fifth of the other 64 positions (13) are exact; the others interpolated
    assert int(computed.sum()) >= 36 + 13
    assert not torch.equal(approx, exact)
    tau = drops(tau=0.3)
    assert tau.shape == exact.shape and torch.isfinite(tau).all() and not torch.allclose(tau, exact)


def test_progress_reaches_one_in_every_mode():
    m, x = model("resnet18"), image(32)
    for mode in ("incremental", "approximate"):
        seen: list[float] = []
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            E.explain(m, x, "occlusion", target=0, window=8, stride=4, mode=mode, progress=seen.append)
        assert seen and seen == sorted(seen) and seen[-1] == 1.0
