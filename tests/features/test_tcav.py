"""TCAV (features.tcav): identities on toy models whose logit is a known linear function of a
feature direction, the significance test, determinism and the refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from guidewidgets.features import tcav


class Linear(nn.Module):
    """feat = identity 1x1 conv (3 channels), logit 0 = mean of channel 0, logit 1 = -that."""

    classes = ["zero", "one"]

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.feat.weight.copy_(torch.eye(3).view(3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.feat(x)[:, 0].mean(dim=(1, 2))
        return torch.stack([m, -m], dim=1)


class Small(nn.Module):
    """A random conv net with a nonlinear head, so gradients differ from image to image."""

    classes = ["a", "b", "c"]

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.feat = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True))
        self.head = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(self.feat(x)))


def _images(n: int, seed: int, red: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 3, 8, 8), generator=g) * 0.5
    x[:, 0] += red
    return x


def _randoms(k: int = 6, n: int = 12) -> list[torch.Tensor]:
    return [_images(n, 100 + i) for i in range(k)]


def test_cav_of_separable_activations_is_accurate_and_points_to_the_concept():
    model = Linear()
    v = tcav.cav(model, "feat", _images(12, 1, red=0.5), _images(12, 2))
    assert v.accuracy == 1.0
    assert abs(float(v.vector.norm()) - 1.0) < 1e-5
    # The concept is "more channel 0": the CAV's mass on channel 0 is positive, on the others ~0.
    per_channel = v.vector.view(3, 8, 8).sum(dim=(1, 2))
    assert per_channel[0] > 0 and per_channel[0] > 3 * per_channel[1:].abs().max()


def test_directional_derivative_of_a_linear_logit_is_its_weight_along_the_cav():
    model = Linear()
    v = torch.zeros(3 * 8 * 8)
    v[: 8 * 8] = 1.0  # all of channel 0
    d = tcav.directional_derivatives(model, "feat", v, _images(5, 3), 0)
    # d mean(channel 0) / d a = 1/64 on every channel-0 position: the dot product is exactly 1.
    assert torch.allclose(d, torch.ones(5), atol=1e-6)
    assert tcav.tcav_score(model, "feat", v, _images(5, 3), 0) == 1.0
    assert tcav.tcav_score(model, "feat", v, _images(5, 3), "one") == 0.0


def test_a_concept_that_is_the_targets_evidence_scores_one_and_is_significant():
    model = Linear()
    result = tcav.tcav(model, "feat", _images(12, 1, red=0.5), _randoms(), _images(10, 5), "zero", concept="red")
    assert result.scores == [1.0] * 6
    assert result.mean == 1.0 and result.sd == 0.0
    assert all(a == 1.0 for a in result.accuracies)
    assert result.significant and result.p_value < 0.05
    assert "significant" in str(result) and "'zero' <- 'red'" in str(result)
    # The opposite class depends on the same concept negatively.
    other = tcav.tcav(model, "feat", _images(12, 1, red=0.5), _randoms(), _images(10, 5), "one")
    assert other.scores == [0.0] * 6 and other.significant


def test_random_concepts_are_rarely_significant_and_the_run_is_deterministic():
    # Why several concepts: the concept's CAVs share their positive set, so they are correlated and
    # the t-test's false-positive rate exceeds alpha on small sets (measured 1 in 10 at 24 images).
    model = Small()
    randoms = [_images(24, 100 + i) for i in range(8)]
    results = [tcav.tcav(model, "feat", _images(24, s), randoms, _images(16, 7), 1) for s in range(50, 56)]
    assert sum(r.significant for r in results) <= 1, [str(r) for r in results]
    assert sorted(r.p_value for r in results)[3] > 0.2
    again = tcav.tcav(model, "feat", _images(24, 50), randoms, _images(16, 7), 1)
    assert again.scores == results[0].scores and again.random_scores == results[0].random_scores
    assert again.p_value == results[0].p_value


def test_the_model_is_left_unchanged():
    model = Small().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tcav.tcav(model, "feat", _images(6, 1, red=0.5), _randoms(3, 6), _images(4, 2), 0)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_concept_images_come_from_the_scene_generator_and_are_deterministic():
    water = tcav.concept_images("water", 3, seed=4)
    assert water.shape == (3, 3, 96, 96) and float(water.min()) >= 0 and float(water.max()) <= 1
    assert torch.equal(water, tcav.concept_images("water", 3, seed=4))
    assert not torch.equal(water, tcav.concept_images("water", 3, seed=5))
    # Water is bluish (its tint), a yellow patch has a yellow region, circles are circles.
    assert water[:, 2].mean() > water[:, 0].mean()
    yellow = tcav.concept_images("yellow", 4, seed=1)
    assert ((yellow[:, 0] > 0.6) & (yellow[:, 1] > 0.55) & (yellow[:, 2] < 0.35)).flatten(1).float().mean(
        1
    ).min() > 0.05
    from guidewidgets.zoo import ShapeScenes

    circles = tcav.concept_images("circle", 5, seed=3)
    scenes = ShapeScenes(64, seed=3)
    want = [i for i in range(64) if scenes[i]["label"] == 0][:5]
    assert torch.equal(circles, torch.stack([scenes[i]["image"] for i in want]))


def test_refusals_name_the_fix():
    model = Linear()
    c, r = _images(6, 1, red=0.5), _images(6, 2)
    with pytest.raises(ValueError, match="at least 2"):
        tcav.cav(model, "feat", c[:1], r)
    with pytest.raises(ValueError, match="only one class"):
        tcav.cav(model, "feat", c, c.clone())
    with pytest.raises(ValueError, match="Did you mean 'feat'"):
        tcav.cav(model, "feet", c, r)
    with pytest.raises(ValueError, match="batch dimension"):
        tcav.cav(model, "feat", c[0], r)
    with pytest.raises(ValueError, match="same"):
        tcav.cav(model, "feat", c, _images(6, 2)[..., :4])
    with pytest.raises(ValueError, match="images: .*3 channels.*alpha"):
        tcav.tcav_score(model, "feat", torch.ones(192), torch.rand(2, 4, 8, 8), 0)
    with pytest.raises(ValueError, match="random_images: .*NaN|random_images: .*finite"):
        tcav.cav(model, "feat", c, torch.full_like(r, float("nan")))
    with pytest.raises(ValueError, match="at least 2 random"):
        tcav.tcav(model, "feat", c, [r], c, 0)
    with pytest.raises(ValueError, match="class index"):
        tcav.tcav_score(model, "feat", torch.ones(192), c, 5)
    with pytest.raises(ValueError, match="unknown class"):
        tcav.tcav_score(model, "feat", torch.ones(192), c, "two")
    with pytest.raises(ValueError, match="192 activations"):
        tcav.tcav_score(model, "feat", torch.ones(10), c, 0)
    with pytest.raises(ValueError, match="unknown concept"):
        tcav.concept_images("lava", 3)
