"""Vision Transformers (torchvision vit_b_16, swin_t; random weights): token outputs laid on their
patch grid, a default layer whose maps are not trivial, agreement with pytorch-grad-cam's
documented ViT recipe, a ``reshape=`` option for custom layouts, and attention rollout."""

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from guidewidgets import explain as E
from guidewidgets import hooks

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from tests.helpers import hook_count  # noqa: E402

SIZE = 112  # 7 x 7 patches of 16 px: the architecture of vit_b_16 at a CI-sized input


def corr(a, b) -> float:
    a = torch.as_tensor(np.asarray(a.detach() if isinstance(a, torch.Tensor) else a), dtype=torch.float64).flatten()
    b = torch.as_tensor(np.asarray(b.detach() if isinstance(b, torch.Tensor) else b), dtype=torch.float64).flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def vit(image_size: int) -> nn.Module:
    torch.manual_seed(0)
    m = torchvision.models.vit_b_16(weights=None, image_size=image_size, num_classes=10).eval()
    # torchvision zero-initialises the head: every logit would be 0 and every gradient too.
    nn.init.normal_(m.heads.head.weight, std=0.02)
    return m


@pytest.fixture(scope="module")
def vit_small():
    return vit(SIZE)


@pytest.fixture(scope="module")
def swin():
    torch.manual_seed(0)
    return torchvision.models.swin_t(weights=None, num_classes=10).eval()


def test_vit_tokens_are_maps_on_the_patch_grid(vit_small):
    x = torch.rand(1, 3, SIZE, SIZE)
    maps = dict(hooks.feature_maps(vit_small, x))
    assert maps["conv_proj"] == (768, 7, 7)
    assert maps["encoder.layers.encoder_layer_5"] == (768, 7, 7)  # 50 tokens: class token dropped
    # The prediction reads the class token only: the default is the last block's first LayerNorm.
    assert hooks.last_conv_layer(vit_small, x) == "encoder.layers.encoder_layer_11.ln_1"
    assert hook_count(vit_small) == 0


def test_swin_channels_last_maps(swin):
    x = torch.rand(1, 3, 224, 224)
    maps = hooks.feature_maps(swin, x)
    shapes = dict(maps)
    assert shapes["features.0"] == (96, 56, 56)  # (B, 56, 56, 96) channels-last, read as (C, h, w)
    assert maps[-1].shape == (768, 7, 7)


@pytest.mark.parametrize("name", ["grad-cam", "grad-cam++", "saliency", "guided-grad-cam", "attention-rollout"])
def test_vit_maps_are_right_shape_finite_and_not_constant(vit_small, name):
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in vit_small.state_dict().items()}
    maps = E.explain(vit_small, x, name)
    assert maps.shape == (2, SIZE, SIZE)
    assert torch.isfinite(maps).all()
    assert (maps.flatten(1).std(1) > 1e-3 * maps.abs().flatten(1).amax(1)).all()  # not constant
    assert hook_count(vit_small) == 0
    assert all(torch.equal(v, vit_small.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("name", ["grad-cam", "grad-cam++", "saliency"])
def test_swin_maps_are_right_shape_finite_and_not_constant(swin, name):
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    maps = E.explain(swin, x, name)
    assert maps.shape == (1, 224, 224)
    assert torch.isfinite(maps).all()
    assert maps.std() > 1e-3 * maps.abs().max()
    assert hook_count(swin) == 0


def test_vit_grad_cam_agrees_with_pytorch_grad_cam():
    """pytorch-grad-cam's ViT tutorial: target layer blocks[-1].norm1 and this reshape_transform."""
    model = vit(224)
    # One image, two classes. With random weights most classes' Grad-CAM is all negative, hence 0
    # after the ReLU (in both libraries); these two have positive evidence (checked below).
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).expand(2, -1, -1, -1)
    targets = [1, 7]

    def reshape_transform(tensor, height=14, width=14):
        result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
        result = result.transpose(2, 3).transpose(1, 2)
        return result

    peer_model = copy.deepcopy(model)
    layer = peer_model.encoder.layers[-1].ln_1
    with pgc.GradCAM(model=peer_model, target_layers=[layer], reshape_transform=reshape_transform) as peer:
        ref = peer(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    maps = E.grad_cam(model, x, targets)  # the default layer is the same one
    assert (maps.flatten(1).amax(1) > 0).all()
    for b in range(2):
        assert corr(maps[b], ref[b]) >= 0.99


def test_reshape_option_for_a_custom_token_layout(vit_small):
    """A layout the automatic grid cannot know: tokens given back to front."""
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    layer = "encoder.layers.encoder_layer_11.ln_1"
    auto = E.grad_cam(vit_small, x, 3, layer=layer)

    def grid(t):
        return t[:, 1:].reshape(t.shape[0], 7, 7, t.shape[2]).permute(0, 3, 1, 2)

    explicit = E.grad_cam(vit_small, x, 3, layer=layer, reshape=grid)
    assert torch.allclose(auto, explicit)
    flipped = E.grad_cam(vit_small, x, 3, layer=layer, reshape=lambda t: grid(t).flip(-1))
    assert torch.allclose(flipped, explicit.flip(-1), atol=1e-6 * float(explicit.abs().max()))
    with pytest.raises(TypeError, match="reshape must be a callable"):
        E.grad_cam(vit_small, x, 3, layer=layer, reshape="tokens")
    with pytest.raises(ValueError, match="reshape=callable"):
        E.grad_cam(vit_small, x, 3, layer=layer, reshape=lambda t: t)  # still (B, N, D)


def reference_rollout(model, x):
    """Rollout from the model's own parts, calling each attention with need_weights=True."""
    with torch.no_grad():
        tokens = model._process_input(x)
        tokens = torch.cat([model.class_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        h = tokens + model.encoder.pos_embedding
        n = h.shape[1]
        r = torch.eye(n, dtype=torch.float64).expand(x.shape[0], n, n)
        for block in model.encoder.layers:
            y = block.ln_1(h)
            att, w = block.self_attention(y, y, y, need_weights=True)
            a = 0.5 * w.double() + 0.5 * torch.eye(n, dtype=torch.float64)
            r = (a / a.sum(-1, keepdim=True)) @ r
            h = h + att
            h = h + block.mlp(block.ln_2(h))
    return r[:, 0, 1:].reshape(x.shape[0], 7, 7)


def test_attention_rollout_equals_a_reference_and_leaves_the_model_alone(vit_small):
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    maps = E.explain(vit_small, x, "attention-rollout")
    ref = torch.nn.functional.interpolate(
        reference_rollout(vit_small, x)[:, None].float(), size=(SIZE, SIZE), mode="bilinear", align_corners=False
    )[:, 0]
    assert torch.allclose(maps, ref, rtol=1e-4, atol=1e-7)
    assert hook_count(vit_small) == 0
    # class-agnostic: the same map for any target; a bad target is still refused
    assert torch.equal(E.explain(vit_small, x, "attention-rollout", target=[1, 2]), maps)
    with pytest.raises(ValueError, match="one per sample"):
        E.explain(vit_small, x, "attention-rollout", target=[1, 2, 3])
    with pytest.raises(ValueError, match="head_fusion"):
        E.explain(vit_small, x, "attention-rollout", head_fusion="median")
    assert not torch.equal(E.explain(vit_small, x, "attention-rollout", head_fusion="max"), maps)


def test_attention_rollout_refuses_cnns_and_swin(swin):
    with pytest.raises(ValueError, match="MultiheadAttention"):
        E.explain(swin, torch.rand(1, 3, 224, 224), "attention-rollout")
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="grad-cam"):
        E.explain(cnn, torch.rand(1, 3, 8, 8), "attention-rollout")
