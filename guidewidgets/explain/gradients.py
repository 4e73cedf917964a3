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
from .layers import Reshape, check_feature_map, check_reshape, layer_gradients, upsample
from .noise import noisy_copies
from .registry import Call, method
from .targets import Target

__all__ = [
    "saliency",
    "guided_backprop",
    "deconvnet",
    "guided_grad_cam",
    "smoothgrad",
    "input_gradient",
    "gradient_moments",
    "image_method",
    "noise_method",
]

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


def image_method(name: str, **more: Any) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator (:func:`~guidewidgets.explain.registry.method`) for a gradient image, the catalog's
    row ``name``: ``raw=True`` gives the (B, C, H, W) image; ``more``: the other MethodInfo fields."""
    return method(name, has_image=True, **more)


def _named(own: Callable[..., torch.Tensor], name: str, doc: str) -> Callable[..., torch.Tensor]:
    """``own`` under the public name and docstring of the method it becomes (the registry copies
    them onto the method, and the docs find a method by its name)."""
    own.__name__ = own.__qualname__ = name
    own.__doc__ = doc
    return own


def _rule_method(name: str, rule: Rule, doc: str) -> Callable[..., torch.Tensor]:
    """A gradient-image method's own part: the ReLU backward ``rule`` (None: plain)."""

    def own(c: Call, *, raw: bool = False) -> torch.Tensor:
        g, _ = input_gradient(c.model, c.x, c.target, rule)
        return _image_or_map(g, raw)

    return _named(own, name, doc)


saliency = image_method("saliency")(
    _rule_method("saliency", None, "Vanilla gradient saliency; ``raw=True`` gives the signed gradient (B, C, H, W).")
)

guided_backprop = image_method("guided-backprop")(
    _rule_method(
        "guided_backprop", "guided", "Guided backpropagation (all ReLUs, including inplace and functional ones)."
    )
)

deconvnet = image_method("deconvnet")(
    _rule_method("deconvnet", "deconv", "Deconvnet-style backward (Zeiler & Fergus) through every ReLU.")
)


@image_method("guided-grad-cam", uses_layer=True)
def guided_grad_cam(c: Call, *, raw: bool = False, reshape: Reshape | None = None) -> torch.Tensor:
    """Guided backprop x Grad-CAM (bilinear upsampling); ``reshape`` as for Grad-CAM.

    One forward and one backward give both when no ReLU runs after the layer (ResNets,
    MobileNets): the gradient at the layer is then the same under the guided rule. Otherwise
    Grad-CAM is taken in a second, plain pass.
    """
    model, x, t, layer = c.model, c.x, c.target, c.layer
    assert layer is not None  # uses_layer: the base resolved it
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


def gradient_moments(
    c: Call,
    samples: int,
    noise: float,
    seed: int,
    batch_size: int | None = None,
    squares: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The mean gradient and the mean squared gradient over ``samples`` noisy copies of ``c.x``.

    Args:
        c: the call; the class explained is the clean image's (predicted or given) for every copy.
        samples: number of noisy copies.
        noise: the noise's standard deviation as a fraction of each image's value range.
        seed: seeds the noise (see :func:`guidewidgets.explain.noise.noisy_copies`).
        batch_size: images per forward (Captum's ``internal_batch_size``; None: from the image size).
        squares: whether to keep E[g^2] (SmoothGrad needs only the mean).

    Returns:
        ``(E[g], E[g^2])``, each (B, C, H, W); ``E[g^2]`` is None without ``squares``.
    """
    x = c.x
    b = x.shape[0]
    t = c.fixed_target()
    first = torch.zeros_like(x)
    second = torch.zeros_like(x) if squares else None
    done = Progress(c.progress, samples)
    for xn, k in noisy_copies(x, samples, noise, seed, auto_batch_size(x, batch_size)):
        g, _ = input_gradient(c.model, xn, t, repeats=k)
        g = g.view(k, b, *g.shape[1:])
        first += g.sum(0)
        if second is not None:
            second += g.square().sum(0)
        done.advance(k)
    return first / samples, None if second is None else second / samples


Moment = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def noise_method(
    name: str, moment: Moment, doc: str, module: str = __name__, squares: bool = True
) -> Callable[..., torch.Tensor]:
    """The own part of a method that keeps ``moment(E[g], E[g^2])`` of the gradient over noisy
    copies (SmoothGrad and its second moments); its map is the largest absolute value over the
    colour channels, ``raw=True`` the (B, C, H, W) moment. ``module``: where the method is
    documented (the caller's ``__name__``); ``squares=False``: a mean-only method (E[g^2] None)."""

    def own(
        c: Call,
        *,
        raw: bool = False,
        samples: int = 25,
        noise: float = 0.15,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        return _image_or_map(moment(*gradient_moments(c, samples, noise, seed, batch_size, squares)), raw)

    own.__module__ = module
    return _named(own, name, doc)


smoothgrad = image_method("smoothgrad", slow=True, quick={"samples": 2})(
    noise_method(
        "smoothgrad",
        lambda first, second: first,
        """Mean gradient over ``samples`` noisy copies (Gaussian, std ``noise`` x the image's range).

        The class explained is the clean image's (predicted or given), for every copy;
        ``batch_size``: images per forward (Captum's ``internal_batch_size``; None: from the image size).
        """,
        squares=False,  # Why: a (B, C, H, W) square and sum per chunk that the mean never reads
    )
)
