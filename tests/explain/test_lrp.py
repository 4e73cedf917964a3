"""LRP: agreement with Captum's ``LRP`` per rule, conservation, the z+ sign property, refusals,
the model left as it was, and batching."""

import copy
import warnings

import pytest
import torch
import torchvision
from torch import nn

from guidewidgets import explain as E
from guidewidgets.explain.lrp import LRPRule, relevance
from tests.helpers import hook_count

captum_attr = pytest.importorskip("captum.attr")
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule  # noqa: E402

CAPTUM_RULES = {"epsilon": EpsilonRule, "gamma": GammaRule, "alpha-beta": Alpha1_Beta0_Rule}


class Small(nn.Module):
    """A plain conv net of every supported module type (Flatten as a call: Captum refuses the module)."""

    def __init__(self, bias: bool = True, k: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=bias),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, bias=bias),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(2),
            nn.Conv2d(16, 16, 1, bias=bias),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(64, k, bias=bias))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def small(bias: bool = True, seed: int = 0) -> Small:
    torch.manual_seed(seed)
    net = Small(bias).eval()
    if bias:
        # Why >= 0: where a bias is negative Captum's z+ rule keeps it in its denominator and ours
        # does not (see guidewidgets/explain/lrp.py); these nets compare the rules, not that choice.
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    m.bias.abs_()
    return net


def captum_lrp(model: nn.Module, x: torch.Tensor, target: int, rule: str) -> torch.Tensor:
    """Captum's LRP with ``rule`` on every Conv2d and Linear (its defaults elsewhere), on a copy."""
    peer = copy.deepcopy(model)
    for m in peer.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.rule = CAPTUM_RULES[rule]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return captum_attr.LRP(peer).attribute(x, target=target).detach()


def assert_agree(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    corr = torch.corrcoef(torch.stack([ours.flatten(), theirs.flatten()]))[0, 1]
    assert corr >= 0.99
    scale = theirs.abs().max()
    assert scale > 0
    torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4 * float(scale))


@pytest.mark.parametrize("rule", ["epsilon", "gamma", "alpha-beta"])
def test_agrees_with_captum_on_a_small_conv_net(rule):
    net = small()
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    ours = E.lrp(net, x, 3, rule=rule, raw=True)
    assert_agree(ours, captum_lrp(net, x, 3, rule))


@pytest.fixture(scope="module")
def vgg11() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg11(weights=None).eval()


@pytest.mark.parametrize("rule", ["epsilon", "gamma", "alpha-beta"])
def test_agrees_with_captum_on_vgg11(vgg11, rule):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    ours = E.explain(vgg11, x, "lrp", target=7, rule=rule, raw=True)
    assert_agree(ours, captum_lrp(vgg11, x, 7, rule))


def test_per_layer_rules_agree_with_captums_per_layer_rules(vgg11):
    """Gamma on the first conv, epsilon 0.25 in the classifier, the rest epsilon 1e-9."""
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    rules = {"features.0": "gamma", "classifier": LRPRule("epsilon", epsilon=0.25)}
    ours = E.lrp(vgg11, x, 2, rules=rules, raw=True)
    peer = copy.deepcopy(vgg11)
    peer.features[0].rule = GammaRule()
    for m in peer.classifier:
        if isinstance(m, nn.Linear):
            m.rule = EpsilonRule(epsilon=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = captum_attr.LRP(peer).attribute(x, target=2).detach()
    assert_agree(ours, theirs)
    assert not torch.allclose(ours, E.lrp(vgg11, x, 2, raw=True))  # the rules did change something


class BNNet(nn.Module):
    """Conv, BatchNorm (with running statistics), ReLU, pooling, a bias-free linear head."""

    def __init__(self, conv_bias: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, bias=conv_bias), nn.BatchNorm2d(6), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3, bias=False)
        with torch.no_grad():
            self.features[1].running_mean.uniform_(-0.2, 0.2)
            self.features[1].running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def test_batchnorm_gets_the_epsilon_rule_as_in_captum():
    torch.manual_seed(4)
    net = BNNet().eval()
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    assert_agree(E.lrp(net, x, 1, raw=True), captum_lrp(net, x, 1, "epsilon"))


@pytest.mark.parametrize("rule", [LRPRule("epsilon", epsilon=1e-12), LRPRule("alpha-beta", alpha=2.0, beta=1.0)])
def test_relevance_sums_to_the_score_on_a_bias_free_relu_net(rule):
    """Conservation: every layer hands on all it gets, so the input relevance sums to the score."""
    net = small(bias=False).double()
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    r = relevance(net, x, [0, 1, 2, 3], rule)
    with torch.no_grad():
        scores = net(x)[torch.arange(4), torch.tensor([0, 1, 2, 3])]
    # Why 1e-6: the pools divide by activations + 1e-9 (Captum's stabiliser), ~1e-7 of the score here.
    torch.testing.assert_close(r.sum((1, 2, 3)), scores, rtol=1e-6, atol=1e-12)


def test_the_score_is_conserved_through_a_callable_target():
    """A segmentation-style score (a sum of logits) is what the relevance adds up to."""
    net = small(bias=False).double()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(7), dtype=torch.float64)

    def score(out):
        return out[:, 1] + out[:, 4]

    r = relevance(net, x, score, LRPRule("epsilon", epsilon=1e-12))
    with torch.no_grad():
        torch.testing.assert_close(r.sum((1, 2, 3)), score(net(x)), rtol=1e-7, atol=1e-12)


def test_z_plus_relevance_has_the_sign_of_the_score_even_with_negative_biases():
    """alpha=1, beta=0 on an image in [0, 1]: only positive contributions travel, so every
    pixel's relevance has the score's sign. (Captum's Alpha1_Beta0 divides by z+ plus the whole
    bias, which a negative bias can bring to 0 or below.)"""
    torch.manual_seed(8)
    net = Small().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.bias.copy_(-m.bias.abs())
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    r = E.lrp(net, x, 0, rule="alpha-beta", raw=True)
    with torch.no_grad():
        sign = torch.sign(net(x)[:, 0]).view(2, 1, 1, 1)
    assert bool(((r * sign) >= 0).all())
    assert bool((r != 0).any())


def test_a_sample_alone_equals_it_in_a_batch(vgg11):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(10))
    for rule in ("epsilon", "gamma", "alpha-beta"):
        batch = E.lrp(vgg11, x, [1, 2, 3], rule=rule)
        alone = E.lrp(vgg11, x[1:2], 2, rule=rule)
        assert batch.shape == (3, 32, 32)
        torch.testing.assert_close(batch[1:2], alone, rtol=1e-4, atol=1e-5 * float(alone.abs().max()))


def test_the_model_is_left_exactly_as_it_was():
    net = small()
    net.train()  # the registry runs it in eval mode and must restore training mode
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(2, 3, 16, 16)
    for rule in ("epsilon", "gamma", "alpha-beta"):
        E.lrp(net, x, 1, rule=rule)
    assert net.training and all(m.training for m in net.modules())
    assert hook_count(net) == 0
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in net.parameters())


def test_hooks_are_removed_when_the_call_fails():
    net = small().eval()

    def broken(out):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        E.lrp(net, torch.rand(1, 3, 16, 16), broken)
    assert hook_count(net) == 0


def test_an_unsupported_module_is_refused_by_name_with_the_supported_types():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"module '1' \(Tanh\).*Conv2d, Linear.*BatchNorm2d"):
        E.lrp(net.eval(), torch.rand(1, 3, 8, 8))
    assert hook_count(net) == 0


def test_a_scripted_model_is_refused():
    net = torch.jit.script(small())
    with pytest.raises(TypeError, match="scripted model"):
        E.lrp(net, torch.rand(1, 3, 16, 16))


def test_a_module_of_the_users_own_with_weights_is_refused():
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.w

    net = nn.Sequential(nn.Conv2d(3, 4, 3), Scale(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(TypeError, match=r"'1' \(Scale\)"):
        E.lrp(net.eval(), torch.rand(1, 3, 8, 8))


def test_a_bad_rule_name_suggests_the_close_one():
    net = small()
    with pytest.raises(ValueError, match=r"unknown LRP rule 'gama'.*Did you mean 'gamma'"):
        E.lrp(net, torch.rand(1, 3, 16, 16), rule="gama")
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        E.lrp(net, torch.rand(1, 3, 16, 16), rule="alpha-beta", alpha=2.0, beta=0.5)
    with pytest.raises(ValueError, match="No layer named 'feature.0'.*'features.0'"):
        E.lrp(net, torch.rand(1, 3, 16, 16), rules={"feature.0": "gamma"})
    with pytest.raises(ValueError, match="identity rule needs a layer whose output has its input's shape"):
        E.lrp(net, torch.rand(1, 3, 16, 16), rules={"features.0": "identity"})


def test_the_identity_rule_hands_relevance_through_batchnorm_unchanged():
    """BatchNorm's running mean acts as a bias, which the epsilon rule lets absorb relevance; with
    the identity rule on it the bias-free rest conserves, so the relevance sums to the score."""
    torch.manual_seed(11)
    net = BNNet(conv_bias=False).double().eval()
    x = torch.rand(2, 3, 10, 10, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    tiny = LRPRule("epsilon", epsilon=1e-12)
    ident = relevance(net, x, 0, tiny, rules={"features.1": "identity"})
    plain = relevance(net, x, 0, tiny)
    with torch.no_grad():
        score = net(x)[:, 0]
    torch.testing.assert_close(ident.sum((1, 2, 3)), score, rtol=1e-7, atol=1e-12)
    assert not torch.allclose(plain.sum((1, 2, 3)), score, rtol=1e-3)


def test_resnet_skip_additions_get_the_ratio_rule():
    """Captum's LRP runs a ResNet but ignores its additions (its sums are far off); here an
    addition splits relevance in proportion to its two inputs, so a bias-free, BatchNorm-free
    residual net conserves the score."""

    class Res(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, bias=False))
            self.relu = nn.ReLU()
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3, bias=False))

        def forward(self, x):
            a = self.relu(self.stem(x))
            return self.head(self.relu(self.body(a) + a))

    torch.manual_seed(13)
    net = Res().double().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    r = relevance(net, x, 2, LRPRule("epsilon", epsilon=1e-12))
    with torch.no_grad():
        torch.testing.assert_close(r.sum((1, 2, 3)), net(x)[:, 2], rtol=1e-7, atol=1e-12)
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None).eval()
    maps = E.lrp(resnet, torch.rand(2, 3, 32, 32), 5)
    assert maps.shape == (2, 32, 32) and bool(torch.isfinite(maps).all())
    assert hook_count(resnet) == 0


def test_registered_with_its_options():
    info = E.method_info("lrp")
    assert info.family == "gradient" and info.signed and info.has_image and not info.uses_layer
    orders = [E.method_info(m).order for m in E.methods()]
    assert orders.count(info.order) == 1 and info.order > E.method_info("deeplift-shap").order
    with pytest.raises(ValueError, match="has no option 'gama'"):
        E.explain(small(), torch.rand(1, 3, 16, 16), "lrp", gama=0.1)
