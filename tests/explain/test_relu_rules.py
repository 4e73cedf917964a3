"""hooks.ReLURule gives the same gradients as an independent reference (a custom autograd ReLU
per rule), keeps inplace ReLUs in place, counts ReLU calls and cleans up."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from guidewidgets import hooks
from guidewidgets.hooks import ReLURule


class _RefGuided(torch.autograd.Function):
    """Reference guided ReLU: grad * (x > 0) * (grad > 0), written out in full."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x > 0) * (g > 0)


def _ref_deconv(x: torch.Tensor) -> torch.Tensor:
    """Reference deconvnet ReLU by another mechanism than the package's (an autograd Function): the
    value relu(x) with a straight-through gradient, rectified by a tensor hook: grad * (grad > 0)."""
    y = x + (x.clamp_min(0) - x).detach()
    if y.requires_grad:
        y.register_hook(lambda g: g * (g > 0))
    return y


REFERENCE = {"guided": _RefGuided.apply, "deconv": _ref_deconv}


SPELLINGS = [nn.ReLU(inplace=True), nn.ReLU(), F.relu, torch.relu, lambda t: t.relu_(), lambda t: F.relu(t, True)]


@pytest.mark.parametrize("rule", ["guided", "deconv"])
@pytest.mark.parametrize("relu", SPELLINGS)
def test_same_gradients_as_reference_rule(rule, relu):
    torch.manual_seed(0)
    w1, w2 = torch.randn(4, 3, 3, 3), torch.randn(2, 4, 3, 3)
    x = torch.randn(2, 3, 6, 6)
    g_out = torch.randn(2, 2, 6, 6)

    def grad(ctx, act):
        xg = x.clone().requires_grad_(True)
        with ctx:
            y = F.conv2d(act(F.conv2d(xg, w1, padding=1)), w2, padding=1)
        return y, torch.autograd.grad(y, xg, g_out)[0]

    y_ref, g_ref = grad(contextlib.nullcontext(), REFERENCE[rule])
    y, g = grad(hooks.relu_backward(rule), relu)
    assert torch.equal(y, y_ref)
    assert torch.allclose(g, g_ref, atol=1e-6)
    assert torch._C._len_torch_function_stack() == 0


def test_none_rule_is_the_plain_gradient_and_counts_calls():
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3))
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    with ReLURule(None) as r:
        y = F.relu(m(x)).sum()
    assert r.calls == 2
    (g,) = torch.autograd.grad(y, x)
    (g_ref,) = torch.autograd.grad(F.relu(m(x)).sum(), x)
    assert torch.equal(g, g_ref)


def test_guided_rule_keeps_inplace_relu_in_place():
    t = torch.randn(5, requires_grad=True) * 1
    with ReLURule("guided"):
        out = F.relu(t, inplace=True)
    assert out is t


def test_unknown_rule_and_cleanup_on_error():
    with pytest.raises(ValueError, match="'guided', 'deconv' or None"):
        ReLURule("lrp")
    with pytest.raises(RuntimeError, match="boom"):
        with ReLURule("guided"):
            raise RuntimeError("boom")
    assert torch._C._len_torch_function_stack() == 0
