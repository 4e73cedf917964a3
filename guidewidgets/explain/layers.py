"""Pick the layer a CAM-family method explains, and record or differentiate at it."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .. import hooks
from ..hooks import model_output
from .targets import Target

__all__ = ["resolve_layer", "recording", "layer_gradients", "upsample"]

# Why a cache: finding the last feature map costs a forward; a widget asks for it on every call.
_DEFAULT_LAYER: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def resolve_layer(model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None) -> str | nn.Module:
    """``layer`` checked against the model, or the default: ``model.default_explain_layer`` if
    set, else the last module with a spatial (B, C, h, w) output."""
    if layer is None:
        layer = getattr(model, "default_explain_layer", None) or _DEFAULT_LAYER.get(model)
        if layer is None:
            layer = hooks.last_conv_layer(model, x)
            _DEFAULT_LAYER[model] = layer
    hooks.get_layer(model, layer)  # ValueError with close matches for a typo
    return layer


def check_feature_map(a: torch.Tensor | None, layer: str | nn.Module) -> torch.Tensor:
    """Raise unless ``a`` is a (B, C, h, w) feature map."""
    name = layer if isinstance(layer, str) else type(layer).__name__
    if a is None:
        raise ValueError(
            f"layer {name!r} was not run by the model's forward; pick a layer that is "
            "(guidewidgets.hooks.layer_names(model) lists them)"
        )
    if a.dim() != 4:
        raise ValueError(
            f"layer {name!r} outputs shape {tuple(a.shape)}, but CAM-family methods need a "
            "(B, C, h, w) feature map: pick a convolutional layer or block (layer=None picks the "
            "last one)"
        )
    return a


@contextlib.contextmanager
def recording(model: nn.Module, layer: str | nn.Module) -> Iterator[dict]:
    """Record ``layer``'s output (a copy, safe from later in-place ops) during the block."""
    module = hooks.get_layer(model, layer)
    store: dict = {}

    def hook(_m, _args, out):
        if isinstance(out, torch.Tensor):
            # Why hand on a copy: an nn.ReLU(inplace=True) right after the layer would
            # otherwise overwrite what we keep.
            store["out"] = out.detach()
            return out.clone()
        store["out"] = out
        return None

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def layer_gradients(
    model: nn.Module, x: torch.Tensor, target: Target, layer: str | nn.Module, repeats: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(activations, d score / d activations, output) at ``layer`` for the batch ``x``.

    One forward (the part before the layer without an autograd graph) and a backward that
    stops at the layer: the floor of Grad-CAM.
    """
    with torch.enable_grad(), hooks.capture(model, layer, cut=True) as cap:
        out = model_output(model(x.detach()))
        a = check_feature_map(cap.activations, layer)
        scores = target.scores(out, repeats)
        g = cap.grad(scores)
    return a.detach(), g, out.detach()


def upsample(maps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, h, w) maps resized bilinearly to ``like``'s (H, W)."""
    size = like.shape[-2:]
    if maps.shape[-2:] == size:
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
