"""Guided backprop and deconvnet beyond ReLU: ReLU6, LeakyReLU, ELU and the smooth ReLUs (SiLU,
GELU, Hardswish, Mish) get the documented gating; a net without any of them warns that the
result is the plain gradient."""

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from guidewidgets import explain as E
from guidewidgets import hooks

ACTIVATIONS = {
    "relu6": nn.ReLU6(inplace=True),
    "hardtanh": nn.Hardtanh(0.0, 6.0),
    "leaky_relu": nn.LeakyReLU(0.1, inplace=True),
    "elu": nn.ELU(),
    "silu": nn.SiLU(inplace=True),
    "gelu": nn.GELU(),
    "gelu_tanh": nn.GELU(approximate="tanh"),
    "hardswish": nn.Hardswish(),
    "mish": nn.Mish(),
    "functional_silu": F.silu,
}


def local_grad(act, z):
    """f'(z) elementwise, from a plain autograd pass on a copy."""
    zz = z.detach().clone().requires_grad_(True)
    (d,) = torch.autograd.grad(act(zz * 1).sum(), zz)
    return d


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_guided_and_deconv_rules_for_each_activation(name):
    act = ACTIVATIONS[name]
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3)
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    z = F.conv2d(x.detach(), w, padding=1)
    g_out = torch.randn_like(z)
    expected_y = act(z.clone())
    d = local_grad(act, z)

    for rule, g_z in (
        ("guided", d * g_out.clamp_min(0) * (z > 0)),  # f'(z) * max(g, 0) * [z > 0]
        ("deconv", g_out.clamp_min(0)),  # the rectified gradient, whatever z was
    ):
        with hooks.relu_backward(rule) as r:
            y = act(F.conv2d(x, w, padding=1))
        assert r.calls == 1
        assert torch.allclose(y, expected_y, atol=1e-6)  # the forward is unchanged
        (g,) = torch.autograd.grad(y, x, g_out)
        ref = torch.nn.grad.conv2d_input(x.shape, w, g_z, padding=1)
        assert torch.allclose(g, ref, atol=1e-5), rule
    assert torch._C._len_torch_function_stack() == 0


def test_inplace_activation_keeps_its_flag_and_the_model_output():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SiLU(inplace=True), nn.Conv2d(4, 2, 3), nn.ReLU6(inplace=True))
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        plain = net(x)
    for rule in ("guided", "deconv"):
        with hooks.relu_backward(rule), torch.enable_grad():
            out = net(x.requires_grad_(True))
        assert torch.allclose(out, plain)
    assert net[1].inplace and net[3].inplace


@pytest.mark.parametrize("arch", ["mobilenet_v2", "efficientnet_b0", "convnext_tiny"])
def test_guided_backprop_differs_from_saliency_on_modern_nets(arch):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "layer_scale"):
                # ConvNeXt starts its residual branches at 1e-6 (layer scale): the GELUs would carry
                # nothing and any rule would change nothing. Trained nets have scales near 1.
                m.layer_scale.fill_(1.0)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # these nets have ReLU-family activations: no warning
        guided = E.explain(model, x, "guided-backprop", target=3, raw=True)
        deconv = E.explain(model, x, "deconvnet", target=3, raw=True)
    plain = E.explain(model, x, "saliency", target=3, raw=True)
    for other in (guided, deconv):
        assert torch.isfinite(other).all() and other.abs().amax() > 0
        rel = (other - plain).norm() / plain.norm()
        print(f"{arch}: |rule - saliency| / |saliency| = {rel:.3f}")
        assert rel > 0.1, f"{arch}: the rule changed the gradient by only {rel:.3f}"


def test_no_activation_warns_that_the_result_is_saliency():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.rand(1, 3, 8, 8)
    for name in ("guided-backprop", "deconvnet", "guided-grad-cam"):
        with pytest.warns(UserWarning, match="equals 'saliency'"):
            E.explain(net, x, name, target=0)
    with pytest.warns(UserWarning, match="equals 'saliency'"):
        guided = E.explain(net, x, "guided-backprop", target=0, raw=True)
    assert torch.allclose(guided, E.explain(net, x, "saliency", target=0, raw=True))


def test_reference_lines_document_the_rule():
    for name in ("guided-backprop", "deconvnet"):
        summary = E.method_info(name).summary
        assert "SiLU" in summary and "GELU" in summary and "warning" in summary
