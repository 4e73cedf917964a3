"""SS-CAM and IS-CAM agree with torchcam's SSCAM and ISCAM (same noise: our generator seeded as
torchcam's global one) on 7 random-weight torchvision architectures and the embedded classifier,
correlation >= 0.99; they reduce to Score-CAM where they should, and batch, chunk and report
progress like it."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision.models as tvm

from guidewidgets import explain as E
from guidewidgets import zoo
from guidewidgets.explain.layers import upsample
from tests.explain.peer_nets import cam_layers, random_net
from tests.explain.test_peers import corr

SIZE = 64

ARCHS = cam_layers(1)  # architecture -> layer (why those layers: tests.explain.peer_nets)
PEERS = {
    "ss-cam": ("SSCAM", {"num_samples": 2}, {"samples": 2}),
    "is-cam": ("ISCAM", {"num_samples": 2}, {"samples": 2}),
}


def torchcam_map(model, x, name, layer, target, seed=0):
    """torchcam's map for one image (B = 1), upsampled as ours, its noise drawn after manual_seed(seed)."""
    methods = pytest.importorskip("torchcam.methods")
    cls, kw, _ = PEERS[name]
    peer_model = copy.deepcopy(model)
    with getattr(methods, cls)(
        peer_model, target_layer=layer, input_shape=tuple(x.shape[1:]), batch_size=64, **kw
    ) as ex:
        with torch.no_grad():
            out = peer_model(x)
        torch.manual_seed(seed)
        cam = ex(class_idx=target, scores=out)[0]
    return upsample(cam, x)[0]


@pytest.mark.parametrize("name", list(PEERS))
@pytest.mark.parametrize("arch", list(ARCHS))
def test_score_variants_match_torchcam(arch, name):
    model, layer = random_net(arch), ARCHS[arch]
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    ref = torchcam_map(model, x, name, layer, 3)
    ours = E.explain(model, x, name, target=3, layer=layer, **PEERS[name][2])
    assert corr(ours[0], ref) >= 0.99, (arch, name, corr(ours[0], ref))


@pytest.mark.parametrize("name", list(PEERS))
def test_score_variants_match_torchcam_on_the_embedded_classifier(name):
    model = zoo.load("shapes-classifier")
    scenes = zoo.ShapeScenes(2, seed=11)
    for i in range(2):
        x, label = scenes[i]["image"][None], int(scenes[i]["label"])
        ref = torchcam_map(model, x, name, "features", label, seed=5)
        seed = {"seed": 5} if name == "ss-cam" else {}  # IS-CAM draws no noise
        ours = E.explain(model, x, name, target=label, **seed, **PEERS[name][2])
        assert corr(ours[0], ref) >= 0.99, (name, i, corr(ours[0], ref))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return tvm.resnet18(weights=None, num_classes=10).eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()) + 1e-12)


def test_they_reduce_to_score_cam(net, x):
    """Without noise SS-CAM's N copies are Score-CAM's mask N times; IS-CAM with N = 1 scales by c_1 = 1."""
    opts = {"target": [1, 2], "layer": "layer2", "max_channels": 16}
    score = E.score_cam(net, x, **opts)
    close(E.ss_cam(net, x, samples=2, noise=0.0, **opts), score)
    close(E.is_cam(net, x, samples=1, **opts), score)
    assert not torch.allclose(E.ss_cam(net, x, samples=2, **opts), score)
    assert not torch.allclose(E.is_cam(net, x, samples=3, **opts), score)


@pytest.mark.parametrize("name", list(PEERS))
def test_a_batch_gives_each_images_own_map_in_any_chunking(net, x, name):
    """Each image alone gets the same map (SS-CAM's noise is one pattern per sample shared by the
    batch), whatever the number of images per forward."""
    opts = {"layer": "layer2", "samples": 2, "max_channels": 12}
    batch = E.explain(net, x, name, target=[1, 2], **opts)
    alone = torch.cat([E.explain(net, x[i : i + 1], name, target=[1, 2][i], **opts) for i in range(2)])
    close(batch, alone)
    close(E.explain(net, x, name, target=[1, 2], batch_size=3, **opts), batch)


@pytest.mark.parametrize("name", list(PEERS))
def test_progress_counts_the_masked_forwards(net, x, name):
    seen: list[float] = []
    E.explain(net, x, name, target=1, layer="layer2", samples=3, max_channels=4, batch_size=2, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert len(seen) >= 3 * 4  # one report per forward of one channel's 2 images, at least


def test_ss_cam_depends_on_its_seed_only_through_the_noise(net, x):
    opts = {"target": 1, "layer": "layer2", "samples": 2, "max_channels": 8}
    close(E.ss_cam(net, x, seed=3, **opts), E.ss_cam(net, x, seed=3, **opts))
    assert not torch.allclose(E.ss_cam(net, x, seed=3, **opts), E.ss_cam(net, x, seed=4, **opts))


def test_many_forwards_warn_before_they_start(net, x):
    with pytest.warns(UserWarning, match=r"384 masked forwards \(128 channels x 1 image x 3 copies\).*max_channels=64"):
        E.ss_cam(net, x[:1], layer="layer2", samples=3, noise=0.5)


@pytest.mark.parametrize("name", list(PEERS))
def test_bad_options_are_refused_with_a_sentence(net, x, name):
    with pytest.raises(ValueError, match="samples must be a whole number >= 1"):
        E.explain(net, x, name, layer="layer2", samples=0)
    with pytest.raises(ValueError, match="samples must be a whole number >= 1"):
        E.explain(net, x, name, layer="layer2", samples=1.5)
    with pytest.raises(ValueError, match="max_channels must be at least 1"):
        E.explain(net, x, name, layer="layer2", max_channels=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        E.explain(net, x, name, layer="layer2", samples=1, max_channels=2, batch_size=0)
    if name == "ss-cam":
        for bad in (-1.0, float("nan")):
            with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
                E.ss_cam(net, x, layer="layer2", noise=bad)
