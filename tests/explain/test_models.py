"""Every method works unchanged on the common torchvision classifiers (random weights, small
inputs), including their inplace ReLUs, and leaves each model exactly as it was."""

import inspect

import pytest
import torch
import torchvision

from guidewidgets import explain as E

# Methods for any CNN (attention rollout needs a transformer: tests/explain/test_transformers.py).
CNN_METHODS = [m for m in E.methods() if E.method_info(m).family != "attention"]

# Which architectures end in global average pooling + one nn.Linear (CAM applies).
ARCHS = {
    "resnet18": True,
    "vgg11": False,
    "densenet121": True,  # relu(features) -> pool -> linear: CAM on relu(A)
    "mobilenet_v2": True,
    "mobilenet_v3_small": False,  # linear -> hardswish -> linear
    "efficientnet_b0": True,
    "convnext_tiny": False,  # LayerNorm between pool and linear
}


# LRP has rules for ReLU nets only (as Captum's); ReLU6, Hardswish, SiLU, GELU and LayerNorm are
# refused with a sentence rather than given a made-up rule.
LRP_REFUSES = {"mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny"}


def snapshot(model):
    # Why versions, not copies: VGG's weights are half a GB; any in-place write bumps a tensor's
    # version counter and any replacement changes its storage.
    return (
        {k: (v.data_ptr(), v._version, v.dtype, v.shape) for k, v in model.state_dict().items()},
        [
            (n, type(m), m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks), dict(m._backward_hooks))
            for n, m in model.named_modules()
        ],
        [(n, p.requires_grad, p.grad) for n, p in model.named_parameters()],
        [getattr(m, "inplace", None) for m in model.modules()],
    )


def same(a, b):
    sd_a, mods_a, params_a, inplace_a = a
    sd_b, mods_b, params_b, inplace_b = b
    return sd_a == sd_b and mods_a == mods_b and params_a == params_b and inplace_a == inplace_b


@pytest.mark.parametrize("arch", list(ARCHS))
def test_all_methods_on_torchvision_classifiers(arch):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    for name in CNN_METHODS:
        if name == "cam" and not ARCHS[arch]:
            with pytest.raises(ValueError, match="grad-cam"):
                E.cam(model, x)
            continue
        if name == "lrp" and arch in LRP_REFUSES:
            with pytest.raises(TypeError, match="LRP has no rule for module"):
                E.explain(model, x, name)
            continue
        maps = E.explain(model, x, name, **E.method_info(name).quick)
        assert maps.shape == (2, 64, 64), name
        assert torch.isfinite(maps).all(), name
        nonzero = maps.abs().amax((1, 2)).gt(0)
        if not nonzero.all() and "relu" in inspect.signature(E.method_function(name)).parameters:
            # A rectified CAM is all zero when a random net's evidence for the class is all
            # negative; the map before the ReLU must still carry something.
            nonzero = E.explain(model, x, name, relu=False, **E.method_info(name).quick).abs().amax((1, 2)).gt(0)
        assert nonzero.all(), name
        if not E.method_info(name).signed:
            assert (maps >= 0).all(), name
    assert same(before, snapshot(model))
    assert torch._C._len_torch_function_stack() == 0
