"""Superpixel methods (feature ablation, Shapley value sampling, KernelSHAP, LIME): the identities
they must satisfy, agreement with Captum's implementations, and refusals of bad input."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from guidewidgets import zoo
from guidewidgets.explain import superpixel_methods as S
from guidewidgets.explain.superpixels import superpixels

captum_attr = pytest.importorskip("captum.attr")


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten().double(), b.flatten().double()]))[0, 1])


def grid_mask(h: int, w: int, rows: int, cols: int) -> torch.Tensor:
    """(h, w) labels of a rows x cols grid of blocks."""
    r = torch.arange(h)[:, None] * rows // h
    c = torch.arange(w)[None, :] * cols // w
    return r * cols + c


def per_superpixel(m: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The value of each superpixel of one map (labels 0..S-1)."""
    n = int(labels.max()) + 1
    return torch.stack([m[labels == s][0] for s in range(n)])


def exact_shapley(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, cls: int) -> torch.Tensor:
    """Shapley values of the superpixels by the subset formula (baseline 0): the reference."""
    n = int(labels.max()) + 1
    subsets = list(itertools.product([0, 1], repeat=n))
    keep = torch.tensor(subsets, dtype=x.dtype)[:, labels]  # (2^n, H, W)
    with torch.no_grad():
        scores = model(x * keep[:, None])[:, cls].double()
    v = dict(zip(subsets, scores.tolist(), strict=True))
    phi = torch.zeros(n, dtype=torch.float64)
    for z in subsets:
        k = sum(z)
        for s in range(n):
            if not z[s]:
                weight = math.factorial(k) * math.factorial(n - k - 1) / math.factorial(n)
                phi[s] += weight * (v[z[:s] + (1,) + z[s + 1 :]] - v[z])
    return phi


@pytest.fixture(scope="module")
def classifier() -> nn.Module:
    return zoo.load("shapes-classifier").eval()


@pytest.fixture(scope="module")
def scenes() -> torch.Tensor:
    sc = zoo.ShapeScenes(2, seed=123)
    return torch.stack([sc[i]["image"] for i in range(2)])


def test_feature_ablation_equals_captum_exactly(classifier, scenes):
    labels, _ = superpixels(scenes)
    cls = classifier(scenes).argmax(1)
    ref = captum_attr.FeatureAblation(classifier).attribute(
        scenes, target=cls, feature_mask=labels[:, None].repeat(1, 3, 1, 1), baselines=0.0
    )[:, 0]
    ours = S.feature_ablation(classifier, scenes, feature_mask=labels)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", [S.shapley_sampling, S.kernel_shap])
def test_values_sum_to_the_score_gain_over_the_baseline(classifier, scenes, method):
    """Efficiency: the superpixels' values add up to score(x) - score(baseline), for every sample."""
    labels, counts = superpixels(scenes)
    maps = method(classifier, scenes, baseline=0.25)
    with torch.no_grad():
        out = classifier(scenes)
        cls = out.argmax(1)
        gain = out[torch.arange(2), cls] - classifier(torch.full_like(scenes, 0.25))[torch.arange(2), cls]
    for i in range(2):
        assert counts[i] >= 2
        assert float(per_superpixel(maps[i], labels[i]).sum()) == pytest.approx(float(gain[i]), abs=1e-3)


def test_kernel_shap_with_few_superpixels_is_the_exact_shapley_value(classifier, scenes):
    x = scenes[:1]
    labels = grid_mask(96, 96, 2, 3)
    cls = int(classifier(x).argmax(1))
    exact = exact_shapley(classifier, x, labels, cls)
    ours = per_superpixel(S.kernel_shap(classifier, x, feature_mask=labels)[0], labels)
    torch.testing.assert_close(ours.double(), exact, atol=1e-3, rtol=1e-3)
    # Shapley value sampling and Captum's estimators converge to the same values
    sampled = per_superpixel(S.shapley_sampling(classifier, x, feature_mask=labels, samples=100)[0], labels)
    assert corr(sampled, exact) >= 0.99
    mask = labels[None, None].repeat(1, 3, 1, 1)
    torch.manual_seed(0)
    theirs = captum_attr.ShapleyValueSampling(classifier).attribute(
        x, target=cls, feature_mask=mask, n_samples=100, perturbations_per_eval=50
    )
    assert corr(per_superpixel(theirs[0, 0], labels), exact) >= 0.99
    theirs = captum_attr.KernelShap(classifier).attribute(
        x, target=cls, feature_mask=mask, n_samples=300, perturbations_per_eval=100
    )
    assert corr(per_superpixel(theirs[0, 0], labels), exact) >= 0.99


def test_lime_recovers_a_model_linear_in_the_superpixels():
    """On a model whose score is linear in which superpixels are kept, LIME's weights are that model's."""
    labels = grid_mask(8, 8, 2, 4)
    coef = torch.tensor([3.0, -1.0, 0.5, 2.0, 0.0, -2.5, 1.0, 4.0])

    class Linear(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            kept = torch.stack([x[:, 0][:, labels == s].mean(1) for s in range(8)], 1)
            return (kept * coef).sum(1, keepdim=True)

    x = torch.ones(1, 1, 8, 8)
    maps = S.lime(Linear(), x, target=0, feature_mask=labels, alpha=0.0, samples=300)
    torch.testing.assert_close(per_superpixel(maps[0], labels), coef, atol=1e-4, rtol=1e-4)


def test_lime_matches_captum_lime_at_the_same_settings(classifier, scenes):
    """Captum's Lime given LIME's own kernel and ridge: the same estimator, other random draws."""
    from captum._utils.models.linear_model import SkLearnRidge

    x = scenes[:1]
    labels, counts = superpixels(x)
    cls = int(classifier(x).argmax(1))

    def similarity(original, perturbed, interpretable, **kwargs):
        kept = interpretable.double().sum()
        d = 1 - kept.sqrt() / math.sqrt(counts[0])
        return float(torch.exp(-(d**2) / 0.25**2).sqrt())

    def perturb(original, **kwargs):
        return torch.bernoulli(torch.full((1, counts[0]), 0.5))

    lime = captum_attr.Lime(
        classifier, interpretable_model=SkLearnRidge(alpha=1.0), similarity_func=similarity, perturb_func=perturb
    )
    torch.manual_seed(0)
    theirs = lime.attribute(
        x, target=cls, feature_mask=labels[:, None].repeat(1, 3, 1, 1), n_samples=3000, perturbations_per_eval=100
    )
    ours = S.lime(classifier, x, feature_mask=labels, samples=3000)
    assert corr(per_superpixel(ours[0], labels[0]), per_superpixel(theirs[0, 0], labels[0])) >= 0.99


@pytest.mark.parametrize(
    "arch", ["resnet18", "vgg11", "mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf", "shufflenet_v2_x0_5"]
)
def test_feature_ablation_equals_captum_and_kernel_shap_the_exact_value_on_torchvision(arch):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    labels = grid_mask(64, 64, 2, 3)
    mask = labels[None, None].repeat(1, 3, 1, 1)
    ref = captum_attr.FeatureAblation(model).attribute(x, target=3, feature_mask=mask, perturbations_per_eval=6)[:, 0]
    torch.testing.assert_close(S.feature_ablation(model, x, target=3, feature_mask=labels), ref, atol=1e-4, rtol=1e-3)
    ours = per_superpixel(S.kernel_shap(model, x, target=3, feature_mask=labels)[0], labels)
    torch.testing.assert_close(ours.double(), exact_shapley(model, x, labels, 3), atol=1e-4, rtol=1e-3)


def test_a_sample_is_the_same_alone_or_in_a_batch(classifier, scenes):
    both = S.kernel_shap(classifier, scenes, samples=64)
    alone = S.kernel_shap(classifier, scenes[1:], samples=64)
    torch.testing.assert_close(both[1], alone[0], atol=1e-4, rtol=1e-4)


def test_bad_input_is_refused_with_a_sentence(classifier, scenes):
    with pytest.raises(ValueError, match="single superpixel"):
        S.lime(classifier, scenes, segmenter=lambda img: np.zeros(img.shape[:2], dtype=int))
    with pytest.raises(ValueError, match="baseline must be"):
        S.kernel_shap(classifier, scenes, baseline=torch.zeros(5))
    with pytest.raises(ValueError, match="feature_mask must have shape"):
        S.feature_ablation(classifier, scenes, feature_mask=torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        S.feature_ablation(classifier, scenes, feature_mask=torch.zeros(96, 96))
    with pytest.raises(ValueError, match="integer labels"):
        S.lime(classifier, scenes, segmenter=lambda img: np.zeros((3, 3), dtype=int))
    with pytest.raises(ValueError, match="samples must be"):
        S.shapley_sampling(classifier, scenes, samples=0)
    with pytest.raises(ValueError, match="kernel_width"):
        S.lime(classifier, scenes, kernel_width=float("nan"))
