"""Deep Feature Factorization agrees with pytorch-grad-cam's on seven random-weight torchvision nets
and the embedded classifier (concept maps: correlation >= 0.999, measured 1.0; concept scores equal
the peer's to float32 rounding), the factors reconstruct the activations within NMF's reported
error, and bad options are refused with a sentence."""

import copy

import pytest
import torch
import torchvision

from guidewidgets import explain as E
from guidewidgets import zoo
from guidewidgets.explain.feature_factorization import factorize
from guidewidgets.hooks import capture
from tests.helpers import hook_count

pgc = pytest.importorskip("pytorch_grad_cam")
from tests.explain.test_peers import corr  # noqa: E402

# The peer's NMF stops at 200 iterations and says so (ours silences it and reports the error).
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# The head pytorch-grad-cam is given as computation_on_concepts (None: no GAP + linear head).
ARCHS = {
    "resnet18": "fc",
    "vgg11": None,
    "densenet121": "classifier",
    "mobilenet_v2": "classifier.1",
    "mobilenet_v3_small": None,  # linear -> hardswish -> linear
    "efficientnet_b0": "classifier.1",
    "convnext_tiny": None,  # LayerNorm between pool and linear; negative activations (shifted)
}
K = 4


def peer_dff(model, x, layer, head, k=K):
    m = copy.deepcopy(model)
    dff = pgc.DeepFeatureFactorization(
        m, m.get_submodule(layer), computation_on_concepts=head and m.get_submodule(head)
    )
    out = dff(x, k)
    maps = torch.stack([torch.as_tensor(e) for e in out[1]])  # (B, K, H, W), each min-max scaled
    return maps, (torch.as_tensor(out[2]) if head else None)


def check_against_peer(model, x, layer, head, joint):
    ours = E.dff_concepts(model, x, layer, concepts=K, joint=joint)
    maps, scores = peer_dff(model, x, layer, head)
    for b in range(len(x)):
        for k in range(K):
            assert corr(ours.maps[b, k], maps[b, k]) >= 0.999, (b, k)
    if head is None:
        assert ours.scores is None and "GAP + linear" in ours.why
    else:
        assert ours.why == ""
        scale = float(scores.abs().max())
        for b in range(len(x)):  # joint: every image carries the batch's concepts
            torch.testing.assert_close(ours.scores[b], scores, rtol=1e-4, atol=1e-4 * scale)
    return ours


@pytest.mark.parametrize("arch", list(ARCHS))
def test_dff_matches_pytorch_grad_cam(arch):
    """One image (the peer factors the batch as a whole: so do we with joint=True, on two)."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    layer = E.layers.resolve_layer(model, x, None)
    check_against_peer(model, x[:1], layer, ARCHS[arch], joint=False)
    joint = check_against_peer(model, x, layer, ARCHS[arch], joint=True)
    assert torch.equal(joint.factors.vectors[0], joint.factors.vectors[1])
    assert hook_count(model) == 0


def test_dff_on_the_embedded_classifier_picks_the_peers_best_concept_for_the_class():
    model = zoo.load("shapes-classifier")
    scenes = zoo.ShapeScenes(3, seed=4)
    for i in range(3):
        x, y = scenes[i]["image"][None], scenes[i]["label"]
        ours = check_against_peer(model, x, "features", "fc", joint=False)
        maps, scores = peer_dff(model, x, "features", "fc")
        best = int(scores[:, y].argmax())  # the concept whose head logit for class y is highest
        assert corr(E.dff(model, x, y, layer="features", concepts=K)[0], maps[0, best]) >= 0.999
        assert torch.equal(E.dff(model, x, y, layer="features", concepts=K)[0], ours.maps[0, best])


def test_factors_are_non_negative_and_reconstruct_within_the_reported_error():
    torch.manual_seed(0)
    model = torchvision.models.convnext_tiny(weights=None, num_classes=10).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), capture(model, "features.5") as cap:
        model(x)
    a = cap.activations
    assert (a < 0).any()  # a layer NMF could not take unshifted
    for joint in (False, True):
        f = factorize(a, 6, joint=joint)
        assert (f.vectors >= 0).all() and (f.maps >= 0).all()
        groups = [slice(0, 2)] if joint else [slice(0, 1), slice(1, 2)]
        for s in groups:
            v = (a[s] - f.offset[s.start, :, None, None]).transpose(0, 1).flatten(1)  # (C, N)
            wh = f.vectors[s.start] @ f.maps[s].transpose(0, 1).flatten(1)
            err = torch.linalg.norm(v - wh)
            torch.testing.assert_close(err, f.error[s.start], rtol=1e-3, atol=0.0)
            assert err < 0.9 * torch.linalg.norm(v)  # and it explains something
        if not joint:  # each image's channels shifted by their own minimum
            torch.testing.assert_close(f.offset, a.flatten(2).amin(2))
    # more concepts, smaller error (same seed)
    assert factorize(a, 12).error.sum() < factorize(a, 2).error.sum()


def test_registered_map_is_the_best_concept_of_the_head_or_of_the_gradient_share():
    model = zoo.load("shapes-classifier")
    xs = torch.stack([zoo.ShapeScenes(2, seed=9)[i]["image"] for i in range(2)])
    c = E.dff_concepts(model, xs, "features", concepts=K)
    for cls in range(3):
        k = c.scores[:, :, cls].argmax(1)
        torch.testing.assert_close(E.dff(model, xs, cls, "features", concepts=K), c.maps[torch.arange(2), k])
        # On a GAP + linear head dy/dA = w_c / hw, so a concept's gradient share is (w_c . W_k) mean(H_k).
        shares = torch.einsum("c,bck->bk", model.fc.weight[cls].detach(), c.factors.vectors) * c.factors.maps.mean(
            (2, 3)
        )
        by_grad = E.dff(model, xs, cls, "features", concepts=K, scoring="gradient")
        torch.testing.assert_close(by_grad, c.maps[torch.arange(2), shares.argmax(1)])
    # one image alone or in a batch: its own factorization
    torch.testing.assert_close(E.dff(model, xs[1:], 2, "features"), E.dff(model, xs, 2, "features")[1:])
    # a callable target is applied to the head's output on the concepts, as to the model's
    torch.testing.assert_close(E.dff(model, xs, lambda out: out[:, 2], "features"), E.dff(model, xs, 2, "features"))


def test_bad_options_are_refused_with_a_sentence():
    model = zoo.load("shapes-classifier")
    x = zoo.ShapeScenes(1, seed=1)[0]["image"][None]
    with pytest.raises(ValueError, match="concepts must be an int >= 1"):
        E.dff(model, x, concepts=0)
    with pytest.raises(ValueError, match="concepts must be an int >= 1"):
        E.dff(model, x, concepts=True)
    with pytest.raises(ValueError, match=r"more than the layer's 128 channels.*concepts <= 128"):
        E.dff(model, x, concepts=129)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        E.dff_concepts(model, x, seed=-1)
    with pytest.raises(ValueError, match="scoring must be None, 'head' or 'gradient'"):
        E.dff(model, x, scoring="logit")
    # negative activations (a BatchNorm's output, before its ReLU; block5's would be read as the
    # relu(A) the head averages): NMF explained, the fix named
    with pytest.raises(ValueError, match="negative activations.*non-negative.*shift=True.*after a ReLU"):
        E.dff_concepts(model, x, "features.block4.1", shift=False)
    plain = E.dff_concepts(model, x, "features", shift=False)  # after the ReLU: fine, no shift
    assert torch.equal(plain.factors.offset, torch.zeros_like(plain.factors.offset))
    torch.manual_seed(0)
    vgg = torchvision.models.vgg11(weights=None, num_classes=10).eval()
    xv = torch.rand(1, 3, 32, 32)
    with pytest.raises(ValueError, match="scoring='head' needs a GAP \\+ linear head"):
        E.dff(vgg, xv, scoring="head")
    assert E.dff(vgg, xv).shape == (1, 32, 32)  # the gradient share instead
    assert hook_count(model) == 0 and hook_count(vgg) == 0


def test_joint_factorization_shares_concepts_and_matches_one_image_alone():
    model = zoo.load("shapes-classifier")
    xs = torch.stack([zoo.ShapeScenes(3, seed=2)[i]["image"] for i in range(3)])
    joint = E.dff_concepts(model, xs, concepts=3, joint=True)
    assert joint.maps.shape == (3, 3, *xs.shape[-2:]) and joint.scores.shape == (3, 3, 6)
    assert all(torch.equal(joint.factors.vectors[0], joint.factors.vectors[b]) for b in range(3))
    alone = E.dff_concepts(model, xs[:1], concepts=3, joint=True)
    single = E.dff_concepts(model, xs[:1], concepts=3)
    torch.testing.assert_close(alone.maps, single.maps)
