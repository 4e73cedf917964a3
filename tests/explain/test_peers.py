"""Agreement with the libraries a user would pick instead (pytorch-grad-cam, Captum) at the same
settings, on a random-weight torchvision ResNet-18 (correlation >= 0.999)."""

import copy

import numpy as np
import pytest
import torch
import torchvision

from guidewidgets import explain as E

pgc = pytest.importorskip("pytorch_grad_cam")
captum_attr = pytest.importorskip("captum.attr")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

SIZE = 96
TARGETS = [3, 7]


def random_resnet18() -> torch.nn.Module:
    """The model every peer test uses: a torchvision ResNet-18 with seeded random weights."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


resnet = pytest.fixture(scope="module", name="resnet")(random_resnet18)


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def corr(a, b) -> float:
    a, b = (v.detach() if isinstance(v, torch.Tensor) else v for v in (a, b))
    a = torch.as_tensor(np.asarray(a), dtype=torch.float64).flatten()
    b = torch.as_tensor(np.asarray(b), dtype=torch.float64).flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def plain_relus(model):
    """Captum's backward hooks need out-of-place ReLUs (same forward)."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    return m


@pytest.mark.parametrize("ours, theirs", [("grad-cam", "GradCAM"), ("grad-cam++", "GradCAMPlusPlus")])
def test_cam_family_matches_pytorch_grad_cam(resnet, x, ours, theirs):
    peer_model = copy.deepcopy(resnet)
    with getattr(pgc, theirs)(model=peer_model, target_layers=[peer_model.layer4]) as peer:
        ref = peer(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in TARGETS])
    maps = E.explain(resnet, x, ours, target=TARGETS, layer="layer4")
    for b in range(len(TARGETS)):
        # pytorch-grad-cam min-max normalises each map; correlation ignores that affine change.
        assert corr(maps[b], ref[b]) >= 0.999


def test_guided_backprop_matches_pytorch_grad_cam(resnet, x):
    # Its GuidedBackpropReLUModel handles one image and swaps the model's ReLUs: give it a copy.
    peer = pgc.GuidedBackpropReLUModel(copy.deepcopy(resnet), device="cpu")
    raw = E.guided_backprop(resnet, x, TARGETS, raw=True)
    for b, t in enumerate(TARGETS):
        ref = peer(x[b : b + 1].clone(), target_category=t)  # (H, W, 3)
        assert corr(raw[b].permute(1, 2, 0), ref) >= 0.999


@pytest.mark.parametrize(
    "ours, theirs",
    [("saliency", "Saliency"), ("guided-backprop", "GuidedBackprop"), ("deconvnet", "Deconvolution")],
)
@pytest.mark.filterwarnings("ignore:Setting backward hooks")
def test_gradient_images_match_captum(resnet, x, ours, theirs):
    peer = getattr(captum_attr, theirs)(plain_relus(resnet))
    kw = {"abs": False} if theirs == "Saliency" else {}  # the signed gradient, like raw=True
    ref = peer.attribute(x.clone().requires_grad_(True), target=TARGETS, **kw)
    raw = E.explain(resnet, x, ours, target=TARGETS, raw=True)
    maps = E.explain(resnet, x, ours, target=TARGETS)
    for b in range(len(TARGETS)):
        assert corr(raw[b], ref[b]) >= 0.999
        assert corr(maps[b], ref[b].abs().amax(0)) >= 0.999


@pytest.mark.filterwarnings("ignore:Setting backward hooks")
def test_guided_grad_cam_matches_captum(resnet, x):
    m = plain_relus(resnet)
    peer = captum_attr.GuidedGradCam(m, m.layer4)
    ref = peer.attribute(x.clone().requires_grad_(True), target=TARGETS, interpolate_mode="bilinear")
    raw = E.guided_grad_cam(resnet, x, TARGETS, layer="layer4", raw=True)
    for b in range(len(TARGETS)):
        assert corr(raw[b], ref[b]) >= 0.999


def test_grad_cam_matches_captum_layer_grad_cam(resnet, x):
    peer = captum_attr.LayerGradCam(resnet, resnet.layer4)
    ref = peer.attribute(x, target=TARGETS, relu_attributions=True)
    ref = captum_attr.LayerAttribution.interpolate(ref, (SIZE, SIZE), interpolate_mode="bilinear")[:, 0].detach()
    maps = E.grad_cam(resnet, x, TARGETS, layer="layer4")
    assert torch.allclose(maps, ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))


def test_occlusion_matches_captum(resnet, x):
    peer = captum_attr.Occlusion(resnet)
    ref = peer.attribute(
        x,
        sliding_window_shapes=(3, 24, 24),
        strides=(3, 12, 12),
        target=TARGETS,
        baselines=0.5,
        perturbations_per_eval=16,
    )
    maps = E.occlusion(resnet, x, TARGETS, window=24, stride=12, fill=0.5)
    for b in range(len(TARGETS)):
        assert corr(maps[b], ref[b, 0]) >= 0.999
    assert torch.allclose(maps, ref[:, 0], atol=1e-4 * float(ref.abs().max()))
