"""FullGrad agrees with pytorch-grad-cam's on seven random-weight torchvision nets and the embedded
classifier (correlation >= 0.999; measured 1.0), its decomposition is complete on a piecewise-linear
net, and a net without biases gets its input term alone."""

import copy

import pytest
import torch
import torchvision
from torch import nn

from guidewidgets import explain as E
from guidewidgets import zoo
from guidewidgets.explain.fullgrad import bias_of, full_gradients, rescale_channels
from guidewidgets.explain.targets import Target
from tests.helpers import hook_count

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from tests.explain.test_peers import corr  # noqa: E402

ARCHS = [
    "resnet18",
    "vgg11_bn",
    "densenet121",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "convnext_tiny",
]
TARGETS = [3, 7]


def peer_fullgrad(model, x, targets):
    peer = pgc.FullGrad(copy.deepcopy(model), [])
    return torch.as_tensor(peer(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))


def with_bn_statistics(model):
    """Random running statistics: with torchvision's (0, 1) the BatchNorm bias would be beta only."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
    return model


@pytest.mark.parametrize("arch", ARCHS)
def test_fullgrad_matches_pytorch_grad_cam(arch):
    torch.manual_seed(0)
    model = with_bn_statistics(getattr(torchvision.models, arch)(weights=None, num_classes=10).eval())
    x = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    ours = E.fullgrad(model, x, TARGETS)
    ref = peer_fullgrad(model, x, TARGETS)
    for b in range(2):
        assert corr(ours[b], ref[b]) >= 0.999, (arch, b, corr(ours[b], ref[b]))
    assert hook_count(model) == 0


def test_fullgrad_matches_pytorch_grad_cam_on_the_embedded_classifier():
    model = zoo.load("shapes-classifier")
    scenes = zoo.ShapeScenes(3, seed=4)
    xs = torch.stack([scenes[i]["image"] for i in range(3)])
    ys = [scenes[i]["label"] for i in range(3)]
    ours, ref = E.fullgrad(model, xs, ys), peer_fullgrad(model, xs, ys)
    for b in range(3):
        assert corr(ours[b], ref[b]) >= 0.999


class PiecewiseLinear(nn.Module):
    """ReLU (inplace), max-pool, conv with and without bias, BatchNorm with and without affine
    parameters, a conv run twice, a conv whose output never reaches the score, GAP + linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6, affine=False)
        self.shared = nn.Conv2d(6, 6, 1)
        self.unused = nn.Conv2d(6, 2, 1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        z = torch.relu_(self.bn1(self.conv1(x)))
        z = nn.functional.max_pool2d(z, 2)
        z = torch.relu(self.bn2(self.conv2(z)))
        z = torch.relu(self.shared(torch.relu(self.shared(z))))
        self.unused(z)  # runs, but its output does not reach the logits
        return self.fc(z.mean((2, 3)))


@pytest.fixture
def net():
    torch.manual_seed(0)
    return with_bn_statistics(PiecewiseLinear()).eval()


def test_full_gradient_decomposition_is_complete(net):
    """f(x) = sum(g * x) + sum_l sum(b_l * g_l) + the linear head's bias, exactly (Srinivas &
    Fleuret, eq. 3): checks the implicit BatchNorm bias (also without affine parameters), the
    gradient taken before the inplace ReLU, both calls of the shared conv, and the unused one."""
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    target = Target([0, 2, 3], 3)
    g, layers, scores = full_gradients(net, x, target)
    assert len(layers) == 6  # conv1, bn1, bn2, shared twice, unused (conv2 has no bias)
    total = (g * x).sum((1, 2, 3)) + net.fc.bias[[0, 2, 3]].detach()
    for bias, grad in layers:
        total += (bias.view(1, -1, 1, 1) * grad).sum((1, 2, 3))
    torch.testing.assert_close(total, scores, rtol=1e-5, atol=1e-5)
    assert layers[-1][1].abs().sum() == 0  # the unused conv's bias-gradient
    # the map is every term rescaled per channel, upsampled and summed
    maps = E.fullgrad(net, x, [0, 2, 3])
    want = rescale_channels((g * x).abs()).sum(1)
    for bias, grad in layers:
        want += E.layers.upsample(rescale_channels((bias.view(1, -1, 1, 1) * grad).abs()).sum(1), x)
    torch.testing.assert_close(maps, want)
    assert hook_count(net) == 0


def test_batchnorm_bias_is_the_implicit_one():
    bn = with_bn_statistics(nn.Sequential(nn.BatchNorm2d(4))).eval()[0]
    z = torch.randn(2, 4, 3, 3)
    # eval BatchNorm is z * gamma / sqrt(var + eps) + bias: the bias is its output at z = 0
    torch.testing.assert_close(bias_of(bn), bn(torch.zeros(1, 4, 1, 1)).flatten())
    assert torch.allclose(bn(z) - bias_of(bn).view(1, -1, 1, 1), bn(z) - bn(torch.zeros(1, 4, 1, 1)))
    assert bias_of(nn.Conv2d(3, 4, 3, bias=False)) is None and bias_of(nn.Linear(3, 4)) is None
    no_stats = nn.BatchNorm2d(4, track_running_stats=False)
    assert torch.equal(bias_of(no_stats), no_stats.bias.detach())  # batch statistics: beta only


def test_a_net_without_biases_gets_its_input_term_alone():
    """No conv/BatchNorm bias: FullGrad is |gradient x input|, each colour channel rescaled to
    [0, 1], summed (here against gradient x input's own image)."""
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 10 * 10, 3, bias=False)
    )
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    gxi = E.gradient_x_input(model, x, [0, 1], raw=True)
    torch.testing.assert_close(E.fullgrad(model, x, [0, 1]), rescale_channels(gxi.abs()).sum(1))
    _, layers, _ = full_gradients(model, x, Target([0, 1], 2))
    assert layers == []


def test_fullgrad_ignores_layer_and_refuses_bad_targets(net):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    assert torch.equal(E.explain(net, x, "fullgrad", layer="conv1"), E.fullgrad(net, x))
    with pytest.raises(ValueError, match="from 0 to 3"):
        E.fullgrad(net, x, 4)
    with pytest.raises(ValueError, match="fullgrad' has no option 'rescale'"):
        E.explain(net, x, "fullgrad", rescale="layer")
    assert hook_count(net) == 0
