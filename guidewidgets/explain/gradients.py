"""Gradient images: saliency, guided backprop, deconvnet, guided Grad-CAM and SmoothGrad.

Each computes a (B, C, H, W) image of input gradients (returned as is with ``raw=True``); the map
is its largest absolute value over the colour channels (Simonyan et al.).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from .. import hooks
from ..hooks import ReLURule, model_output
from .batching import Progress, auto_batch_size
from .layers import Reshape, check_feature_map, check_reshape, layer_gradients, resolve_layer, upsample
from .noise import noisy_copies
from .registry import MethodInfo, register
from .targets import Target, TargetLike

__all__ = ["saliency", "guided_backprop", "deconvnet", "guided_grad_cam", "smoothgrad", "input_gradient"]

Rule = Literal["guided", "deconv"] | None


def input_gradient(
    model: nn.Module, x: torch.Tensor, target: Target, rule: Rule = None, repeats: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(d score / d x, output) with ReLUs back-propagating by ``rule`` (plain gradient if None)."""
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        if rule is None:
            out = model_output(model(xg))
        else:
            with ReLURule(rule) as relus:
                out = model_output(model(xg))
            if relus.calls == 0:
                warn_no_activation(model, rule)
        scores = target.scores(out, repeats)
        (g,) = torch.autograd.grad(scores.sum(), xg)
    return g, out.detach()


def warn_no_activation(model: nn.Module, rule: str) -> None:
    """Warn that no activation the rule applies to ran: the result is the plain gradient."""
    warnings.warn(
        f"{type(model).__name__} ran no ReLU-family activation (ReLU, ReLU6, LeakyReLU, ELU, "
        f"SiLU, GELU, Hardswish, Mish) in its forward, so the {rule!r} rule changed nothing and the "
        "result equals 'saliency' (the plain gradient)",
        UserWarning,
        stacklevel=4,
    )


def _image_or_map(g: torch.Tensor, raw: bool) -> torch.Tensor:
    return g if raw else g.abs().amax(1)


def _info(name: str, title: str, reference: str, summary: str, order: float, **more: Any) -> MethodInfo:
    """A gradient image's :class:`MethodInfo` (unsigned map, ``raw=True`` gives the image)."""
    return MethodInfo(name, title, "gradient", reference, summary, order=order, has_image=True, **more)


def _rule_method(name: str, rule: Rule, doc: str) -> Callable[..., torch.Tensor]:
    """A gradient-image method whose own part is the ReLU backward ``rule`` (None: plain)."""

    def method(
        model: nn.Module,
        x: torch.Tensor,
        target: TargetLike = None,
        layer: str | nn.Module | None = None,
        *,
        progress: Callable[[float], None] | None = None,
        raw: bool = False,
    ) -> torch.Tensor:
        g, _ = input_gradient(model, x, Target(target, x.shape[0]), rule)
        return _image_or_map(g, raw)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc
    return method


saliency = register(
    _info(
        "saliency",
        "Saliency (gradient)",
        "Simonyan et al., Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps, ICLR 2014 workshop",
        "Absolute gradient of the class score with respect to the pixels, largest over colour channels.",
        130,
    )
)(_rule_method("saliency", None, "Vanilla gradient saliency; ``raw=True`` gives the signed gradient (B, C, H, W)."))

guided_backprop = register(
    _info(
        "guided-backprop",
        "Guided backprop",
        "Springenberg et al., Striving for Simplicity: The All Convolutional Net, ICLR 2015 workshop",
        "Gradient where every ReLU passes back only positive gradients through positive inputs; ReLU6, "
        "LeakyReLU, ELU and the smooth ReLUs (SiLU, GELU, Hardswish, Mish) are gated the same way "
        "(f'(x) * max(grad, 0) * [x > 0]); a net without any of them gets the plain gradient and a warning.",
        140,
    )
)(
    _rule_method(
        "guided_backprop", "guided", "Guided backpropagation (all ReLUs, including inplace and functional ones)."
    )
)

deconvnet = register(
    _info(
        "deconvnet",
        "Deconvnet",
        "Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014",
        "Gradient where every ReLU-family activation (ReLU, ReLU6, LeakyReLU, ELU, SiLU, GELU, Hardswish, "
        "Mish) passes back the rectified gradient itself, whatever its forward input was; without any, "
        "the plain gradient and a warning.",
        150,
    )
)(_rule_method("deconvnet", "deconv", "Deconvnet-style backward (Zeiler & Fergus) through every ReLU."))


@register(
    _info(
        "guided-grad-cam",
        "Guided Grad-CAM",
        "Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization, ICCV 2017",
        "Guided backprop multiplied by the upsampled Grad-CAM map: fine detail, class-discriminative.",
        160,
        uses_layer=True,
    )
)
def guided_grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike = None,
    layer: str | nn.Module | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    raw: bool = False,
    reshape: Reshape | None = None,
) -> torch.Tensor:
    """Guided backprop x Grad-CAM (bilinear upsampling); ``reshape`` as for Grad-CAM.

    One forward and one backward give both when no ReLU runs after the layer (ResNets,
    MobileNets): the gradient at the layer is then the same under the guided rule. Otherwise
    Grad-CAM is taken in a second, plain pass.
    """
    t = Target(target, x.shape[0])
    layer = resolve_layer(model, x, layer)
    reshape = check_reshape(reshape)
    relus = ReLURule("guided")
    store: dict = {}

    def hook(_m, _args, out):
        if isinstance(out, torch.Tensor):
            store["a"], store["n"] = out, relus.calls
            return out.clone()  # keeps store["a"] safe from in-place ops after the layer
        return None

    xg = x.detach().requires_grad_(True)
    with hooks.hooked() as placed:
        placed.forward(hooks.get_layer(model, layer), hook)
        with torch.enable_grad():
            with relus:
                out = model_output(model(xg))
            at_layer = store.get("a")
            grid, to_grid = at_layer, None
            if isinstance(at_layer, torch.Tensor):
                to_grid = reshape or hooks.grid_transform(model, at_layer, tuple(x.shape))
                if to_grid is not None:
                    grid = to_grid(at_layer)
            a = check_feature_map(grid, layer, x.shape[0])
            assert isinstance(at_layer, torch.Tensor)  # else check_feature_map raised
            scores = t.scores(out)
            ga, gx = torch.autograd.grad(scores.sum(), [at_layer, xg])
    if relus.calls == 0:
        warn_no_activation(model, "guided")
    a = a.detach()
    ga = to_grid(ga) if to_grid is not None else ga
    if relus.calls != store["n"]:  # activations after the layer: their guided rule would bend Grad-CAM
        a, ga, _ = layer_gradients(model, x, t.fix(out.detach()), layer, reshape=reshape)
    cam = upsample(torch.einsum("bc,bchw->bhw", ga.mean((2, 3)), a).clamp_min(0), x)
    return _image_or_map(gx * cam.unsqueeze(1), raw)


@register(
    _info(
        "smoothgrad",
        "SmoothGrad",
        "Smilkov et al., SmoothGrad: removing noise by adding noise, ICML 2017 workshop",
        "Gradient averaged over noisy copies of the image: a less noisy saliency map.",
        170,
        slow=True,
        quick={"samples": 2},
    )
)
def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike = None,
    layer: str | nn.Module | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    raw: bool = False,
    samples: int = 25,
    noise: float = 0.15,
    seed: int = 0,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Mean gradient over ``samples`` noisy copies (Gaussian, std ``noise`` x the image's range).

    The class explained is the clean image's (predicted or given), for every copy.
    """
    b = x.shape[0]
    t = Target(target, b)
    if t.needs_prediction:
        with torch.no_grad():
            t = t.fix(model_output(model(x)))
    total = None
    done = Progress(progress, samples)
    for xn, k in noisy_copies(x, samples, noise, seed, auto_batch_size(x, batch_size)):
        g, _ = input_gradient(model, xn, t, repeats=k)
        g = g.view(k, b, *g.shape[1:]).sum(0)
        total = g if total is None else total + g
        done.advance(k)
    assert total is not None  # samples >= 1
    return _image_or_map(total / samples, raw)
