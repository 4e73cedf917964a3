"""The one base of the class-activation-map family: what every CAM shares, so that a method
states only what is its own.

Every CAM records the feature map A (B, C, h, w) of a layer (token and channels-last outputs laid
on their grid, or ``reshape=callable(output) -> (B, C, h, w)``), combines it into a map
(B, h, w), ReLUs it unless ``relu=False`` and upsamples it bilinearly to the input. A gradient
CAM also needs dy/dA; most then differ only in their channel weights w (B, C), the map being
sum_k w_k A_k (torchcam's shape: one base, each method its ``_get_weights``). Its title, paper,
summary and order are its row in :mod:`~guidewidgets.explain.catalog`, so the method is::

    @gradient_cam("my-cam")  # row: (95, "my-cam", "My-CAM", "cam", "Me et al. 2027", "Grad-CAM with ...")
    def my_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        '''My-CAM: w_k = mean_ij (dy/dA_k)^2.'''
        return (g * g).mean((2, 3))

That registers ``"my-cam"`` and returns the method ``my_cam(model, x, target=None, layer=None, *,
progress=None, relu=True, reshape=None, eigen_smooth=False, aug_smooth=False) -> (B, H, W)``. With
``elementwise=True`` the function returns the weighted activations (B, C, h, w) instead of channel
weights (LayerCAM, HiResCAM, Grad-CAM element-wise), with ``pixelwise=True`` the map (B, h, w)
itself. A CAM with passes of its own (CAM, Smooth Grad-CAM++, Score-CAM, Ablation-CAM, Eigen-CAM,
KPCA-CAM, SS-CAM, IS-CAM, Augmented Grad-CAM) is written with :func:`cam_method` as ``fn(c: CamCall, *, <its options>) -> (B, h, w)``: the base checks the
target, resolves the layer and ``reshape``, gives the method the family's signature plus its
options, and ReLUs and upsamples what it returns; :func:`clean_pass` and :func:`cam_gradients`
are the two passes most of them start with.

pytorch-grad-cam's three knobs work for every CAM here (the wrapper :func:`cam_method` adds them):
``layer=[...]`` (several layers: the mean of the per-layer maps, each min-max normalised, then
normalised again), ``aug_smooth=True`` (test-time augmentation: the mean over horizontal flip x
brightness 0.9, 1, 1.1 of the min-max normalised maps) and ``eigen_smooth=True`` (the first
principal component of the weighted activations w_k A_k instead of their sum; only for a method
registered with ``channel_weights=True``, which combines through :meth:`CamCall.combine` or
:meth:`CamCall.reduce`). The default call (one layer, both off) runs the method alone.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from ..hooks import model_output
from .catalog import entry
from .layers import Reshape, check_feature_map, check_reshape, layer_gradients, recording, resolve_layer, upsample
from .registry import MethodInfo, public_signature, register
from .targets import Target, TargetLike

__all__ = [
    "CamCall",
    "cam_method",
    "gradient_cam",
    "cam_gradients",
    "clean_pass",
    "weighted",
    "finish",
    "first_component",
    "orient",
    "minmax",
]

Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_CALL = """

Called as ``{name}(model, x, target=None, layer=None, *, progress=None, relu=True, reshape=None,
eigen_smooth=False, aug_smooth=False{own})``: ``x`` (B, C, H, W), the map (B, H, W) at the layer's
resolution upsampled to the input's, ReLU'd unless ``relu=False``; ``reshape`` lays a token layout
on its (B, C, h, w) grid; ``layer=[...]``, ``aug_smooth`` and ``eigen_smooth`` are
pytorch-grad-cam's knobs (see :mod:`guidewidgets.explain.cam_base`; the first two give maps
min-max normalised to [0, 1]{eigen})."""


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
    eigen_smooth: bool = False

    def combine(self, w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The map of channel weights ``w`` (B, C) on feature maps ``a`` (B, C, h, w): their sum
        sum_k w_k A_k (:func:`weighted`), or with ``eigen_smooth`` the first principal component
        of the weighted maps w_k A_k (:func:`first_component`)."""
        if not self.eigen_smooth:
            return weighted(w, a)
        return first_component(w.to(a.dtype)[:, :, None, None] * a)

    def reduce(self, wa: torch.Tensor) -> torch.Tensor:
        """The map of element-wise weighted activations ``wa`` (B, C, h, w): their channel sum, or
        with ``eigen_smooth`` their first principal component."""
        return first_component(wa) if self.eigen_smooth else wa.sum(1)


def finish(maps: torch.Tensor, x: torch.Tensor, relu: bool) -> torch.Tensor:
    """Maps (B, h, w), ReLU'd if ``relu``, upsampled bilinearly to ``x``'s (H, W)."""
    if relu:
        maps = maps.clamp_min(0)
    return upsample(maps, x)


def weighted(w: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """sum_k w[b, k] a[b, k]: channel weights (B, C) applied to feature maps (B, C, h, w)."""
    return torch.einsum("bc,bchw->bhw", w.to(a.dtype), a)


def orient(proj: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``proj`` (B, P) times the sign that makes it correlate positively with ``ref`` (B, P).

    A principal component's sign is arbitrary (LAPACK's choice); tying it to a reference map (the
    plain sum) makes it deterministic across devices and builds and high where the layer fires.
    """
    sign = torch.sign((proj * (ref - ref.mean(1, keepdim=True))).sum(1, keepdim=True))
    return proj * torch.where(sign == 0, torch.ones_like(sign), sign)


def first_component(t: torch.Tensor) -> torch.Tensor:
    """Projection of (B, C, h, w) maps, as (hw x C) matrices centred per channel, on their first
    right singular vector: (B, h, w), signed to correlate positively with ``t.sum(1)``.

    pytorch-grad-cam's ``get_2d_projection`` (its ``eigen_smooth``, Eigen-CAM and EigenGrad-CAM)
    up to that sign, which it leaves to LAPACK."""
    b, n, h, w = t.shape
    m = t.reshape(b, n, h * w).transpose(1, 2)
    m = m - m.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    proj = torch.einsum("bpc,bc->bp", m, vh[:, 0])
    return orient(proj, t.reshape(b, n, h * w).sum(1)).reshape(b, h, w)


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
    *texts: str,
    order: float | None = None,
    slow: bool = False,
    quick: Mapping[str, Any] | None = None,
    channel_weights: bool = False,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: register a CAM given only its own part ``fn(c: CamCall, *, <its options>)``,
    which returns the maps (B, h, w) at the layer's resolution.

    The registered method (named and documented as ``fn``) has the family's call shape
    ``(model, x, target=None, layer=None, *, progress=None, relu=True, reshape=None,
    eigen_smooth=False, aug_smooth=False, <its options>)``: it checks the target, resolves the layer
    and ``reshape``, calls ``fn`` and applies :func:`finish`; a list of layers and ``aug_smooth``
    run ``fn`` once per layer and augmentation (:func:`_smoothed`).

    Its title, reference, summary and order are ``name``'s row in :mod:`~guidewidgets.explain.catalog`
    (family ``"cam"``).

    Args:
        name: the method's registry key, its row's name.
        texts: none (the catalog's row), or, for a CAM outside the package (a user's, a test's):
            its title, reference and summary, with ``order=``.
        order: with ``texts``: its place in :func:`~guidewidgets.explain.registry.methods`.
        slow, quick: as :class:`~guidewidgets.explain.registry.MethodInfo`'s.
        channel_weights: ``fn`` builds its map with :meth:`CamCall.combine` or :meth:`CamCall.reduce`,
            so ``eigen_smooth=True`` applies to it; without, ``eigen_smooth=True`` is refused.
    """

    row = entry(name, texts, order, "cam")

    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def method(
            model: nn.Module,
            x: torch.Tensor,
            target: TargetLike = None,
            layer: str | nn.Module | Sequence[str | nn.Module] | None = None,
            *,
            progress: Callable[[float], None] | None = None,
            relu: bool = True,
            reshape: Reshape | None = None,
            eigen_smooth: bool = False,
            aug_smooth: bool = False,
            **options: Any,
        ) -> torch.Tensor:
            t = Target(target, x.shape[0])
            reshape = check_reshape(reshape)
            _check_knobs(name, eigen_smooth, aug_smooth, channel_weights)
            layers = _resolve_layers(model, x, layer)
            if isinstance(layers, list) or aug_smooth:
                run = _Run(fn, options, model, t, layers, reshape, eigen_smooth, relu)
                return _smoothed(run, x, progress, aug_smooth)
            call = CamCall(model, x, t, layers, reshape, progress, eigen_smooth)
            return finish(fn(call, **options), x, relu)

        own = public_signature(method, fn, "a CAM")
        method.__name__, method.__qualname__, method.__module__ = fn.__name__, fn.__qualname__, fn.__module__
        extra = "".join(f", {p.name}={p.default!r}" for p in own)
        eigen = "" if channel_weights else "; this method has no channel weights, so no ``eigen_smooth``"
        method.__doc__ = inspect.cleandoc(fn.__doc__ or row.title) + _CALL.format(
            name=fn.__name__, own=extra, eigen=eigen
        )
        return register(MethodInfo.of(row, uses_layer=True, slow=slow, quick=quick or {}))(method)

    return wrap


def _check_knobs(name: str, eigen_smooth: object, aug_smooth: object, channel_weights: bool) -> None:
    """Refuse a non-bool switch, and ``eigen_smooth`` on a method without channel weights."""
    for key, value in (("eigen_smooth", eigen_smooth), ("aug_smooth", aug_smooth)):
        if not isinstance(value, bool):
            raise TypeError(f"{key} must be True or False, got {value!r} ({type(value).__name__})")
    if eigen_smooth and not channel_weights:
        raise ValueError(
            f"eigen_smooth=True replaces the sum of the channel-weighted activations w_k A_k by their first "
            f"principal component, but {name!r} does not build its map from channel weights; drop eigen_smooth, "
            "or use 'eigen-cam' (the principal component of the activations) or 'eigengrad-cam' (of A * dy/dA)"
        )


def _resolve_layers(
    model: nn.Module, x: torch.Tensor, layer: str | nn.Module | Sequence[str | nn.Module] | None
) -> str | nn.Module | list[str | nn.Module]:
    """One resolved layer, or a list of them for a list or tuple (refused when empty)."""
    if not isinstance(layer, (list, tuple)):
        # a name, a module or None; anything else is refused there with the usual sentence
        return resolve_layer(model, x, cast("str | nn.Module | None", layer))
    if not layer:
        raise ValueError(
            "layer=[] names no layer: pass one or more layer names (e.g. layer=['layer3', 'layer4'], whose "
            "maps are averaged) or layer=None for the default (the last feature map)"
        )
    return [resolve_layer(model, x, one) for one in layer]


@dataclasses.dataclass(frozen=True)
class _Run:
    """One CAM request with its knobs, run on any (augmented) input ``x``: the map (B, H, W)."""

    fn: Callable[..., torch.Tensor]
    options: Mapping[str, Any]
    model: nn.Module
    target: Target
    layers: str | nn.Module | list[str | nn.Module]
    reshape: Reshape | None
    eigen_smooth: bool
    relu: bool

    def __call__(self, x: torch.Tensor, progress: Callable[[float], None] | None) -> torch.Tensor:
        if not isinstance(self.layers, list):
            call = CamCall(self.model, x, self.target, self.layers, self.reshape, progress, self.eigen_smooth)
            return finish(self.fn(call, **self.options), x, self.relu)
        # pytorch-grad-cam's aggregate_multi_layers: each layer's map (ReLU'd) min-max normalised
        # at the input's size, the mean, normalised again. Why normalise: layers differ in scale.
        total = torch.zeros(x.shape[0], *x.shape[-2:], device=x.device, dtype=x.dtype)
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            call = CamCall(self.model, x, self.target, layer, self.reshape, _part(progress, i, n), self.eigen_smooth)
            total = total + minmax(finish(self.fn(call, **self.options), x, self.relu))
        return minmax(total / n)


# pytorch-grad-cam's default test-time augmentation (ttach): horizontal flip x multiply, in
# ttach's order (itertools.product of the two transforms' parameters).
_AUGMENTATIONS = [(flip, factor) for flip in (False, True) for factor in (0.9, 1.0, 1.1)]


def _smoothed(run: _Run, x: torch.Tensor, progress: Callable[[float], None] | None, aug_smooth: bool) -> torch.Tensor:
    """``run`` on ``x`` alone, or with ``aug_smooth`` the mean over the augmentations of the maps,
    each mapped back (flipped again) and min-max normalised, as pytorch-grad-cam's
    ``forward_augmentation_smoothing`` (without ttach: the same six images)."""
    if not aug_smooth:
        return run(x, progress)
    t = run.target
    if t.needs_prediction:
        # Why fix the target: every copy must explain the clean image's class (pytorch-grad-cam
        # takes each copy's own prediction when targets=None; a flip can change it).
        with torch.no_grad():
            run = dataclasses.replace(run, target=t.fix(model_output(run.model(x))))
    total = torch.zeros(x.shape[0], *x.shape[-2:], device=x.device, dtype=x.dtype)
    for i, (flip, factor) in enumerate(_AUGMENTATIONS):
        xa = x.flip(3) if flip else x
        xa = xa * factor if factor != 1.0 else xa
        m = run(xa, _part(progress, i, len(_AUGMENTATIONS)))
        total = total + minmax(m.flip(2) if flip else m)
    return total / len(_AUGMENTATIONS)


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each (H, W) map of ``maps`` (B, H, W) shifted and scaled to [0, 1]; a flat map gives 0
    (pytorch-grad-cam's ``scale_cam_image``, which divides by max + 1e-7)."""
    lo = maps.amin((1, 2), keepdim=True)
    span = maps.amax((1, 2), keepdim=True) - lo
    return torch.where(span > 0, (maps - lo) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def _part(progress: Callable[[float], None] | None, i: int, n: int) -> Callable[[float], None] | None:
    """``progress`` for part ``i`` of ``n`` equal parts: a fraction f of it reports (i + f) / n."""
    if progress is None:
        return None
    report = progress
    return lambda f: report((i + f) / n)


def gradient_cam(
    name: str,
    *texts: str,
    order: float | None = None,
    pixelwise: bool = False,
    elementwise: bool = False,
) -> Callable[[Combine], Callable[..., torch.Tensor]]:
    """Decorator: register a gradient CAM given only ``fn(A, dy/dA)``, both (B, C, h, w).

    ``fn`` returns the channel weights (B, C); with ``elementwise=True`` the weighted activations
    (B, C, h, w), which are summed over channels; with ``pixelwise=True`` the map (B, h, w) itself
    (then ``eigen_smooth`` is refused). The registered method (named and documented as ``fn``)
    takes one forward and a backward that stops at the layer (:func:`cam_gradients`). ``name``,
    ``texts`` and ``order`` are as for :func:`cam_method` (the catalog's row unless given).
    """
    # Why now, not in wrap: a name without a catalog row is refused where the decorator is written.
    as_cam = cam_method(name, *texts, order=order, channel_weights=not pixelwise)

    def wrap(fn: Combine) -> Callable[..., torch.Tensor]:
        def own(c: CamCall) -> torch.Tensor:
            a, g = cam_gradients(c)
            if elementwise:
                return c.reduce(fn(a, g))
            return fn(a, g) if pixelwise else c.combine(fn(a, g), a)

        own.__name__, own.__qualname__, own.__module__, own.__doc__ = (
            fn.__name__,
            fn.__qualname__,
            fn.__module__,
            fn.__doc__,
        )
        return as_cam(own)

    return wrap
