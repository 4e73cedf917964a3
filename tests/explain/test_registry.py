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


def test_a_method_is_its_own_part_with_the_public_signature_built(private_registry):
    calls: list[registry.Call] = []

    @registry.method("power-grad", "Power gradient", "gradient", "a test", "|grad| ** power.", order=175)
    def power_grad(c: registry.Call, *, power: float = 2.0, raw: bool = False) -> torch.Tensor:
        """Power gradient: |d y / d x| ** power, largest over channels."""
        calls.append(c)
        xg = c.x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(c.target.scores(c.model(xg)).sum(), xg)
        image = g.abs() ** power
        return image if raw else image.amax(1)

    params = inspect.signature(power_grad).parameters
    assert list(params) == ["model", "x", "target", "layer", "progress", "power", "raw"]
    assert [params[p].default for p in ("target", "layer", "progress", "power", "raw")] == [
        None,
        None,
        None,
        2.0,
        False,
    ]
    assert all(params[p].kind is inspect.Parameter.KEYWORD_ONLY for p in ("progress", "power", "raw"))
    assert (power_grad.__name__, power_grad.__module__) == ("power_grad", __name__)
    assert power_grad.__qualname__.endswith("power_grad") and "Power gradient: |d y" in power_grad.__doc__
    assert E.method_function("power-grad") is power_grad
    assert E.methods().index("power-grad") == E.methods().index("smoothgrad") + 1  # order=175
    info = E.method_info("power-grad")
    assert (info.family, info.uses_layer, info.slow, info.target_kind) == ("gradient", False, False, "class")

    model, x = Flat().eval(), torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    seen: list[float] = []
    got = E.explain(model, x, "power-grad", target=[1, 2], layer="features", progress=seen.append, power=1.0)
    xg = x.clone().requires_grad_(True)
    model(xg)[[0, 1], [1, 2]].sum().backward()
    torch.testing.assert_close(got, xg.grad.abs().amax(1))
    c = calls[-1]
    assert isinstance(c.target, Target) and c.target.ints == [1, 2]
    assert c.layer == "features" and c.model is model and seen[-1] == 1.0  # layer as given: not uses_layer
    with pytest.raises(ValueError, match="has no option 'samples'.*power, raw"):
        E.explain(model, x, "power-grad", samples=3)
    with pytest.raises(TypeError, match="target"):
        power_grad(model, x, target="cat")  # checked before the method's own part runs


def test_method_resolves_the_layer_checks_options_and_takes_its_own_target_check(private_registry):
    seen: list[registry.Call] = []

    def unit(target: object, batch: int) -> tuple:
        return ("unit", target, batch)

    @registry.method("layer-probe", "Layer probe", "gradient", "a test", "x", order=9999, uses_layer=True)
    def layer_probe(c: registry.Call) -> torch.Tensor:
        seen.append(c)
        return c.x[:, 0]

    @registry.method("unit-probe", "Unit probe", "gradient", "a test", "x", order=9999, check_target=unit)
    def unit_probe(c: registry.Call) -> torch.Tensor:
        seen.append(c)
        return c.x[:, 0]

    model, x = Flat().eval(), torch.rand(1, 3, 8, 8)
    model.default_explain_layer = "features"
    layer_probe(model, x)
    assert seen[-1].layer == "features"  # the default filled in
    with pytest.raises(ValueError, match="featurs"):
        layer_probe(model, x, layer="featurs")  # a typo is named
    unit_probe(model, x, target=5)
    assert seen[-1].target == ("unit", 5, 1)
    with pytest.raises(TypeError, match="keyword-only"):

        @registry.method("bad", "Bad", "gradient", "a test", "x", order=9999)
        def bad(c: registry.Call, power: float = 2.0) -> torch.Tensor:
            return c.x[:, 0] ** power

    assert "bad" not in E.methods()


def test_fixed_target_fixes_the_prediction_once():
    model, x = Flat().eval(), torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    given = registry.Call(model, x, Target(3, 2), None, None)
    assert given.fixed_target() is given.target  # nothing to fix: no forward
    free = registry.Call(model, x, Target(None, 2), None, None)
    fixed = free.fixed_target()
    assert not fixed.needs_prediction
    torch.testing.assert_close(fixed.scores(model(x)), model(x).amax(1))
