"""The newer CAMs and the path attributions agree with pytorch-grad-cam and Captum at the same
settings on a random-weight torchvision ResNet-18 (correlation >= 0.999), and the identities that
define them hold."""

import copy

import pytest
import torch

from guidewidgets import explain as E
from guidewidgets import zoo

pgc = pytest.importorskip("pytorch_grad_cam")
captum_attr = pytest.importorskip("captum.attr")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection  # noqa: E402

from tests.explain.test_peers import corr, random_resnet18  # noqa: E402  (one model and correlation for every peer test)

SIZE = 64
TARGETS = [3, 7]


resnet = pytest.fixture(scope="module", name="resnet")(random_resnet18)


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def peer_maps(resnet, x, cls, layer="layer3", **kw):
    peer_model = copy.deepcopy(resnet)
    with cls(model=peer_model, target_layers=[getattr(peer_model, layer)], **kw) as peer:
        return peer(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in TARGETS])


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ("layer-cam", "LayerCAM"),
        ("xgrad-cam", "XGradCAM"),
        ("hires-cam", "HiResCAM"),
        ("score-cam", "ScoreCAM"),
        ("ablation-cam", "AblationCAM"),
    ],
)
def test_cams_match_pytorch_grad_cam(resnet, x, ours, theirs):
    ref = peer_maps(resnet, x, getattr(pgc, theirs))
    maps = E.explain(resnet, x, ours, target=TARGETS, layer="layer3")
    for b in range(len(TARGETS)):
        # pytorch-grad-cam min-max normalises each map; correlation ignores that affine change.
        assert corr(maps[b], ref[b]) >= 0.999, (ours, b, corr(maps[b], ref[b]))


def test_eigen_cam_matches_pytorch_grad_cam_up_to_the_svd_sign(resnet, x):
    """A singular vector's sign is arbitrary (ours follows the activations' sum, theirs LAPACK's
    choice): the unrectified projections agree up to sign, and the maps agree where signs do."""
    acts = {}
    handle = resnet.layer3.register_forward_hook(lambda m, a, o: acts.update(a=o.detach()))
    with torch.no_grad():
        resnet(x)
    handle.remove()
    theirs = torch.as_tensor(get_2d_projection(acts["a"].numpy()))
    ours = E.eigen_cam(resnet, x, layer="layer3", relu=False)
    up = E.layers.upsample(theirs, x)
    ref = peer_maps(resnet, x, pgc.EigenCAM)
    maps = E.eigen_cam(resnet, x, layer="layer3")
    for b in range(2):
        r = corr(ours[b], up[b])
        assert abs(r) >= 0.999
        if r > 0:
            assert corr(maps[b], ref[b]) >= 0.999
        # our sign: the map follows where the layer fires
        total = E.layers.upsample(acts["a"].sum(1), x)[b]
        assert corr(ours[b], total) > 0


@pytest.mark.filterwarnings("ignore:Setting backward hooks")
def test_integrated_gradients_and_gradient_x_input_match_captum(resnet, x):
    ig = captum_attr.IntegratedGradients(resnet)
    ref = ig.attribute(x.clone(), target=TARGETS, n_steps=16, baselines=0.2)
    raw = E.integrated_gradients(resnet, x, TARGETS, raw=True, steps=16, baseline=0.2)
    gxi = captum_attr.InputXGradient(resnet).attribute(x.clone().requires_grad_(True), target=TARGETS)
    ours = E.gradient_x_input(resnet, x, TARGETS, raw=True)
    for b in range(2):
        assert corr(raw[b], ref[b]) >= 0.999
        assert corr(ours[b], gxi[b]) >= 0.999
    # the maps are the attributions summed over colour channels (signed)
    assert torch.allclose(E.integrated_gradients(resnet, x, TARGETS, steps=16, baseline=0.2), raw.sum(1))
    assert torch.allclose(E.gradient_x_input(resnet, x, TARGETS), ours.sum(1))


def test_integrated_gradients_completeness():
    """sum of attributions = score(x) - score(baseline), to 1e-3 relative with enough steps, on a
    trained network with biases (the random ResNet is positively homogeneous: too easy)."""
    model = zoo.load("shapes-classifier")
    scenes = zoo.ShapeScenes(2, seed=11)
    xs = torch.stack([scenes[i]["image"] for i in range(2)])
    ys = [scenes[i]["label"] for i in range(2)]
    with torch.no_grad():
        f = model(xs)[range(2), ys] - model(torch.full_like(xs, 0.5))[range(2), ys]
    maps = E.integrated_gradients(model, xs, ys, steps=256, baseline=0.5)
    gap = (maps.sum((1, 2)) - f).abs()
    assert (gap <= 1e-3 * f.abs()).all(), gap / f.abs()
    few = E.integrated_gradients(model, xs, ys, steps=2, baseline=0.5, rule="riemann_right")
    assert ((few.sum((1, 2)) - f).abs() > gap).all()  # so the check above can fail


def test_hires_cam_equals_grad_cam_on_a_gap_linear_head():
    """With GAP + linear, dy/dA = w_c / (hw) everywhere: both maps are sum_k w_ck A_k / (hw)."""
    model = zoo.load("shapes-classifier")
    scenes = zoo.ShapeScenes(6, seed=11)
    xs = torch.stack([scenes[i]["image"] for i in range(6)])
    h, g = E.hires_cam(model, xs, relu=False), E.grad_cam(model, xs, relu=False)
    assert torch.allclose(h, g, rtol=1e-4, atol=1e-5 * float(g.abs().max()))
    # and the CAM, too (layer "features" feeds the GAP): same up to the pixel count 12 x 12
    c = E.cam(model, xs, relu=False)
    assert torch.allclose(c, 144 * h, rtol=1e-4, atol=1e-4 * float(c.abs().max()))


def test_sharpen_focus_is_grad_cam_with_positive_gradients(resnet, x):
    """w_k = mean ReLU(dy/dA_k): equals Grad-CAM where every gradient is >= 0 (a GAP-linear head
    with non-negative weights), and differs from Grad-CAM on a real network."""
    sf = E.sharpen_focus(resnet, x, TARGETS, layer="layer3")
    gc = E.grad_cam(resnet, x, TARGETS, layer="layer3")
    assert not torch.allclose(sf, gc)
    model = copy.deepcopy(zoo.load("shapes-classifier"))
    with torch.no_grad():
        model.fc.weight.abs_()
    xs = torch.stack([zoo.ShapeScenes(2, seed=3)[i]["image"] for i in range(2)])
    assert torch.allclose(E.sharpen_focus(model, xs), E.grad_cam(model, xs))


def test_path_attribution_errors_name_the_fix(resnet, x):
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        E.integrated_gradients(resnet, x, TARGETS, steps=0)
    with pytest.raises(ValueError, match="needs steps >= 2"):
        E.integrated_gradients(resnet, x, TARGETS, steps=1, rule="riemann_trapezoid")
    with pytest.raises(ValueError, match="unknown integration rule"):
        E.integrated_gradients(resnet, x, TARGETS, rule="simpson")
    with pytest.raises(ValueError, match="baseline tensor must have the image's shape"):
        E.integrated_gradients(resnet, x, TARGETS, baseline=torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="one per colour channel"):
        E.integrated_gradients(resnet, x, TARGETS, baseline=[0.1, 0.2])
    # one step of Gauss-Legendre is the midpoint rule: the gradient at the path's middle
    mid = E.saliency(resnet, 0.5 * x, TARGETS, raw=True)
    assert torch.allclose(E.integrated_gradients(resnet, x, TARGETS, steps=1, raw=True), mid * x, atol=1e-6)
