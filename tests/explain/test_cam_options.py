"""pytorch-grad-cam's knobs on every CAM of the base: ``eigen_smooth``, ``aug_smooth`` and several
layers agree with the peer's same knob (correlation >= 0.99; eigen_smooth up to the singular
vector's sign, which the peer leaves to LAPACK), and the identities that define them hold."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from guidewidgets import explain as E
from guidewidgets import zoo
from guidewidgets.explain.cam_base import CamCall, first_component, minmax
from tests.explain.test_cam_projections import assert_matches_up_to_sign, images, peer_run, random_net
from tests.explain.test_peers import corr

pgc = pytest.importorskip("pytorch_grad_cam")

TARGETS = [3, 7]
# Our method, the peer's class, our options that make it the peer's definition.
PEERS = [
    ("grad-cam", "GradCAM", {}),
    ("grad-cam++", "GradCAMPlusPlus", {}),
    ("layer-cam", "LayerCAM", {}),
    ("xgrad-cam", "XGradCAM", {}),
    ("hires-cam", "HiResCAM", {}),
    ("grad-cam-elementwise", "GradCAMElementWise", {}),
]
# Score-CAM runs a masked forward per channel and image: the knobs' wrapper is the same for every
# method, so its agreement is checked once, with eigen_smooth at layer2 (128 channels).
SCORE_CAM = [("score-cam", "ScoreCAM", {"layer": "layer2"})]
# (Eigen-CAM and EigenGrad-CAM are left out: the peer's sign of each copy's component is LAPACK's.)
PEERS_WITHOUT_EIGEN = [("kpca-cam", "KPCA_CAM", {})]


@pytest.fixture(scope="module")
def resnet():
    return random_net("resnet18")


@pytest.fixture(scope="module")
def x():
    return images()


def minmax_corr(ours, ref):
    return min(corr(ours[b], ref[b]) for b in range(ours.shape[0]))


@pytest.mark.parametrize("ours, theirs, opts", PEERS + SCORE_CAM)
def test_eigen_smooth_matches_pytorch_grad_cam(resnet, x, ours, theirs, opts):
    layer = opts.get("layer", "layer3")
    ref, ref_raw = peer_run(resnet, x, getattr(pgc, theirs), layer, raw=True, eigen_smooth=True)
    kw = {"target": TARGETS, "layer": layer, "eigen_smooth": True}
    raw = E.explain(resnet, x, ours, relu=False, **kw)
    assert_matches_up_to_sign(raw, E.explain(resnet, x, ours, **kw), ref_raw, ref, ours)
    assert not torch.allclose(raw, E.explain(resnet, x, ours, target=TARGETS, layer=layer, relu=False))


@pytest.mark.parametrize("ours, theirs, opts", PEERS + PEERS_WITHOUT_EIGEN)
def test_aug_smooth_matches_pytorch_grad_cam(resnet, x, ours, theirs, opts):
    """The mean over flip x brightness (0.9, 1, 1.1) of each copy's min-max normalised map."""
    ref = peer_run(resnet, x, getattr(pgc, theirs), "layer3", aug_smooth=True)
    maps = E.explain(resnet, x, ours, target=TARGETS, layer="layer3", aug_smooth=True, **opts)
    assert minmax_corr(maps, ref) >= 0.99, (ours, minmax_corr(maps, ref))
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1


@pytest.mark.parametrize("ours, theirs, opts", PEERS + PEERS_WITHOUT_EIGEN)
def test_several_layers_match_pytorch_grad_cam(resnet, x, ours, theirs, opts):
    """pytorch-grad-cam's aggregate_multi_layers: the mean of min-max normalised maps, normalised."""
    layers = ["layer2", "layer3", "layer4"]
    ref = peer_run(resnet, x, getattr(pgc, theirs), layers)
    maps = E.explain(resnet, x, ours, target=TARGETS, layer=layers, **opts)
    assert minmax_corr(maps, ref) >= 0.99, (ours, minmax_corr(maps, ref))
    torch.testing.assert_close(maps.amax((1, 2)), torch.ones(2))


def test_the_knobs_on_the_embedded_classifier():
    model = zoo.load("shapes-classifier")
    scenes = zoo.ShapeScenes(2, seed=11)
    xs = torch.stack([scenes[i]["image"] for i in range(2)])
    ys = [int(scenes[i]["label"]) for i in range(2)]
    ref = peer_run(model, xs, pgc.GradCAM, "features", ys, aug_smooth=True)
    assert minmax_corr(E.grad_cam(model, xs, ys, aug_smooth=True), ref) >= 0.99
    ref, ref_raw = peer_run(model, xs, pgc.LayerCAM, "features", ys, raw=True, eigen_smooth=True)
    raw = E.layer_cam(model, xs, ys, eigen_smooth=True, relu=False)
    assert_matches_up_to_sign(raw, E.layer_cam(model, xs, ys, eigen_smooth=True), ref_raw, ref, "layer-cam")
    two = ["features.block3", "features"]  # a middle block and the last map
    ref = peer_run(model, xs, pgc.GradCAM, two, ys)
    assert minmax_corr(E.grad_cam(model, xs, ys, layer=two), ref) >= 0.99


def test_eigen_smooth_of_rank_one_weighted_activations_is_the_plain_map():
    """A 1x1 conv without bias on a grey image gives A_k = u_k g: rank one, so w_k A_k is too and
    its first principal component is the plain map sum_k w_k A_k up to an affine change (the
    centring), with the sign that makes it positive where the plain map is."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(3)).expand(-1, 3, -1, -1).contiguous()
    for name in ("grad-cam", "cam", "xgrad-cam", "layer-cam", "hires-cam", "score-cam"):
        plain = E.explain(model, x, name, target=[0, 1], layer="0", relu=False)
        smooth = E.explain(model, x, name, target=[0, 1], layer="0", relu=False, eigen_smooth=True)
        assert all(corr(smooth[b], plain[b]) >= 0.9999 for b in range(2)), name
    # and directly: rank one in, the centred plain map out
    u, g = torch.randn(1, 5, 1, 1), torch.rand(1, 1, 6, 6)
    p = first_component(u * g)
    want = (g[:, 0] - g.mean()) * u.norm()
    torch.testing.assert_close(p, want * torch.sign(u.sum()), rtol=1e-4, atol=1e-5)


def test_one_layer_in_a_list_is_that_layers_map_normalised(resnet, x):
    one = E.grad_cam(resnet, x, TARGETS, layer="layer3")
    torch.testing.assert_close(E.grad_cam(resnet, x, TARGETS, layer=["layer3"]), minmax(one))
    torch.testing.assert_close(E.grad_cam(resnet, x, TARGETS, layer=("layer3", resnet.layer3)), minmax(one))
    # a method with passes of its own, too
    sc = E.score_cam(resnet, x, TARGETS, layer="layer3", max_channels=8)
    torch.testing.assert_close(E.score_cam(resnet, x, TARGETS, layer=["layer3"], max_channels=8), minmax(sc))


def test_aug_smooth_explains_the_clean_images_class_and_reports_progress(resnet, x):
    with torch.no_grad():
        predicted = resnet(x).argmax(1).tolist()
    torch.testing.assert_close(
        E.grad_cam(resnet, x, aug_smooth=True, layer="layer3"),
        E.grad_cam(resnet, x, predicted, aug_smooth=True, layer="layer3"),
    )
    seen: list[float] = []
    E.score_cam(resnet, x, 1, layer=["layer2", "layer3"], aug_smooth=True, max_channels=2, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) >= 12  # 2 layers x 6 copies


def test_the_default_call_is_the_method_alone(resnet, x):
    """Off (the default) both knobs leave every CAM exactly as it was."""
    for name in ("grad-cam", "layer-cam", "cam"):
        model = resnet if name != "cam" else zoo.load("shapes-classifier")
        xs = x if name != "cam" else torch.stack([zoo.ShapeScenes(2, seed=1)[i]["image"] for i in range(2)])
        a = E.explain(model, xs, name, target=1)
        torch.testing.assert_close(E.explain(model, xs, name, target=1, eigen_smooth=False, aug_smooth=False), a)
    # and the default is Grad-CAM's definition, written out here without the base
    was_training = resnet.training
    resnet.eval()
    feats: dict[str, torch.Tensor] = {}
    hook = resnet.layer4.register_forward_hook(lambda m, i, o: feats.setdefault("a", o))
    try:
        score = resnet(x)[:, 1].sum()
    finally:
        hook.remove()
        resnet.train(was_training)
    (g,) = torch.autograd.grad(score, feats["a"])
    by_hand = torch.relu((g.mean((2, 3), keepdim=True) * feats["a"]).sum(1, keepdim=True)).detach()
    by_hand = nn.functional.interpolate(by_hand, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(E.explain(resnet, x, "grad-cam", target=1, layer="layer4"), by_hand)


def test_combine_and_reduce_are_the_plain_sum_without_eigen_smooth():
    a, w = torch.randn(2, 4, 3, 3), torch.randn(2, 4)
    c = CamCall(nn.Identity(), a, None, "", None, None)  # type: ignore[arg-type]
    torch.testing.assert_close(c.combine(w, a), torch.einsum("bc,bchw->bhw", w, a))
    by_loop = sum(w[:, k, None, None] * a[:, k] for k in range(a.shape[1]))  # the sum over k, spelt out
    torch.testing.assert_close(c.combine(w, a), by_loop)
    torch.testing.assert_close(c.reduce(a), a.sum(1))


def test_bad_knobs_are_refused_with_a_sentence(resnet, x):
    with pytest.raises(ValueError, match=r"layer=\[\] names no layer"):
        E.grad_cam(resnet, x, layer=[])
    with pytest.raises(ValueError, match="No layer named 'layer9'.*Did you mean"):
        E.grad_cam(resnet, x, layer=["layer3", "layer9"])
    with pytest.raises(TypeError, match="eigen_smooth must be True or False"):
        E.grad_cam(resnet, x, eigen_smooth=1)
    with pytest.raises(TypeError, match="aug_smooth must be True or False"):
        E.grad_cam(resnet, x, aug_smooth="yes")
    for name in ("eigen-cam", "kpca-cam", "eigengrad-cam", "augmented-grad-cam"):
        with pytest.raises(ValueError, match="does not build its map from channel weights.*'eigen-cam'"):
            E.explain(resnet, x, name, layer="layer3", eigen_smooth=True, **E.method_info(name).quick)
