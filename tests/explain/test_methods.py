"""Every registered method: shape, device, finiteness, sign, batching, options and identities."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from guidewidgets import explain as E
from guidewidgets import hooks
from guidewidgets.explain import layers

# Methods for any CNN (attention rollout needs a transformer: tests/explain/test_transformers.py).
CNN_METHODS = [m for m in E.methods() if E.method_info(m).family != "attention"]


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 16, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x))


class Tiny(nn.Module):
    """Conv net with an inplace ReLU, a functional ReLU, and a GAP + linear head."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True), nn.MaxPool2d(2), Block()
        )
        self.fc = nn.Linear(16, k)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class TinySeg(nn.Module):
    """Segmentation-shaped output (B, K, H, W) at input resolution."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Conv2d(8, k, 1)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = Tiny()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        m.features[1].running_mean.uniform_(-0.2, 0.2)
        m.features[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture
def x():
    return torch.rand(8, 3, 24, 24, generator=torch.Generator().manual_seed(3))


def run(model, x, name, **kw):
    return E.explain(model, x, name, **{**E.method_info(name).quick, **kw})


def test_registry_lists_every_method_with_info():
    expected = [
        "cam",
        "grad-cam",
        "grad-cam++",
        "smooth-grad-cam++",
        "saliency",
        "guided-backprop",
        "deconvnet",
        "guided-grad-cam",
        "smoothgrad",
        "occlusion",
        "rise",
        "attention-rollout",
    ]
    # Other method modules (explain/cam_gradient_free.py ...) register more; these keep their order.
    assert [m for m in E.methods() if m in expected] == expected
    for name in expected:
        info = E.method_info(name)
        assert info.name == name and info.title and info.reference and info.summary
        assert info.family in ("cam", "gradient", "perturbation", "attention")
        assert info.uses_layer == (info.family == "cam" or name == "guided-grad-cam")
        assert info.slow == bool(info.quick)  # the cheap options tests use
        with pytest.raises(Exception):
            info.name = "x"  # frozen
    assert E.method_info("Grad_CAM").name == "grad-cam"


@pytest.mark.parametrize("name", CNN_METHODS)
def test_shape_finite_sign_and_batch_equals_singles(model, x, name):
    maps = run(model, x, name)
    assert maps.shape == (8, 24, 24) and maps.dtype == x.dtype and maps.device == x.device
    assert not maps.requires_grad
    assert torch.isfinite(maps).all()
    if not E.method_info(name).signed:
        assert (maps >= 0).all()
    assert maps.abs().amax((1, 2)).gt(0).all()  # not degenerate
    singles = torch.cat([run(model, x[i : i + 1], name) for i in range(8)])
    scale = float(maps.abs().max())
    assert torch.allclose(maps, singles, rtol=1e-4, atol=1e-5 * scale)


# Unsigned gradient images reduce to the map by the largest absolute value over channels; signed
# attributions (integrated gradients, gradient x input) have their own reduction.
@pytest.mark.parametrize("name", [n for n in CNN_METHODS if E.method_info(n).has_image and not E.method_info(n).signed])
def test_raw_image_is_signed_and_reduces_to_the_map(model, x, name):
    raw = run(model, x, name, raw=True)
    assert raw.shape == x.shape and torch.isfinite(raw).all()
    assert torch.allclose(raw.abs().amax(1), run(model, x, name))


@pytest.mark.parametrize("name", CNN_METHODS)
def test_target_forms_agree(model, x, name):
    """None = predicted class; int, list, tensor and callable give the same maps for those classes."""
    with torch.no_grad():
        pred = model(x).argmax(1)
    neuron = E.method_info(name).target_kind == "neuron"
    if neuron:  # None is each sample's most active channel at the layer; ints are channels
        with torch.no_grad(), hooks.capture(model, layers.resolve_layer(model, x, None), cut=False) as cap:
            model(x)
        pred = cap.activations.sum((2, 3)).argmax(1)
    base = run(model, x, name)
    assert torch.allclose(run(model, x, name, target=pred.tolist()), base)
    assert torch.allclose(run(model, x, name, target=pred), base)
    assert torch.allclose(run(model, x, name, target=pred.numpy()), base)
    same = run(model, x[:2], name, target=2)
    assert torch.allclose(same, run(model, x[:2], name, target=[2, 2]))
    if name == "cam":
        return  # CAM needs class indices (tested among the errors)
    if neuron:  # a callable names a class score, not a unit of the layer
        with pytest.raises(TypeError, match="callable target has no meaning"):
            run(model, x, name, target=lambda out: out[:, 0])
        return
    by_fn = run(model, x, name, target=lambda out: out.gather(1, pred[: out.shape[0], None])[:, 0])
    if name == "rise":  # RISE scores class probabilities; a callable gives raw scores
        by_fn = run(model, x, name, target=lambda out: out.softmax(1).gather(1, pred[:, None])[:, 0])
    assert torch.allclose(by_fn, base, rtol=1e-5, atol=1e-6 * float(base.abs().max()))


@pytest.mark.parametrize("name", CNN_METHODS)
def test_progress_reaches_one_and_grad_mode_is_kept(model, x, name):
    seen = []
    with torch.no_grad():
        run(model, x[:2], name, progress=seen.append)
        assert not torch.is_grad_enabled()
    assert seen and seen[-1] == pytest.approx(1.0) and seen == sorted(seen)


def test_cam_equals_grad_cam_up_to_positive_scale(model, x):
    c, g = E.cam(model, x), E.grad_cam(model, x)
    ratio = c.sum((1, 2)) / g.sum((1, 2))
    assert (ratio > 0).all()
    assert torch.allclose(c, g * ratio[:, None, None], rtol=1e-4, atol=1e-6 * float(c.max()))
    # on a GAP-linear head the gradient is w / (h * w): the scale is the map's pixel count
    assert torch.allclose(ratio, torch.full_like(ratio, 12 * 12), rtol=1e-4)


def test_cam_of_all_classes_is_each_class_cam_from_one_forward(model, x):
    E.cam(model, x)  # the first call finds the default layer with a forward of its own
    calls: list[str] = []
    handle = model.register_forward_hook(lambda *_: calls.append(mode))
    try:
        mode = "all"
        every = E.cam_all_classes(model, x)
        mode = "one"
        E.cam(model, x, target=0)
    finally:
        handle.remove()
    k = model(x).shape[1]
    assert k > 2 and calls.count("all") == calls.count("one")  # the cost of one class's CAM
    assert every.shape == (x.shape[0], k, *x.shape[-2:])
    for c in range(k):
        assert torch.allclose(every[:, c], E.cam(model, x, target=c), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="grad-cam"):
        E.cam_all_classes(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)), x)


def test_smooth_variants_without_noise_are_their_plain_methods(model, x):
    assert torch.allclose(
        E.smooth_grad_cam_pp(model, x, noise=0.0, samples=2), E.grad_cam_pp(model, x), rtol=1e-5, atol=1e-7
    )
    raw = E.smoothgrad(model, x, noise=0.0, samples=2, raw=True)
    assert torch.allclose(raw, E.saliency(model, x, raw=True), rtol=1e-5, atol=1e-9)


def test_seeded_methods_are_reproducible_and_seed_matters(model, x):
    for name in ("smoothgrad", "rise"):
        a, b = run(model, x[:2], name), run(model, x[:2], name)
        assert torch.equal(a, b)
        assert not torch.equal(a, run(model, x[:2], name, seed=1))


def test_guided_grad_cam_is_guided_backprop_times_grad_cam(model, x):
    gb = E.guided_backprop(model, x, raw=True)
    gc = E.grad_cam(model, x, layer="features")
    ggc = E.guided_grad_cam(model, x, layer="features", raw=True)
    assert torch.allclose(ggc, gb * gc[:, None], rtol=1e-5, atol=1e-9)


def test_guided_grad_cam_with_relus_after_the_layer(model, x):
    """Layer features.0: ReLUs follow it, so Grad-CAM must come from plain gradients."""
    gb = E.guided_backprop(model, x, raw=True)
    gc = E.grad_cam(model, x, layer="features.0")
    ggc = E.guided_grad_cam(model, x, layer="features.0", raw=True)
    assert torch.allclose(ggc, gb * gc[:, None], rtol=1e-5, atol=1e-9)


def test_saliency_of_a_linear_model_is_its_weights():
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    x = torch.rand(2, 3, 8, 8)
    raw = E.saliency(lin, x, target=[1, 3], raw=True)
    w = lin[1].weight.detach().view(4, 3, 8, 8)
    assert torch.allclose(raw, w[[1, 3]])


def test_occlusion_of_a_linear_model_is_exact():
    """Score drop of a linear model with a zero patch = sum of w * x over the patch."""
    lin = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    x = torch.rand(1, 3, 8, 8)
    maps = E.occlusion(lin, x, target=0, window=4, stride=4, fill=0.0)
    contrib = (lin[1].weight[0].detach().view(3, 8, 8) * x[0]).sum(0)
    expected = F.avg_pool2d(contrib[None, None], 4)[0, 0] * 16
    assert torch.allclose(maps[0], expected.repeat_interleave(4, 0).repeat_interleave(4, 1), atol=1e-5)


def test_rise_of_a_constant_model_is_flat():
    class Const(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape[0], 2, device=x.device) + x.sum() * 0

    maps = E.rise(Const(), torch.rand(1, 3, 16, 16), target=0, masks=200, cells=4)
    # score 0.5 always: the map is 0.5 * mean(mask) / p, close to 0.5 everywhere
    assert torch.allclose(maps, torch.full_like(maps, 0.5), atol=0.08)


def test_segmentation_targets():
    torch.manual_seed(0)
    seg = TinySeg().eval()
    x = torch.rand(2, 3, 16, 16)
    region = torch.zeros(2, 16, 16)
    region[:, 4:10, 4:10] = 1
    # an int class on a dense output is the sum of that class's logits over all pixels
    a = E.grad_cam(seg, x, target=1, layer="body")
    b = E.grad_cam(seg, x, target=lambda out: out[:, 1].sum((1, 2)), layer="body")
    assert torch.allclose(a, b)
    for name in CNN_METHODS:
        if name == "cam":
            continue
        target = lambda out: (out[:, 2] * region).sum((1, 2))  # noqa: E731
        if E.method_info(name).target_kind == "neuron":
            target = 1  # a channel of the layer: a region's class score is no unit
        maps = run(seg, x, name, target=target, layer="body")
        assert maps.shape == (2, 16, 16) and torch.isfinite(maps).all()
    with pytest.raises(ValueError, match="grad-cam"):
        E.cam(seg, x, target=1, layer="body")


def test_torchvision_segmenter_dict_output_is_accepted():
    class DictOut(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = TinySeg()

        def forward(self, x):
            return {"out": self.net(x), "aux": None}

    m = DictOut().eval()
    maps = E.grad_cam(m, torch.rand(1, 3, 16, 16), target=1, layer="net.body")
    assert maps.shape == (1, 16, 16)


def test_default_layer_and_model_attribute(model, x):
    assert torch.equal(E.grad_cam(model, x), E.grad_cam(model, x, layer="features"))
    model.default_explain_layer = "features.0"
    assert torch.equal(E.grad_cam(model, x), E.grad_cam(model, x, layer="features.0"))
    assert torch.equal(E.grad_cam(model, x, layer=model.features[0]), E.grad_cam(model, x, layer="features.0"))


def test_densenet_style_relu_after_features_is_found_by_cam():
    """The head averages relu(features): CAM uses relu(A) and still matches the logits."""

    class ReluHead(Tiny):
        def forward(self, x):
            return self.fc(F.relu(self.features[:4](x), inplace=True).mean((2, 3)))

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 5)

    torch.manual_seed(0)
    m = ReluHead().eval()
    x = torch.rand(2, 3, 16, 16)
    c = E.cam(m, x, target=[0, 1], relu=False, layer="features.3")
    logits = m(x).detach()
    bias = m.fc.bias.detach()[[0, 1]]
    # the spatial mean of the unrectified CAM plus the bias is the logit (bilinear x2 keeps means)
    assert torch.allclose(c.mean((1, 2)) + bias, logits[[0, 1], [0, 1]], atol=1e-5)
    with pytest.raises(ValueError, match="not the spatial mean"):
        E.cam(m, x, layer="features.1")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", CNN_METHODS)
def test_cuda_matches_cpu(model, x, name):
    cpu = run(model, x[:2], name)
    gpu = run(model.cuda(), x[:2].cuda(), name)
    assert gpu.device.type == "cuda"
    if name in ("smoothgrad", "smooth-grad-cam++", "rise"):
        return  # the CUDA generator draws other numbers for the same seed
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-3, atol=1e-4 * float(cpu.abs().max()))
