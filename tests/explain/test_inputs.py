"""Inputs real notebooks bring: grey and 4-channel models, NaN/inf pixels, a dtype that does not
match the model, torch.inference_mode(), scripted models, a window given as a float or a numpy
int, images of another size than the last call, a model that carries a Guide."""

import numpy as np
import pytest
import torch
from torch import nn

from guidewidgets import explain as E
from guidewidgets.explain import layers

CNN_METHODS = [m for m in E.methods() if E.method_info(m).family != "attention"]


class Net(nn.Module):
    """A small CNN taking ``c`` channels (1: MNIST-style grey, 4: RGBA or RGB + depth)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def options(name):
    return dict(E.method_info(name).quick)


@pytest.mark.parametrize("c", [1, 4])
@pytest.mark.parametrize("name", CNN_METHODS)
def test_every_method_on_grey_and_four_channel_models(c, name):
    torch.manual_seed(0)
    model = Net(c).eval()
    x = torch.rand(2, c, 12, 12, generator=torch.Generator().manual_seed(1))
    maps = E.explain(model, x, name, **options(name))
    assert maps.shape == (2, 12, 12) and torch.isfinite(maps).all()
    if E.method_info(name).has_image:
        raw = E.explain(model, x, name, raw=True, **options(name))
        assert raw.shape == x.shape


def test_per_channel_fill_and_channel_messages():
    model = Net(4).eval()
    x = torch.rand(1, 4, 12, 12)
    a = E.occlusion(model, x, 0, window=4, stride=4, fill=[0.0, 0.0, 0.0, 0.0])
    b = E.occlusion(model, x, 0, window=4, stride=4, fill=0.0)
    assert torch.allclose(a, b)
    with pytest.raises(ValueError, match=r"one per channel \(4\)"):
        E.occlusion(model, x, 0, window=4, fill=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match=r"takes 4 channels.*\(B, 4, H, W\)"):
        E.grad_cam(model, torch.rand(1, 3, 12, 12))
    grey = Net(1).eval()
    with pytest.raises(ValueError, match=r"takes 1 channel .*grey images: use x\[:, :3\]\.mean\(1, keepdim=True\)"):
        E.grad_cam(grey, torch.rand(1, 3, 12, 12))
    rgb = Net(3).eval()
    with pytest.raises(ValueError, match=r"expand\(-1, 3, -1, -1\)"):
        E.grad_cam(rgb, torch.rand(1, 1, 12, 12))
    with pytest.raises(ValueError, match=r"alpha channel: x\[:, :3\]"):
        E.grad_cam(rgb, torch.rand(1, 4, 12, 12))
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        E.grad_cam(grey, torch.rand(1, 12, 12))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_or_inf_pixels_are_refused(bad):
    x = torch.rand(2, 3, 8, 8)
    x[1, 0, 2, 3] = bad
    with pytest.raises(ValueError, match=r"1 NaN or infinite value.*nan_to_num"):
        E.saliency(Net(3).eval(), x)


def test_dtype_mismatch_names_the_conversion():
    model = Net(3).eval()
    with pytest.raises(
        TypeError, match=r"torch.float64 but the model's weights are torch.float32.*x.to\(torch.float32\)"
    ):
        E.grad_cam(model, torch.rand(1, 3, 8, 8, dtype=torch.float64))
    maps = E.grad_cam(model.double(), torch.rand(1, 3, 8, 8, dtype=torch.float64))  # both float64: fine
    assert maps.dtype == torch.float64


def test_inference_mode_says_to_leave_it():
    model = Net(3).eval()
    with torch.inference_mode():
        x = torch.rand(1, 3, 8, 8)
        with pytest.raises(ValueError, match="outside that block"):
            E.saliency(model, x)
    # a tensor made under inference_mode is fine outside it (explain takes a normal copy)
    assert E.saliency(model, x).shape == (1, 8, 8)
    assert E.grad_cam(model, x).shape == (1, 8, 8)


def test_scripted_models_what_works_and_what_is_refused():
    torch.manual_seed(0)
    model = Net(3).eval()
    x = torch.rand(1, 3, 8, 8)
    scripted = torch.jit.script(model)
    traced = torch.jit.trace(model, x)
    for m in (scripted, traced):
        for name in ("saliency", "smoothgrad", "occlusion", "rise"):
            ours = E.explain(m, x, name, target=1, **options(name))
            assert torch.allclose(ours, E.explain(model, x, name, target=1, **options(name)), atol=1e-6)
        for name in ("grad-cam", "cam", "guided-backprop", "deconvnet", "guided-grad-cam"):
            with pytest.raises(TypeError, match=r"scripted model.*Explain the original nn.Module"):
                E.explain(m, x, name)


@pytest.mark.parametrize(
    "window, exc, match",
    [
        (4.0, TypeError, r"got 4.0: a float \(use int\(4.0\)\)"),
        ((4, 2.5), TypeError, "a float"),
        ("4", TypeError, "pair of ints"),
        (True, TypeError, "a bool"),
        (0, ValueError, "positive int"),
        ((4, 4, 4), ValueError, "pair"),
    ],
)
def test_window_must_be_ints(window, exc, match):
    with pytest.raises(exc, match=match):
        E.occlusion(Net(3).eval(), torch.rand(1, 3, 8, 8), window=window)


def test_numpy_and_tensor_ints_are_windows():
    model, x = Net(3).eval(), torch.rand(1, 3, 8, 8)
    ref = E.occlusion(model, x, 0, window=4, stride=2)
    for w, s in [(np.int64(4), np.int32(2)), (np.array([4, 4]), (2, np.int16(2))), (torch.tensor(4), 2)]:
        assert torch.equal(E.occlusion(model, x, 0, window=w, stride=s), ref)


class Shrinks(nn.Module):
    """Two conv blocks; the second halves the map. On a 2 x 2 image its map is 1 x 1 (no map)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(4, 4, 2, stride=2), nn.ReLU())
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3)))


def test_default_layer_is_chosen_for_each_input_size():
    model = Shrinks().eval()
    small, large = torch.rand(1, 3, 2, 2), torch.rand(1, 3, 16, 16)
    assert layers.resolve_layer(model, small, None) == "a"  # b's output is 1 x 1 here
    assert layers.resolve_layer(model, large, None) == "b"  # not the small image's choice
    assert layers.resolve_layer(model, small, None) == "a"
    # the maps follow: Grad-CAM at 'b' (8 x 8 upsampled) differs from Grad-CAM at 'a'
    assert torch.allclose(E.grad_cam(model, large, 0), E.grad_cam(model, large, 0, layer="b"))


def test_explain_on_a_guided_model_says_so(monkeypatch):
    import guidewidgets.owners as owners

    model = Net(3).eval()
    monkeypatch.setattr(owners, "owner_of", lambda m: object() if m is model else None)
    with pytest.warns(UserWarning, match=r"carries an open Guide.*guide.close\(\)"):
        E.grad_cam(model, torch.rand(1, 3, 8, 8))
