"""Layer conductance and layer integrated gradients agree with Captum's LayerConductance and
LayerIntegratedGradients on the embedded classifier and six random-weight torchvision
architectures; completeness holds (exactly where the rest of the net is linear, within an error
that shrinks with steps elsewhere); any chunking gives the same result; the map is the upsampled
channel sum; bad input is refused with a sentence."""

import pytest
import torch

from guidewidgets import explain as E
from guidewidgets import hooks

captum_attr = pytest.importorskip("captum.attr")
from tests.explain.peer_nets import nets_at_default_layer  # noqa: E402
from tests.explain.test_peers import corr, plain_relus  # noqa: E402  (one correlation for every peer test)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ARCHS = ["resnet18", "vgg11", "mnasnet0_5", "shufflenet_v2_x0_5", "regnet_x_400mf", "densenet121", "mobilenet_v2"]
SIZE, STEPS, TARGETS = 48, 6, [3, 7]


@pytest.fixture(scope="module")
def nets():
    """name -> (model, images, targets, default layer name), built once."""
    built = nets_at_default_layer(ARCHS, seed=1, size=SIZE)
    return {n: (m, x, [1, 4] if n == "shapes-classifier" else TARGETS, layer) for n, (m, x, layer) in built.items()}


def cond(model, x, *args, **kw):
    return E.layer_attribution(model, x, "layer-conductance", *args, **kw)


def lig(model, x, *args, **kw):
    return E.layer_attribution(model, x, "layer-integrated-gradients", *args, **kw)


def close(ours: torch.Tensor, theirs: torch.Tensor) -> bool:
    scale = float(theirs.abs().max())
    return torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5 * scale) and corr(ours, theirs) >= 0.99


@pytest.mark.parametrize("name", ["shapes-classifier", *ARCHS])
def test_both_agree_with_captum(nets, name):
    model, x, targets, layer = nets[name]
    peer = plain_relus(model)  # Captum's LayerIntegratedGradients puts a leaf where an inplace ReLU writes
    module = hooks.get_layer(peer, layer)
    ours = cond(model, x, targets, layer, steps=STEPS)
    theirs = captum_attr.LayerConductance(peer, module).attribute(x, target=targets, n_steps=STEPS)
    assert ours.shape == theirs.shape and close(ours, theirs.detach()), name
    ours = lig(model, x, targets, layer, steps=STEPS)
    theirs = captum_attr.LayerIntegratedGradients(peer, module).attribute(x, target=targets, n_steps=STEPS)
    assert close(ours, theirs.detach()), name


@pytest.mark.parametrize("rule", ["riemann_trapezoid", "riemann_left", "riemann_middle"])
def test_other_rules_and_a_baseline_agree_with_captum(nets, rule):
    model, x, targets, layer = nets["resnet18"]
    peer = plain_relus(model)
    module, base = hooks.get_layer(peer, layer), torch.full_like(x, 0.5)
    ours = cond(model, x, targets, layer, steps=STEPS, rule=rule, baseline=0.5)
    cap = captum_attr.LayerConductance(peer, module)
    assert close(ours, cap.attribute(x, base, target=targets, n_steps=STEPS, method=rule).detach())
    # Captum's riemann_trapezoid IG weights sum to 1 - 1/n (ours to 1: see path_points), so IG is compared on the others
    if rule != "riemann_trapezoid":
        ours = lig(model, x, targets, layer, steps=STEPS, rule=rule, baseline=0.5)
        cap = captum_attr.LayerIntegratedGradients(peer, module)
        assert close(ours, cap.attribute(x, base, target=targets, n_steps=STEPS, method=rule).detach())


def scores(model, x, targets):
    with torch.no_grad():
        return model(x)[torch.arange(len(targets)), targets]


def test_completeness_is_exact_where_the_rest_is_linear(nets):
    """At the embedded classifier's 'features' the rest (average pool + linear) is linear, so the
    gradient is constant on the path: IG sums exactly to the score difference with any steps, and
    conductance with end points on the path (riemann_trapezoid) too."""
    model, x, targets, layer = nets["shapes-classifier"]
    diff = scores(model, x, targets) - scores(model, torch.zeros_like(x), targets)
    ig = lig(model, x, targets, layer, steps=2)
    conductance = cond(model, x, targets, layer, steps=2, rule="riemann_trapezoid")
    for attr in (ig, conductance):
        torch.testing.assert_close(attr.sum((1, 2, 3)), diff, rtol=1e-4, atol=1e-4)


def test_completeness_error_shrinks_with_steps(nets):
    """On ResNet-18 at layer3 (the rest is non-linear) the sums approach score(x) - score(0)."""
    model, x, targets, _ = nets["resnet18"]
    diff = scores(model, x, targets) - scores(model, torch.zeros_like(x), targets)
    for fn, kw in [(lig, {}), (cond, {"rule": "riemann_trapezoid"})]:
        err = [
            float((fn(model, x, targets, "layer3", steps=n, **kw).sum((1, 2, 3)) - diff).abs().max()) for n in (2, 32)
        ]
        assert err[1] < err[0] and err[1] < 0.05 * float(diff.abs().max()), (fn.__name__, err)


@pytest.mark.parametrize("fn", [cond, lig])
def test_any_chunking_gives_the_same_attribution(nets, fn):
    model, x, targets, layer = nets["resnet18"]
    one = fn(model, x, targets, layer, steps=5)
    for batch_size in (1, 2, 4, 6):  # one image, one point, two points, three points per forward
        torch.testing.assert_close(fn(model, x, targets, layer, steps=5, batch_size=batch_size), one)


@pytest.mark.parametrize(
    "name, fn",
    [("layer-conductance", cond), ("layer-integrated-gradients", lig)],
)
def test_map_is_the_upsampled_channel_sum(nets, name, fn):
    model, x, targets, layer = nets["resnet18"]
    attr = fn(model, x, targets, layer, steps=3)
    want = torch.nn.functional.interpolate(attr.sum(1, keepdim=True), size=x.shape[-2:], mode="bilinear")[:, 0]
    torch.testing.assert_close(E.explain(model, x, name, target=targets, layer=layer, steps=3), want)
    seen = []
    E.explain(model, x, name, target=targets, layer=layer, steps=3, batch_size=2, progress=seen.append)
    assert seen == sorted(seen) and len(seen) >= 3 and seen[-1] == 1.0  # reported as the chunks go


@pytest.mark.parametrize("fn", [cond, lig])
def test_bad_input_is_refused_with_a_sentence(nets, fn):
    model, x, targets, layer = nets["resnet18"]
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        fn(model, x, targets, layer, steps=0)
    with pytest.raises(ValueError, match="baseline tensor must have the image's shape"):
        fn(model, x, targets, layer, baseline=torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="feature map"):
        fn(model, x, targets, "fc")
    with pytest.raises(ValueError, match="from 0 to 9"):
        fn(model, x, 10, layer)
    with pytest.raises(ValueError, match="positive int"):
        fn(model, x, targets, layer, batch_size=0)
    with pytest.raises(ValueError, match="unknown integration rule"):
        fn(model, x, targets, layer, rule="simpson")
    with pytest.raises(
        ValueError, match="layer_attribution computes 'layer-conductance' or 'layer-integrated-gradients'"
    ):
        E.layer_attribution(model, x, "neuron-gradient", targets, layer)
