"""Pick the layer a CAM-family method explains, and record or differentiate at it."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .. import hooks
from ..hooks import model_output
from .targets import Target

__all__ = ["resolve_layer", "recording", "layer_gradients", "upsample", "Reshape"]

Reshape = Callable[[torch.Tensor], torch.Tensor]

# Why a cache: finding the last feature map costs a forward; a widget asks for it on every call.
# Keyed by the input's (C, H, W): the last map with h*w > 1 depends on the image size (a small
# image can end on an earlier block), so a default found for one size is never used for another.
_DEFAULT_LAYER: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], str]] = weakref.WeakKeyDictionary()


def resolve_layer(model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None) -> str | nn.Module:
    """``layer`` checked against the model, or the default for this input size:
    ``model.default_explain_layer`` if set, else the last module with a spatial (B, C, h, w)
    output (see :func:`guidewidgets.hooks.last_conv_layer`)."""
    if layer is None:
        layer = getattr(model, "default_explain_layer", None)
        if layer is None:
            key = tuple(x.shape[1:])
            per_size = _DEFAULT_LAYER.setdefault(model, {})
            layer = per_size.get(key)
            if layer is None:
                layer = per_size[key] = hooks.last_conv_layer(model, x)
    hooks.get_layer(model, layer)  # ValueError with close matches for a typo
    return layer


def check_reshape(reshape: object) -> Reshape | None:
    """``reshape`` if it is None or a callable, else a TypeError naming what it must be."""
    if reshape is not None and not callable(reshape):
        raise TypeError(
            "reshape must be a callable taking the layer's output and returning a (B, C, h, w) "
            f"map (e.g. for tokens: lambda t: t[:, 1:].reshape(B, 14, 14, -1).permute(0, 3, 1, 2)), "
            f"got {type(reshape).__name__}"
        )
    return reshape  # type: ignore[return-value]


def check_feature_map(a: torch.Tensor | None, layer: str | nn.Module, batch: int | None = None) -> torch.Tensor:
    """Raise unless ``a`` is a (B, C, h, w) feature map (``batch`` rows when given)."""
    name = layer if isinstance(layer, str) else type(layer).__name__
    if a is None:
        raise ValueError(
            f"layer {name!r} was not run by the model's forward; pick a layer that is "
            "(guidewidgets.hooks.layer_names(model) lists them)"
        )
    if not isinstance(a, torch.Tensor) or a.dim() != 4 or (batch is not None and a.shape[0] != batch):
        shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise ValueError(
            f"layer {name!r} outputs {shape}, but CAM-family methods need a (B, C, h, w) feature "
            "map: pick a convolutional layer or block (layer=None picks the last one), or pass "
            "reshape=callable(output) -> (B, C, h, w) for a custom token layout"
        )
    return a


@contextlib.contextmanager
def recording(model: nn.Module, layer: str | nn.Module, reshape: Reshape | None = None) -> Iterator[dict]:
    """Record ``layer``'s output (a copy, safe from later in-place ops) during the block, as a
    (B, C, h, w) map: token and channels-last outputs are reshaped (``reshape``, else
    :func:`guidewidgets.hooks.grid_transform`). Only the calling thread's forwards are recorded."""
    with hooks.capture(model, layer, cut=False, reshape=reshape) as cap:
        store: dict = {}
        yield store
        store["out"] = cap.activations
        store["raw"] = cap.raw  # the layer's own output, before any reshape to a grid


def layer_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    layer: str | nn.Module,
    repeats: int = 1,
    reshape: Reshape | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(activations, d score / d activations, output) at ``layer`` for the batch ``x``, both as
    (B, C, h, w) maps (token outputs reshaped by ``reshape`` or the automatic grid).

    One forward (the part before the layer without an autograd graph) and a backward that
    stops at the layer: the floor of Grad-CAM.
    """
    with torch.enable_grad(), hooks.capture(model, layer, cut=True, reshape=reshape) as cap:
        out = model_output(model(x.detach()))
        a = check_feature_map(cap.activations, layer, x.shape[0])
        scores = target.scores(out, repeats)
        g = cap.grad(scores)
    return a.detach(), g, out.detach()


def upsample(maps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, h, w) maps resized bilinearly to ``like``'s (H, W)."""
    size = like.shape[-2:]
    if maps.shape[-2:] == size:
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
