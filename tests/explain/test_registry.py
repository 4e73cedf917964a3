"""The registry and the CAM base: methods() follows each method's explicit order (not import
order), every slow method carries the quick options tests use, a CAM variant is a few lines on
the base, and ``reshape=`` works for every method that explains a layer."""

import inspect

import pytest
import torch
from torch import nn

from guidewidgets import explain as E
from guidewidgets.explain import registry
from guidewidgets.explain.cam_base import gradient_cam
from guidewidgets.explain.layers import layer_gradients
from guidewidgets.explain.targets import Target

# The widget's number keys and the notebooks depend on this order.
ORDER = [
    "cam",
    "grad-cam",
    "grad-cam++",
    "smooth-grad-cam++",
    "augmented-grad-cam",
    "layer-cam",
    "xgrad-cam",
    "hires-cam",
    "sharpen-focus",
    "eigen-cam",
    "ablation-cam",
    "score-cam",
    "saliency",
    "guided-backprop",
    "deconvnet",
    "guided-grad-cam",
    "smoothgrad",
    "gradient-x-input",
    "integrated-gradients",
    "occlusion",
    "rise",
    "attention-rollout",
]
LAYER_METHODS = [m for m in E.methods() if E.method_info(m).uses_layer]


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the registry for one test, so that what it registers leaves no trace."""
    monkeypatch.setattr(registry, "_INFO", dict(registry._INFO))
    monkeypatch.setattr(registry, "_FUNCS", dict(registry._FUNCS))


def test_methods_follow_the_explicit_order_not_registration_order(private_registry):
    listed = E.methods()
    assert [m for m in listed if m in ORDER] == ORDER  # later waves add methods in between or after
    registry._INFO = dict(reversed(list(registry._INFO.items())))  # as if imported the other way round
    assert E.methods() == listed
    orders = [E.method_info(m).order for m in listed]
    assert orders == sorted(orders)


def test_every_slow_method_has_quick_options_it_accepts():
    for name in E.methods():
        info = E.method_info(name)
        assert info.slow == bool(info.quick), name
        params = inspect.signature(E.method_function(name)).parameters
        for key in info.quick:
            assert params[key].kind is inspect.Parameter.KEYWORD_ONLY, (name, key)
        with pytest.raises(TypeError):
            info.quick["samples"] = 1  # read-only: shared by every caller


def test_method_info_defaults():
    info = registry.MethodInfo("x", "X", "gradient", "ref", "what it shows")
    assert (info.uses_layer, info.signed, info.slow, info.has_image, dict(info.quick)) == (
        False,
        False,
        False,
        False,
        {},
    )
    assert info.order > max(E.method_info(m).order for m in ORDER)  # unordered ones come after these


class Flat(nn.Module):
    """A small CNN whose ``flat`` layer outputs (B, C*h*w): a layout no automatic grid knows."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.flat = nn.Flatten()
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        a = self.flat(self.features(x)).view(x.shape[0], 6, x.shape[2] // 2, x.shape[3] // 2)
        return self.fc(a.mean((2, 3)))


def test_a_cam_variant_is_a_few_lines_on_the_base(private_registry):
    @gradient_cam("squared-cam", "Squared-CAM", "a test", "Grad-CAM with squared gradients.", order=95)
    def squared_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Squared-CAM: w_k = mean_ij (dy/dA_k)^2."""
        return (g * g).mean((2, 3))

    assert E.methods().index("squared-cam") == E.methods().index("sharpen-focus") + 1
    assert squared_cam.__name__ == "squared_cam" and "Squared-CAM: w_k" in squared_cam.__doc__
    info = E.method_info("squared-cam")
    assert info.family == "cam" and info.uses_layer and not info.slow
    model, x = Flat().eval(), torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    a, g, _ = layer_gradients(model, x, Target([1, 2], 2), "features")
    want = torch.einsum("bc,bchw->bhw", (g * g).mean((2, 3)), a).clamp_min(0)
    want = nn.functional.interpolate(want[:, None], size=(8, 8), mode="bilinear", align_corners=False)[:, 0]
    got = E.explain(model, x, "squared-cam", target=[1, 2], layer="features")
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="has no option 'samples'.*relu, reshape"):
        E.explain(model, x, "squared-cam", samples=3)


@pytest.mark.parametrize("name", LAYER_METHODS)
def test_reshape_works_for_every_layer_method(name):
    """At the flattened layer with ``reshape`` the maps equal those at the conv block before it."""
    model, x = Flat().eval(), torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    assert "reshape" in inspect.signature(E.method_function(name)).parameters
    opts = dict(E.method_info(name).quick)

    def grid(t):
        return t.view(t.shape[0], 6, 4, 4)

    if name == "ablation-cam":  # it writes edited maps back into the layer: only a (B, C, h, w) one
        with pytest.raises(ValueError, match="writes edited"):
            E.explain(model, x, name, target=1, layer="flat", reshape=grid, **opts)
        return
    want = E.explain(model, x, name, target=1, layer="features", **opts)
    got = E.explain(model, x, name, target=1, layer="flat", reshape=grid, **opts)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()) + 1e-12)
    with pytest.raises(ValueError, match="reshape=callable"):
        E.explain(model, x, name, target=1, layer="flat", **opts)  # (B, 96) is no map
