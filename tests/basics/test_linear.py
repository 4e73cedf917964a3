"""Whitening, linear templates and GAP vs FC heads (basics.linear)."""

from __future__ import annotations

import pytest
import torch

from guidewidgets.basics import linear


def test_pca_whitening_gives_identity_covariance_and_zca_keeps_the_axes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 4, generator=g) @ torch.tensor(
        [[2.0, 0.5, 0, 0], [0, 1, 0.3, 0], [0, 0, 0.5, 0], [0, 0, 0, 3]]
    )
    w = linear.fit_whitening(x)
    assert torch.allclose(torch.cov(w.apply(x).T), torch.eye(4), atol=1e-3)
    assert torch.allclose(torch.cov(w.apply(x, zca=True).T), torch.eye(4), atol=1e-3)
    assert bool((w.variances[:-1] >= w.variances[1:]).all())
    assert w.apply(x, keep=2).shape == (500, 2)


def test_zca_is_the_symmetric_whitening():
    x = torch.randn(300, 3, generator=torch.Generator().manual_seed(1)) * torch.tensor([1.0, 2.0, 0.5])
    w = linear.fit_whitening(x)
    zca = w.components.T @ torch.diag(1 / torch.sqrt(w.variances + w.eps)) @ w.components
    assert torch.allclose(zca, zca.T, atol=1e-5)  # ZCA rotates back: a symmetric matrix


def test_fit_whitening_refuses_a_single_row():
    with pytest.raises(ValueError, match="N >= 2"):
        linear.fit_whitening(torch.zeros(1, 3))


def test_linear_scores_are_template_matches():
    x = torch.rand(60, 12)
    y = (x[:, 0] > 0.5).long()
    lin = linear.fit_linear(x, y, steps=50)
    t = linear.templates(lin, (3, 2, 2))
    assert t.shape == (2, 3, 2, 2) and float(t.min()) == 0.0 and float(t.max()) == 1.0
    assert torch.allclose(x @ lin.weight.T + lin.bias, lin(x))
    assert not lin.weight.requires_grad


def test_gap_and_fc_heads_are_trained_on_the_same_features():
    g = torch.Generator().manual_seed(2)
    f = torch.randn(64, 4, 3, 3, generator=g)
    y = (f[:, 0].mean((1, 2)) > 0).long()
    out = linear.compare_heads((f, y), (f, y), steps=300)
    assert out["gap"]["parameters"] == 4 * 2 + 2 and out["fc"]["parameters"] == 36 * 2 + 2
    assert out["gap"]["accuracy"] > 0.9  # the label is a channel mean: GAP sees it directly
