"""Bad input gets a ValueError/TypeError whose message names the fix."""

import pytest
import torch
from torch import nn

from guidewidgets import explain as E

# Methods for any CNN (attention rollout needs a transformer: tests/explain/test_transformers.py).
CNN_METHODS = [m for m in E.methods() if E.method_info(m).family != "attention"]
# Methods whose target is a class (neuron methods take a unit of the layer: tests/explain/test_neuron_attribution.py).
CLASS_METHODS = [m for m in CNN_METHODS if E.method_info(m).target_kind == "class"]


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class NoGap(nn.Module):
    """Flatten + MLP head (like VGG): no global average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def model():
    return Tiny().eval()


X = torch.rand(2, 3, 8, 8)


def test_unknown_method_suggests_close_names(model):
    with pytest.raises(ValueError, match=r"Did you mean 'grad-cam'.*methods\(\)"):
        E.explain(model, X, "gradcam")
    with pytest.raises(ValueError, match="Unknown explanation method 'no-such-method'"):
        E.method_info("no-such-method")  # (not 'lime': the superpixel methods registered it)
    with pytest.raises(TypeError, match="name"):
        E.explain(model, X, 3)


def test_unknown_layer_suggests_close_names(model):
    with pytest.raises(ValueError, match=r"No layer named 'feature'.*'features'"):
        E.grad_cam(model, X, layer="feature")
    with pytest.raises(ValueError, match="feature map"):
        E.grad_cam(model, X, layer="fc")  # a (B, K) output is no feature map


@pytest.mark.parametrize(
    "bad, exc, fix",
    [
        (torch.rand(3, 8, 8), ValueError, r"unsqueeze\(0\)"),
        (torch.rand(2, 8, 8, 3), ValueError, "permute"),
        (torch.rand(2, 1, 8, 8), ValueError, "expand"),
        (torch.rand(8, 8), ValueError, r"\(B, 3, H, W\)"),
        ((torch.rand(2, 3, 8, 8) * 255).to(torch.uint8), TypeError, "255"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_images(model, bad, exc, fix):
    for name in ("grad-cam", "saliency", "occlusion"):
        with pytest.raises(exc, match=fix):
            E.explain(model, bad, name)


@pytest.mark.parametrize("name", CLASS_METHODS)
def test_targets_out_of_range_or_wrong_length(model, name):
    with pytest.raises(ValueError, match="from 0 to 2"):
        E.explain(model, X, name, target=3)
    with pytest.raises(ValueError, match="from 0 to 2"):
        E.explain(model, X, name, target=[0, -1])
    with pytest.raises(ValueError, match="one per sample"):
        E.explain(model, X, name, target=[0, 1, 2])
    with pytest.raises(TypeError, match="int class index"):
        E.explain(model, X, name, target="cat")
    with pytest.raises(TypeError, match="integer class indices"):
        E.explain(model, X, name, target=torch.tensor([0.5, 1.0]))


@pytest.mark.parametrize("name", [n for n in CLASS_METHODS if n != "cam"])
def test_target_callable_must_return_one_score_per_sample(model, name):
    with pytest.raises(ValueError, match=r"one score per sample, shape \(2,\)"):
        E.explain(model, X, name, target=lambda out: out.sum())


def test_cam_without_gap_linear_head_says_use_grad_cam():
    with pytest.raises(ValueError, match="Use method 'grad-cam'"):
        E.cam(NoGap().eval(), X)
    assert E.grad_cam(NoGap().eval(), X).shape == (2, 8, 8)


def test_cam_with_callable_target_says_use_grad_cam(model):
    with pytest.raises(ValueError, match="grad-cam"):
        E.cam(model, X, target=lambda out: out[:, 0])


def test_unknown_or_misplaced_options(model):
    with pytest.raises(ValueError, match="raw=True is only for methods that make an image"):
        E.explain(model, X, "grad-cam", raw=True)
    with pytest.raises(ValueError, match="window, stride, fill, batch_size"):
        E.explain(model, X, "occlusion", windw=4)
    with pytest.raises(ValueError, match="larger than the image"):
        E.occlusion(model, X, window=16)
    with pytest.raises(ValueError, match="positive int"):
        E.occlusion(model, X, window=0)
    with pytest.raises(ValueError, match="samples must be a positive int"):
        E.smoothgrad(model, X, samples=0)
    with pytest.raises(ValueError, match="masks must be a positive int"):
        E.rise(model, X, masks=0)
    with pytest.raises(ValueError, match=r"p \(the probability"):
        E.rise(model, X, p=0)
    with pytest.raises(TypeError, match="progress"):
        E.grad_cam(model, X, progress=1)


def test_model_output_must_be_logits():
    class Bad(nn.Module):
        def forward(self, x):
            return [x]

    with pytest.raises(TypeError, match="logits"):
        E.saliency(Bad(), X)
    with pytest.raises(TypeError, match="nn.Module"):
        E.saliency(lambda x: x, X)


# Methods that never differentiate the target's scores (forward passes only): a detaching callable works.
# forward-only methods: every perturbation method and the gradient-free CAMs
NO_GRADIENT = {"eigen-cam", "ablation-cam", "score-cam", "kpca-cam", "ss-cam", "is-cam"} | {
    n for n in E.methods() if E.method_info(n).family == "perturbation"
}
CALLABLE_METHODS = [n for n in CLASS_METHODS if n != "cam"]  # CAM refuses callables (test above)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", CALLABLE_METHODS)
def test_target_callable_with_non_finite_scores_is_named(model, name, bad):
    def my_score(out):
        return out[:, 0] + torch.tensor([0.0, bad])  # sample 1 only

    with pytest.raises(
        ValueError, match=rf"target callable .*my_score returned non-finite scores \({bad}\) for sample 1"
    ):
        E.explain(model, X, name, target=my_score, **E.method_info(name).quick)


@pytest.mark.parametrize("name", CALLABLE_METHODS)
def test_target_callable_that_detaches_is_named_where_gradients_are_needed(model, name):
    def detached(out):
        return out[:, 0].detach()

    if name in NO_GRADIENT:
        want = E.explain(model, X, name, target=lambda out: out[:, 0], **E.method_info(name).quick)
        torch.testing.assert_close(E.explain(model, X, name, target=detached, **E.method_info(name).quick), want)
        return
    with pytest.raises(ValueError, match=r"target callable .*detached breaks the autograd graph.*\.item\(\)"):
        E.explain(model, X, name, target=detached, **E.method_info(name).quick)
    with pytest.raises(ValueError, match="breaks the autograd graph"):  # scores rebuilt from Python numbers
        E.explain(model, X, name, target=lambda out: torch.tensor(out[:, 0].tolist()), **E.method_info(name).quick)
