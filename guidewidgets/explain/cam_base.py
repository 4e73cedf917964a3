"""The one base of the class-activation-map family: what every CAM shares, so that a method
states only what is its own.

Every CAM records the feature map A (B, C, h, w) of a layer (token and channels-last outputs laid
on their grid, or ``reshape=callable(output) -> (B, C, h, w)``), combines it into a map
(B, h, w), ReLUs it unless ``relu=False`` and upsamples it bilinearly to the input. A gradient
CAM also needs dy/dA; most then differ only in their channel weights w (B, C), the map being
sum_k w_k A_k (torchcam's shape: one base, each method its ``_get_weights``)::

    @gradient_cam("my-cam", "My-CAM", "Me et al. 2027", "Grad-CAM with squared gradients.", order=95)
    def my_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        '''My-CAM: w_k = mean_ij (dy/dA_k)^2.'''
        return (g * g).mean((2, 3))

That registers ``"my-cam"`` and returns the method ``my_cam(model, x, target=None, layer=None, *,
progress=None, relu=True, reshape=None) -> (B, H, W)``. With ``pixelwise=True`` the function
returns the map (B, h, w) itself (LayerCAM, HiResCAM). A CAM with passes of its own (CAM,
Smooth Grad-CAM++, Score-CAM, Ablation-CAM, Eigen-CAM, Augmented Grad-CAM) is written with
:func:`cam_method` as ``fn(c: CamCall, *, <its options>) -> (B, h, w)``: the base checks the
target, resolves the layer and ``reshape``, gives the method the family's signature plus its
options, and ReLUs and upsamples what it returns; :func:`clean_pass` and :func:`cam_gradients`
are the two passes most of them start with.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..hooks import model_output
from .layers import Reshape, check_feature_map, check_reshape, layer_gradients, recording, resolve_layer, upsample
from .registry import MethodInfo, register
from .targets import Target, TargetLike

__all__ = ["CamCall", "cam_method", "gradient_cam", "cam_gradients", "clean_pass", "weighted", "finish"]

Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_CALL = """

Called as ``{name}(model, x, target=None, layer=None, *, progress=None, relu=True, reshape=None{own})``:
``x`` (B, C, H, W), the map (B, H, W) at the layer's resolution upsampled to the input's, ReLU'd
unless ``relu=False``; ``reshape`` lays a token layout on its (B, C, h, w) grid (see
:mod:`guidewidgets.explain.cam_base`)."""


@dataclasses.dataclass(frozen=True)
class CamCall:
    """One checked CAM request, what a CAM's own part starts from: the model, the input (B, C, H, W),
    the target, the layer (resolved: the default filled in), ``reshape`` (checked) and ``progress``."""

    model: nn.Module
    x: torch.Tensor
    target: Target
    layer: str | nn.Module
    reshape: Reshape | None
    progress: Callable[[float], None] | None


def finish(maps: torch.Tensor, x: torch.Tensor, relu: bool) -> torch.Tensor:
    """Maps (B, h, w), ReLU'd if ``relu``, upsampled bilinearly to ``x``'s (H, W)."""
    if relu:
        maps = maps.clamp_min(0)
    return upsample(maps, x)


def weighted(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """sum_k w[b, k] a[b, k]: channel weights (B, C) applied to feature maps (B, C, h, w)."""
    return torch.einsum("bc,bchw->bhw", w.to(a.dtype), a)


def cam_gradients(c: CamCall) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, dy/dA), both (B, C, h, w), at the call's layer for its target: one forward and a
    backward that stops at the layer."""
    a, g, _ = layer_gradients(c.model, c.x, c.target, c.layer, reshape=c.reshape)
    return a, g


def clean_pass(c: CamCall, *, replaces: str | None = None) -> tuple[torch.Tensor, torch.Tensor, Target]:
    """(feature map at the layer, output, target fixed to the clean image's classes), no autograd.

    ``replaces``: the name of a method that writes edited maps back into the layer; it needs the
    layer's own output to be a (B, C, h, w) map, not tokens read as one.
    """
    layer = c.layer
    with torch.no_grad(), recording(c.model, layer, c.reshape) as rec:
        out = model_output(c.model(c.x))
    a = check_feature_map(rec.get("out"), layer, c.x.shape[0])
    raw = rec.get("raw")
    if replaces is not None and isinstance(raw, torch.Tensor) and raw.shape != a.shape:
        name = layer if isinstance(layer, str) else type(layer).__name__
        raise ValueError(
            f"{replaces} writes edited (B, C, h, w) maps back into the layer, but layer {name!r} outputs "
            f"{tuple(raw.shape)} (transformer tokens or channels-last), read as {tuple(a.shape)}: use "
            "'grad-cam', 'score-cam' or 'attention-rollout' on this model, or a layer with a (B, C, h, w) output"
        )
    return a, out, c.target.fix(out)


def cam_method(
    name: str,
    title: str,
    reference: str,
    summary: str,
    *,
    order: float,
    slow: bool = False,
    quick: Mapping[str, Any] | None = None,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: register a CAM given only its own part ``fn(c: CamCall, *, <its options>)``,
    which returns the maps (B, h, w) at the layer's resolution.

    The registered method (named and documented as ``fn``) has the family's call shape
    ``(model, x, target=None, layer=None, *, progress=None, relu=True, reshape=None, <its options>)``:
    it checks the target, resolves the layer and ``reshape``, calls ``fn`` and applies :func:`finish`.
    """

    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        own = list(inspect.signature(fn).parameters.values())[1:]
        if any(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in own):
            raise TypeError(f"{fn.__name__}: a CAM's own options must be keyword-only (after *)")

        def method(
            model: nn.Module,
            x: torch.Tensor,
            target: TargetLike = None,
            layer: str | nn.Module | None = None,
            *,
            progress: Callable[[float], None] | None = None,
            relu: bool = True,
            reshape: Reshape | None = None,
            **options: Any,
        ) -> torch.Tensor:
            t = Target(target, x.shape[0])
            call = CamCall(model, x, t, resolve_layer(model, x, layer), check_reshape(reshape), progress)
            return finish(fn(call, **options), x, relu)

        base = list(inspect.signature(method).parameters.values())[:-1]  # without **options
        method.__signature__ = inspect.Signature([*base, *own], return_annotation="torch.Tensor")  # type: ignore[attr-defined]
        method.__name__, method.__qualname__, method.__module__ = fn.__name__, fn.__qualname__, fn.__module__
        extra = "".join(f", {p.name}={p.default!r}" for p in own)
        method.__doc__ = inspect.cleandoc(fn.__doc__ or title) + _CALL.format(name=fn.__name__, own=extra)
        info = MethodInfo(
            name, title, "cam", reference, summary, order=order, uses_layer=True, slow=slow, quick=quick or {}
        )
        return register(info)(method)

    return wrap


def gradient_cam(
    name: str,
    title: str,
    reference: str,
    summary: str,
    *,
    order: float,
    pixelwise: bool = False,
) -> Callable[[Combine], Callable[..., torch.Tensor]]:
    """Decorator: register a gradient CAM given only ``fn(A, dy/dA)``, both (B, C, h, w).

    ``fn`` returns the channel weights (B, C), or with ``pixelwise=True`` the map (B, h, w). The
    registered method (named and documented as ``fn``) takes one forward and a backward that
    stops at the layer (:func:`cam_gradients`).
    """

    def wrap(fn: Combine) -> Callable[..., torch.Tensor]:
        def own(c: CamCall) -> torch.Tensor:
            a, g = cam_gradients(c)
            return fn(a, g) if pixelwise else weighted(fn(a, g), a)

        own.__name__, own.__qualname__, own.__module__, own.__doc__ = (
            fn.__name__,
            fn.__qualname__,
            fn.__module__,
            fn.__doc__,
        )
        return cam_method(name, title, reference, summary, order=order)(own)

    return wrap
