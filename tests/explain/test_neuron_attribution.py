"""Neuron gradient, neuron guided backprop and neuron integrated gradients agree with Captum's
NeuronGradient, NeuronGuidedBackprop and NeuronIntegratedGradients (a channel: Captum's slice
selector, its sum over positions; a channel at a position: Captum's index) on the embedded
classifier and six random-weight torchvision architectures; a channel is the sum of its
positions; IG sums to the unit's change; the forward ends at the layer; any chunking gives the
same result; a unit outside the layer is refused with a sentence naming the valid range."""

import pytest
import torch
from torch import nn

from guidewidgets import explain as E
from guidewidgets import hooks
from guidewidgets.explain.neuron_attribution import Neuron

captum_attr = pytest.importorskip("captum.attr")
from tests.explain.peer_nets import nets_at_default_layer  # noqa: E402
from tests.explain.test_peers import corr, plain_relus  # noqa: E402  (one correlation for every peer test)

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks", "ignore:Input Tensor")

# Every activation before the default layer an nn.ReLU module: Captum's guided rule (nn.ReLU
# modules only) is then ours. MobileNetV2's ReLU6 gets the guided rule only from us (compared apart).
ARCHS = ["resnet18", "vgg11", "mnasnet0_5", "shufflenet_v2_x0_5", "regnet_x_400mf", "densenet121"]
SIZE, STEPS = 48, 6


@pytest.fixture(scope="module")
def nets():
    """name -> (model, images, default layer name), built once."""
    return nets_at_default_layer([*ARCHS, "mobilenet_v2"], seed=2, size=SIZE)


def grid_of(model, x, layer):
    with torch.no_grad(), hooks.capture(model, layer, cut=False) as cap:
        model(x)
    return cap.activations


def units(model, x, layer):
    """A live channel and the position where it is largest for the first image: Captum's selectors and ours."""
    a = grid_of(model, x, layer)[0]
    c = int(a.sum((1, 2)).argmax())
    i, j = divmod(int(a[c].argmax()), a.shape[-1])
    return [((c, slice(None), slice(None)), Neuron(c)), ((c, i, j), Neuron(c, (i, j)))]


def close(ours, theirs):
    theirs = theirs.detach()
    scale = float(theirs.abs().max())
    assert scale > 0
    return torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5 * scale) and corr(ours, theirs) >= 0.99


@pytest.mark.parametrize("name", ["shapes-classifier", *ARCHS])
def test_all_three_agree_with_captum(nets, name):
    model, x, layer = nets[name]
    peer = plain_relus(model)  # Captum's backward hooks need out-of-place ReLUs (same forward)
    module = hooks.get_layer(peer, layer)
    for selector, unit in units(model, x, layer):
        ours = E.neuron_gradient(model, x, unit, layer, raw=True)
        assert close(ours, captum_attr.NeuronGradient(peer, module).attribute(x, selector)), (name, unit)
        ours = E.neuron_guided_backprop(model, x, unit, layer, raw=True)
        assert close(ours, captum_attr.NeuronGuidedBackprop(peer, module).attribute(x, selector)), (name, unit)
        ours = E.neuron_integrated_gradients(model, x, unit, layer, raw=True, steps=STEPS)
        theirs = captum_attr.NeuronIntegratedGradients(peer, module).attribute(x, selector, n_steps=STEPS)
        assert close(ours, theirs), (name, unit)


def test_relu6_net_gradient_and_ig_agree_guided_differs_by_design(nets):
    """MobileNetV2's activations are ReLU6: Captum's guided rule skips them (nn.ReLU only), ours gates them."""
    model, x, layer = nets["mobilenet_v2"]
    module = hooks.get_layer(model, layer)
    (selector, unit), _ = units(model, x, layer)
    assert close(
        E.neuron_gradient(model, x, unit, layer, raw=True),
        captum_attr.NeuronGradient(model, module).attribute(x, selector),
    )
    theirs = captum_attr.NeuronIntegratedGradients(model, module).attribute(x, selector, n_steps=STEPS)
    assert close(E.neuron_integrated_gradients(model, x, unit, layer, raw=True, steps=STEPS), theirs)
    guided = E.neuron_guided_backprop(model, x, unit, layer, raw=True)
    captum_guided = captum_attr.NeuronGuidedBackprop(model, module).attribute(x, selector)
    assert torch.allclose(captum_guided, captum_attr.NeuronGradient(model, module).attribute(x, selector))
    assert not close(guided, captum_guided)


def test_a_channel_is_the_sum_of_its_positions(nets):
    model, x, layer = nets["shapes-classifier"]
    x = x[:1]
    h, w = grid_of(model, x, layer).shape[-2:]
    for name in ("neuron-gradient", "neuron-guided-backprop"):
        whole = E.explain(model, x, name, target=Neuron(5), layer=layer, raw=True)
        parts = sum(
            E.explain(model, x, name, target=Neuron(5, (i, j)), layer=layer, raw=True)
            for i in range(h)
            for j in range(w)
        )
        torch.testing.assert_close(whole, parts, rtol=1e-4, atol=1e-6 * float(whole.abs().max()))
    assert torch.equal(E.neuron_gradient(model, x, 5, layer), E.neuron_gradient(model, x, Neuron(5), layer))


def test_integrated_gradients_sum_to_the_units_change(nets):
    model, x, _ = nets["resnet18"]
    _, (_, unit) = units(model, x, "layer3")
    c, (i, j) = unit.channel, unit.position
    a, a0 = grid_of(model, x, "layer3"), grid_of(model, torch.zeros_like(x), "layer3")
    change = a[:, c, i, j] - a0[:, c, i, j]
    sums = [E.neuron_integrated_gradients(model, x, unit, "layer3", steps=n).sum((1, 2)) for n in (2, 64)]
    err = [float((s - change).abs().max()) for s in sums]
    assert float(change.abs().max()) > 0 and err[1] <= err[0] and err[1] < 0.02 * float(change.abs().max()), err


def test_none_is_each_samples_most_active_channel_and_lists_go_per_sample(nets):
    model, x, layer = nets["shapes-classifier"]
    top = grid_of(model, x, layer).sum((2, 3)).argmax(1).tolist()
    for name in ("neuron-gradient", "neuron-guided-backprop", "neuron-integrated-gradients"):
        opts = dict(E.method_info(name).quick)
        base = E.explain(model, x, name, layer=layer, **opts)
        torch.testing.assert_close(base, E.explain(model, x, name, target=top, layer=layer, **opts))
        torch.testing.assert_close(
            base, E.explain(model, x, name, target=[Neuron(c) for c in top], layer=layer, **opts)
        )
    mixed = E.neuron_gradient(model, x, [Neuron(3, (2, 2)), 9], layer, raw=True)
    torch.testing.assert_close(mixed[:1], E.neuron_gradient(model, x[:1], Neuron(3, (2, 2)), layer, raw=True))
    torch.testing.assert_close(mixed[1:], E.neuron_gradient(model, x[1:], 9, layer, raw=True))


class Tail(nn.Module):
    """A conv trunk and a tail that raises: a neuron of the trunk never needs the tail."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.tail_runs = 0

    def forward(self, x):
        self.trunk(x)
        self.tail_runs += 1
        raise RuntimeError("the tail ran")


def test_the_forward_ends_at_the_layer_and_the_model_is_unchanged():
    torch.manual_seed(0)
    model = Tail().eval()
    x = torch.rand(2, 3, 8, 8)
    for name in ("neuron-gradient", "neuron-guided-backprop", "neuron-integrated-gradients"):
        maps = E.explain(model, x, name, target=Neuron(1, (3, 4)), layer="trunk", **E.method_info(name).quick)
        assert maps.shape == (2, 8, 8) and torch.isfinite(maps).all()
    assert model.tail_runs == 0
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
    # the receptive field of position (3, 4) after one 3 x 3 conv: rows 2..4, columns 3..5
    g = E.neuron_gradient(model, x, Neuron(1, (3, 4)), "trunk", raw=True)
    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:5, 3:6] = False
    assert g[:, :, outside].abs().max() == 0


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_any_chunking_gives_the_same_attribution(nets, batch_size):
    model, x, layer = nets["resnet18"]
    one = E.neuron_integrated_gradients(model, x, 3, layer, steps=5, raw=True)
    torch.testing.assert_close(
        E.neuron_integrated_gradients(model, x, 3, layer, steps=5, raw=True, batch_size=batch_size), one
    )


@pytest.mark.parametrize("name", ["neuron-gradient", "neuron-guided-backprop", "neuron-integrated-gradients"])
def test_a_unit_outside_the_layer_is_refused_with_the_valid_range(nets, name):
    model, x, layer = nets["resnet18"]
    c, h, w = grid_of(model, x, layer).shape[1:]
    opts = dict(E.method_info(name).quick)

    def call(target):
        return E.explain(model, x, name, target=target, layer=layer, **opts)

    with pytest.raises(
        ValueError,
        match=rf"channel {c} is outside layer 'layer4', which has {c} channels: use a channel from 0 to {c - 1}",
    ):
        call(c)
    with pytest.raises(ValueError, match="channel -1 is outside"):
        call([0, -1])
    with pytest.raises(
        ValueError,
        match=rf"position \(0, {w}\) is outside the {h} x {w} map of layer 'layer4': use a row from 0 to {h - 1}",
    ):
        call(Neuron(0, (0, w)))
    with pytest.raises(ValueError, match="2 samples; give one per sample"):
        call([0, 1, 2])
    with pytest.raises(TypeError, match="callable target has no meaning here: pass target=Neuron"):
        call(lambda out: out[:, 0])
    with pytest.raises(TypeError, match="channel must be an int"):
        call(Neuron(1.5))
    with pytest.raises(TypeError, match="position must be a pair"):
        call(Neuron(1, 3))
    with pytest.raises(TypeError, match="most active channel"):
        call("cat")


def test_guided_rule_without_relu_before_the_layer_warns():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)).eval()
    x = torch.rand(1, 3, 8, 8)
    model(x)
    with pytest.warns(UserWarning, match="no ReLU-family activation before layer '0'"):
        g = E.neuron_guided_backprop(model, x, 1, "0", raw=True)
    torch.testing.assert_close(g, E.neuron_gradient(model, x, 1, "0", raw=True))
