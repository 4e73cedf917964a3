"""EigenGrad-CAM, KPCA-CAM and Grad-CAM element-wise agree with pytorch-grad-cam's EigenGradCAM,
KPCA_CAM and GradCAMElementWise on 8 random-weight torchvision architectures and the embedded
classifier (correlation >= 0.99; EigenGrad-CAM up to the singular vector's sign, which the peer
leaves to LAPACK), and the identities that define them hold."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision.models as tvm

from guidewidgets import explain as E
from guidewidgets import hooks, zoo
from guidewidgets.explain.cam_projections import KERNELS, kernel_pca
from guidewidgets.explain.layers import recording, upsample
from tests.explain.peer_nets import cam_layers, random_net
from tests.explain.test_peers import corr

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

SIZE = 64
TARGETS = [3, 7]

ARCHS = cam_layers(0)  # architecture -> layer (why those layers: tests.explain.peer_nets)


def images(n: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def peer_run(model, x, cls, layers, targets=TARGETS, *, raw=False, **call):
    """pytorch-grad-cam's maps (B, H, W) on a copy of ``model``; with ``raw`` also its unrectified
    (B, h, w) map of the first layer (``get_cam_image``), upsampled as ours."""
    peer_model = copy.deepcopy(model)
    layer_list = [hooks.get_layer(peer_model, n) for n in ([layers] if isinstance(layers, str) else layers)]
    with cls(model=peer_model, target_layers=layer_list) as peer:
        peer_targets = [ClassifierOutputTarget(t) for t in targets]
        maps = peer(input_tensor=x, targets=peer_targets, **call)
        if not raw:
            return maps
        ag = peer.activations_and_grads
        grads = ag.gradients[0].numpy() if ag.gradients else None
        image = peer.get_cam_image(
            x, layer_list[0], peer_targets, ag.activations[0].numpy(), grads, call.get("eigen_smooth", False)
        )
    return maps, upsample(torch.as_tensor(np.asarray(image, dtype=np.float32)), x)


def assert_matches_up_to_sign(ours_raw, ours, ref_raw, ref, name):
    """The unrectified maps agree up to sign; where the signs agree, so do the final maps."""
    for b in range(ours.shape[0]):
        r = corr(ours_raw[b], ref_raw[b])
        assert abs(r) >= 0.999, (name, b, r)
        if r > 0:
            assert corr(ours[b], ref[b]) >= 0.99, (name, b, corr(ours[b], ref[b]))


@pytest.mark.parametrize("arch", list(ARCHS))
def test_new_cams_match_pytorch_grad_cam(arch):
    model, layer, x = random_net(arch), ARCHS[arch], images()
    for ours, theirs in [("grad-cam-elementwise", pgc.GradCAMElementWise), ("kpca-cam", pgc.KPCA_CAM)]:
        ref = peer_run(model, x, theirs, layer)
        maps = E.explain(model, x, ours, target=TARGETS, layer=layer)
        for b in range(len(TARGETS)):
            assert corr(maps[b], ref[b]) >= 0.99, (arch, ours, b, corr(maps[b], ref[b]))
    ref, ref_raw = peer_run(model, x, pgc.EigenGradCAM, layer, raw=True)
    raw = E.eigengrad_cam(model, x, TARGETS, layer=layer, relu=False)
    assert_matches_up_to_sign(raw, E.eigengrad_cam(model, x, TARGETS, layer=layer), ref_raw, ref, arch)
    # our sign: the map follows HiResCAM's sum_k A_k dy/dA_k
    hires = E.hires_cam(model, x, TARGETS, layer=layer, relu=False)
    assert all(corr(raw[b], hires[b]) > 0 for b in range(2))


def test_new_cams_match_pytorch_grad_cam_on_the_embedded_classifier():
    model = zoo.load("shapes-classifier")
    scenes = zoo.ShapeScenes(3, seed=11)
    x = torch.stack([scenes[i]["image"] for i in range(3)])
    targets = [int(scenes[i]["label"]) for i in range(3)]
    for ours, theirs in [("grad-cam-elementwise", pgc.GradCAMElementWise), ("kpca-cam", pgc.KPCA_CAM)]:
        ref = peer_run(model, x, theirs, "features", targets)
        maps = E.explain(model, x, ours, target=targets)  # the model's default layer: "features"
        assert min(corr(maps[b], ref[b]) for b in range(3)) >= 0.99, ours
    ref, ref_raw = peer_run(model, x, pgc.EigenGradCAM, "features", targets, raw=True)
    raw = E.eigengrad_cam(model, x, targets, relu=False)
    assert_matches_up_to_sign(raw, E.eigengrad_cam(model, x, targets), ref_raw, ref, "shapes-classifier")


def test_kpca_cam_keeps_float64_precision_where_the_peer_rounds():
    """A random EfficientNet's early activations are ~3e-4, so the sigmoid kernel tanh(<a, b>/C + 1)
    differs from tanh(1) by ~1e-8: below float32's resolution, where pytorch-grad-cam computes it
    (correlation with ours 0.33-0.49 here). Ours equals scikit-learn's KernelPCA on float64."""
    sklearn_decomposition = pytest.importorskip("sklearn.decomposition")
    torch.manual_seed(0)
    model, x = tvm.efficientnet_b0(weights=None, num_classes=10).eval(), images()
    with torch.no_grad(), recording(model, "features.2") as rec:
        model(x)
    a = rec["out"].double()
    maps = E.kpca_cam(model, x, layer="features.2", relu=False)
    for b in range(2):
        m = a[b].flatten(1).T
        want = sklearn_decomposition.KernelPCA(n_components=1, kernel="sigmoid").fit_transform((m - m.mean(0)).numpy())
        want = upsample(torch.as_tensor(want[:, 0], dtype=torch.float32).view(1, *a.shape[2:]), x)[0]
        assert corr(maps[b], want) >= 0.9999


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_pca_equals_scikit_learns(kernel):
    """Same component, scale (sqrt of the eigenvalue) and sign (largest entry positive)."""
    sklearn_decomposition = pytest.importorskip("sklearn.decomposition")
    m = torch.randn(3, 50, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    m[2] *= 0.05  # a smaller scale: the sigmoid and poly kernels get nearer their linear part
    ours = kernel_pca(m, kernel)
    for b in range(3):
        want = sklearn_decomposition.KernelPCA(n_components=1, kernel=kernel).fit_transform(m[b].numpy())[:, 0]
        torch.testing.assert_close(ours[b], torch.as_tensor(want), rtol=1e-6, atol=1e-9)
    assert torch.allclose(kernel_pca(m, "rbf", gamma=0.5)[0], kernel_pca(m[:1], "rbf", 0.5)[0])


def test_kpca_cam_with_a_linear_kernel_is_eigen_cam():
    """Kernel PCA with a linear kernel is PCA: the same map as Eigen-CAM up to sign."""
    model, x = random_net("resnet18"), images()
    k = E.kpca_cam(model, x, layer="layer3", kernel="linear", relu=False)
    e = E.eigen_cam(model, x, layer="layer3", relu=False)
    assert all(abs(corr(k[b], e[b])) >= 0.9999 for b in range(2))
    # class-agnostic, like Eigen-CAM: the target changes nothing
    torch.testing.assert_close(E.kpca_cam(model, x, 1, layer="layer3"), E.kpca_cam(model, x, 5, layer="layer3"))


def test_grad_cam_elementwise_bounds_hires_cam_and_equals_it_where_products_are_positive():
    """sum_k ReLU(g A) >= sum_k g A, with equality when every product is >= 0 (a GAP-linear head
    with positive weights after a ReLU'd layer)."""
    model, x = random_net("resnet18"), images()
    ge = E.grad_cam_elementwise(model, x, TARGETS, layer="layer3", relu=False)
    hi = E.hires_cam(model, x, TARGETS, layer="layer3", relu=False)
    assert (ge >= hi - 1e-6 * float(hi.abs().max())).all() and (ge >= 0).all()
    assert not torch.allclose(ge, hi.clamp_min(0))
    net = copy.deepcopy(zoo.load("shapes-classifier"))
    with torch.no_grad():
        net.fc.weight.abs_()
    xs = torch.stack([zoo.ShapeScenes(2, seed=3)[i]["image"] for i in range(2)])
    torch.testing.assert_close(E.grad_cam_elementwise(net, xs, relu=False), E.hires_cam(net, xs, relu=False))


def test_projection_cams_refuse_bad_options_with_a_sentence():
    model, x = random_net("resnet18"), images(1)
    with pytest.raises(ValueError, match="kernel must be one of 'sigmoid'"):
        E.kpca_cam(model, x, layer="layer3", kernel="laplacian")
    with pytest.raises(ValueError, match="gamma must be a positive number"):
        E.kpca_cam(model, x, layer="layer3", gamma=0)
    for name in ("eigengrad-cam", "kpca-cam", "eigen-cam"):
        with pytest.raises(ValueError, match="does not build its map from channel weights"):
            E.explain(model, x, name, layer="layer3", eigen_smooth=True)
    with pytest.raises(ValueError, match="target"):
        E.kpca_cam(model, x, 99, layer="layer3")  # class-agnostic, but a wrong target still fails
