"""DeepLIFT, DeepLIFT-SHAP, GradientSHAP, SmoothGrad-squared and VarGrad agree with Captum at the
same settings (and, for the sampled ones, the same random draws) on the embedded classifier and
six random-weight torchvision architectures; DeepLIFT's summation to delta holds; bad input is
refused with a sentence."""

import copy

import numpy as np
import pytest
import torch
import torchvision

from guidewidgets import explain as E
from guidewidgets import zoo
from guidewidgets.explain.gradient_shap import shap_draws
from guidewidgets.explain.noise import noisy_copies

captum_attr = pytest.importorskip("captum.attr")
from tests.explain.test_peers import corr, plain_relus  # noqa: E402  (one correlation for every peer test)

SIZE = 64
TARGETS = [3, 7]
# For the gradient methods, any net.
ARCHS = ["vgg11", "mnasnet0_5", "shufflenet_v2_x0_5", "regnet_x_400mf", "densenet121", "mobilenet_v2"]
MODELS = ["shapes-classifier", *ARCHS]
# For DeepLIFT, nets on which Captum applies the same rules: each nonlinearity an nn.ReLU or
# nn.Sigmoid module used once, max-pools without overlap. Elsewhere the rules differ by design
# (see explain.deeplift): ReLU6 (MobileNetV2) and functional ReLUs (DenseNet's last) get the plain
# gradient there, overlapping max-pools (ShuffleNet, DenseNet, AlexNet) lose contributions, and
# ResNet's twice-used relu is refused; there only summation to delta is checked.
SAME_RULES = ["vgg11", "vgg11_bn", "mnasnet0_5", "mnasnet1_0", "regnet_x_400mf", "regnet_y_400mf"]
OTHER_RULES = ["shufflenet_v2_x0_5", "densenet121", "mobilenet_v2", "alexnet", "resnet18"]

pytestmark = pytest.mark.filterwarnings("ignore:Setting backward hooks", "ignore::UserWarning")


@pytest.fixture(scope="module")
def nets():
    """name -> (model, images, targets), built once (VGG alone takes seconds)."""
    out = {}
    gen = torch.Generator().manual_seed(1)
    clf = zoo.load("shapes-classifier")
    out["shapes-classifier"] = (clf, torch.rand(2, 3, 96, 96, generator=gen), [1, 4])
    for arch in sorted(set(ARCHS + SAME_RULES + OTHER_RULES)):
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()
        out[arch] = (model, torch.rand(2, 3, SIZE, SIZE, generator=gen), TARGETS)
    return out


class _Copy(torch.nn.Module):
    def forward(self, x):
        return x.clone()


def captum_deeplift_model(model):
    """``model`` for Captum's DeepLift: out-of-place ReLUs, each followed by a copy.

    Why the copy: Captum records a ReLU's output gradient with a hook on its output tensor, and a
    max-pool right after it rewrites that gradient with a hook on the same tensor, placed later,
    so the ReLU's rule reads the gradient from before the max-pool rule (its attributions then miss
    summation to delta: -0.0072 for a score change of -0.0091 on a conv-ReLU-pool net). A copy
    gives each hook a tensor of its own; it changes no value.
    """
    m = plain_relus(model)
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.ReLU:
                setattr(parent, name, torch.nn.Sequential(child, _Copy()))
    return m


def score_gap(model, x, ref, targets):
    with torch.no_grad():
        rows = torch.arange(len(targets))
        return model(x)[rows, targets] - model(ref.expand_as(x))[rows, targets]


# --- DeepLIFT -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shapes-classifier", *SAME_RULES])
def test_deeplift_matches_captum(nets, name):
    model, x, targets = nets[name]
    ours = E.explain(model, x, "deeplift", target=targets, baseline=0.25, raw=True)
    peer = captum_attr.DeepLift(captum_deeplift_model(model))
    theirs = peer.attribute(x, target=targets, baselines=torch.full_like(x, 0.25)).detach()
    for b in range(len(targets)):
        assert corr(ours[b], theirs[b]) >= 0.99, (name, b, corr(ours[b], theirs[b]))
    assert torch.allclose(E.deeplift(model, x, targets, baseline=0.25), ours.sum(1))


@pytest.mark.parametrize("name", ["shapes-classifier", "vgg11", "mnasnet0_5", "regnet_x_400mf", *OTHER_RULES])
def test_deeplift_sums_to_delta(nets, name):
    """Exact (up to rounding) on nets of linear layers, element-wise activations and max-pools,
    whatever their rules in Captum. In float64 and with eps=0 (the plain slope only where the two
    inputs are equal): random-weight MobileNets have activations of about 1e-10, below the default
    eps, and float32 rounding alone is a few percent of their score differences."""
    model, x, targets = nets[name]
    if name != "vgg11":  # VGG's float32 sums are exact enough; a float64 copy would take 1 GB
        model, x = copy.deepcopy(model).double(), x.double()
    attr = E.deeplift(model, x, targets, baseline=0.25, raw=True, eps=0.0)
    gap = score_gap(model, x, torch.full_like(x, 0.25), targets)
    tol = 1e-4 if name == "vgg11" else 1e-7
    assert torch.allclose(attr.sum((1, 2, 3)), gap, rtol=tol, atol=tol * float(gap.abs().max())), name


def test_deeplift_handles_a_relu_used_twice(nets):
    """ResNet's blocks call one nn.ReLU twice (Captum's module hooks refuse it): intercepted as
    calls, each call gets the rule, so the sum is the score's change, which the gradient misses."""
    model, x, targets = nets["resnet18"]
    ref = torch.full_like(x, 0.5)
    attr = E.deeplift(model, x, targets, baseline=0.5, raw=True)
    gap = score_gap(model, x, ref, targets)
    assert torch.allclose(attr.sum((1, 2, 3)), gap, rtol=1e-3, atol=1e-6)
    plain = E.gradient_x_input(model, x - ref, targets, raw=True)
    assert not torch.allclose(plain.sum((1, 2, 3)), gap, rtol=1e-2)
    assert torch._C._len_torch_function_stack() == 0


def test_deeplift_on_a_linear_model_is_weight_times_difference():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    x = torch.rand(2, 3, 8, 8)
    attr = E.deeplift(model, x, [1, 2], baseline=0.5, raw=True)
    w = model[1].weight.view(4, 3, 8, 8)
    assert torch.allclose(attr, w[[1, 2]] * (x - 0.5), atol=1e-6)


@pytest.mark.parametrize("name", ["shapes-classifier", "vgg11", "mnasnet0_5"])
def test_deeplift_shap_matches_captum_and_sums_to_the_mean_gap(nets, name):
    model, x, targets = nets[name]
    refs = torch.stack([torch.zeros(x.shape[1:]), torch.full(x.shape[1:], 0.5), torch.rand(x.shape[1:])])
    ours = E.explain(model, x, "deeplift-shap", target=targets, baselines=refs, raw=True)
    theirs = (
        captum_attr.DeepLiftShap(captum_deeplift_model(model)).attribute(x, target=targets, baselines=refs).detach()
    )
    for b in range(len(targets)):
        assert corr(ours[b], theirs[b]) >= 0.99, (name, b)
    gap = torch.stack([score_gap(model, x, r, targets) for r in refs]).mean(0)
    assert torch.allclose(ours.sum((1, 2, 3)), gap, rtol=1e-3, atol=1e-5 * float(gap.abs().max()) + 1e-9)


# --- GradientSHAP ---------------------------------------------------------------------------------


def captum_gradient_shap(model, x, targets, ref, samples, seed, monkeypatch):
    """Captum's GradientShap given our alphas (its only random draw with one baseline, no noise)."""
    alphas, _ = shap_draws(samples, 1, seed)
    # Captum repeats each image ``samples`` times in a row (image-major) and draws one alpha per row.
    rows = alphas.repeat(x.shape[0]).numpy()
    monkeypatch.setattr(np.random, "uniform", lambda low, high, size: rows[:size])
    peer = captum_attr.GradientShap(plain_relus(model))
    return peer.attribute(x, baselines=ref[None], target=targets, n_samples=samples, stdevs=0.0).detach()


@pytest.mark.parametrize("name", MODELS)
def test_gradient_shap_matches_captum_given_the_same_draws(nets, name, monkeypatch):
    model, x, targets = nets[name]
    ref = torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(3))
    ours = E.explain(model, x, "gradient-shap", target=targets, baselines=ref, samples=6, seed=5, raw=True)
    theirs = captum_gradient_shap(model, x, targets, ref, 6, 5, monkeypatch)
    for b in range(len(targets)):
        assert corr(ours[b], theirs[b]) >= 0.99, (name, b)


def test_gradient_shap_on_a_linear_model_and_its_draws():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4)).eval()
    x = torch.rand(2, 3, 8, 8)
    w = model[1].weight.view(4, 3, 8, 8)[[1, 2]]
    # Every baseline the same: the gradient is w at every point, so the estimate is exact.
    attr = E.gradient_shap(model, x, [1, 2], baselines=[0.3, 0.3], samples=5, raw=True)
    assert torch.allclose(attr, w * (x - 0.3), atol=1e-6)
    # Several baselines: w times (x - the mean of the baselines drawn).
    alphas, index = shap_draws(7, 3, seed=2)
    values = torch.tensor([0.0, 0.5, 1.0])
    attr = E.gradient_shap(model, x, [1, 2], baselines=values.tolist(), samples=7, seed=2, raw=True)
    assert torch.allclose(attr, w * (x - values[index].mean()), atol=1e-5)
    assert ((alphas >= 0) & (alphas < 1)).all() and len(set(index.tolist())) > 1
    # An image gets the same map alone as in a batch.
    alone = E.gradient_shap(model, x[1:], [2], baselines=values.tolist(), samples=7, seed=2, raw=True)
    assert torch.allclose(alone, attr[1:], atol=1e-6)


# --- SmoothGrad-squared and VarGrad ---------------------------------------------------------------


def captum_noise_tunnel(model, x, targets, nt_type, samples, noise, seed):
    """Captum's NoiseTunnel over the signed gradient, fed our noisy copies instead of its own."""
    copies = torch.cat([c for c, _ in noisy_copies(x, samples, noise, seed, samples * x.shape[0])])
    image_major = copies.view(samples, *x.shape).transpose(0, 1).reshape(-1, *x.shape[1:])

    class SameNoise(captum_attr.NoiseTunnel):
        @staticmethod
        def _add_noise_to_input(input, stdev, nt_samples_partition):
            return image_major.clone()

    peer = SameNoise(captum_attr.Saliency(plain_relus(model)))
    return peer.attribute(x, nt_type=nt_type, nt_samples=samples, target=targets, abs=False).detach()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("ours, theirs", [("smoothgrad-sq", "smoothgrad_sq"), ("vargrad", "vargrad")])
def test_noise_moments_match_captum_given_the_same_noise(nets, name, ours, theirs):
    model, x, targets = nets[name]
    raw = E.explain(model, x, ours, target=targets, samples=4, noise=0.2, seed=3, raw=True)
    ref = captum_noise_tunnel(model, x, targets, theirs, 4, 0.2, 3)
    maps = E.explain(model, x, ours, target=targets, samples=4, noise=0.2, seed=3)
    for b in range(len(targets)):
        assert corr(raw[b], ref[b]) >= 0.99, (name, ours, b)
    assert (maps >= 0).all()


def test_noise_moments_identities():
    """Without noise every copy has the same gradient: SmoothGrad-squared is its square and
    VarGrad is 0; with noise, E[g^2] = Var[g] + E[g]^2 ties the three noise methods together."""
    clf = zoo.load("shapes-classifier")
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    g = E.saliency(clf, x, [0, 1], raw=True)
    assert torch.allclose(E.smoothgrad_sq(clf, x, [0, 1], noise=0.0, samples=2, raw=True), g.square(), atol=1e-9)
    assert E.vargrad(clf, x, [0, 1], noise=0.0, samples=2, raw=True).abs().max() <= 1e-9
    kw = {"samples": 3, "noise": 0.1, "seed": 7, "raw": True}
    mean = E.smoothgrad(clf, x, [0, 1], **kw)
    var, sq = E.vargrad(clf, x, [0, 1], **kw), E.smoothgrad_sq(clf, x, [0, 1], **kw)
    assert torch.allclose(var + mean.square(), sq, atol=1e-6 * float(sq.max()))


# --- bad input ------------------------------------------------------------------------------------


def test_bad_baselines_and_options_are_refused_with_a_sentence():
    clf = zoo.load("shapes-classifier")
    x = torch.rand(2, 3, 96, 96)
    with pytest.raises(ValueError, match="baseline tensor must have the image's shape"):
        E.deeplift(clf, x, 0, baseline=torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"baselines must be an image of shape \(3, 96, 96\)"):
        E.deeplift_shap(clf, x, 0, baselines=torch.zeros(4, 3, 32, 32))
    with pytest.raises(ValueError, match="baselines must be an image"):
        E.gradient_shap(clf, x, 0, baselines=torch.zeros(4, 1, 96, 96))
    with pytest.raises(ValueError, match="baselines is empty"):
        E.gradient_shap(clf, x, 0, baselines=[])
    with pytest.raises(TypeError, match="baselines must be a number"):
        E.deeplift_shap(clf, x, 0, baselines="black")
    with pytest.raises(ValueError, match="eps must be a number >= 0"):
        E.deeplift(clf, x, 0, eps=-1.0)
    with pytest.raises(ValueError, match="samples must be a positive int"):
        E.gradient_shap(clf, x, 0, samples=0)
    with pytest.raises(ValueError, match="samples must be a positive int"):
        E.vargrad(clf, x, 0, samples=0)
    with pytest.raises(ValueError, match="target"):
        E.deeplift(clf, x, 99)
    with pytest.raises(ValueError, match="has no option 'baseline'"):
        E.explain(clf, x, "deeplift-shap", baseline=0.0)
    with pytest.raises(TypeError, match="scripted model"):
        E.deeplift(torch.jit.trace(clf, x[:1]), x, 0)


def test_an_error_inside_the_forward_leaves_no_rule_behind():
    class Boom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            torch.relu(self.conv(x))
            raise RuntimeError("boom")

    model = Boom().eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(RuntimeError, match="boom"):
        E.deeplift(model, torch.rand(1, 3, 8, 8), 0)
    assert torch._C._len_torch_function_stack() == 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
