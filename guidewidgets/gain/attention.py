"""GAIN's attention map A^c: Grad-CAM of the true class(es), differentiable with respect to the weights.

Grad-CAM as in the slides, ``w^c_k = GAP(d y^c / d f_k)`` and ``A^c = ReLU(sum_k w^c_k f_k)``, but
computed *inside* the training graph (``create_graph=True``): a loss on A^c (attention mining,
the pixel-label loss of GAIN_ext) back-propagates to every weight, through the feature map and
through the gradient weights w^c alike. The map is upsampled bilinearly to the image size and
min-max normalised per map, so that the soft mask's threshold sigma has the same meaning on every
image.

Samples must be independent *after* the chosen layer (no BatchNorm in training mode between the
layer and the logits): then one gradient call per class gives every image its own map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .. import hooks

__all__ = [
    "Attention",
    "attention",
    "soft_mask",
    "masked_image",
    "normalize_maps",
    "target_pairs",
    "check_layer_output",
]

_EPS = 1e-8


@dataclass
class Attention:
    """What :func:`attention` returns.

    ``maps`` (P, H, W): one normalised map per (image, class) pair, ``image`` (P,) and ``cls``
    (P,) say which; ``logits`` (B, K) come from the same forward pass (so the classification loss
    needs no second one); ``raw`` (P, h, w) is the map at the layer's grid before upsampling and
    normalisation.
    """

    maps: torch.Tensor
    image: torch.Tensor
    cls: torch.Tensor
    logits: torch.Tensor
    raw: torch.Tensor


def target_pairs(labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(image index, class) of every present class: ``labels`` (B,) class indices (one class per
    image) or (B, K) multi-hot (multi-label, every positive class counts)."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(
            f"labels must be a tensor of class indices (B,) or multi-hot (B, K), got {type(labels).__name__}"
        )
    if labels.dim() == 1:
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"labels (B,) must hold integer class indices, got {labels.dtype}; use labels.long()")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"labels must lie in 0..{num_classes - 1} (the model has {num_classes} outputs), "
                f"got {int(labels.min())}..{int(labels.max())}"
            )
        return torch.arange(len(labels), device=labels.device), labels.long()
    if labels.dim() == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(
                f"multi-hot labels must be (B, {num_classes}) to match the model's outputs, got {tuple(labels.shape)}"
            )
        image, cls = (labels > 0).nonzero(as_tuple=True)
        return image, cls
    raise ValueError(f"labels must be (B,) class indices or (B, K) multi-hot, got shape {tuple(labels.shape)}")


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (H, W) map of ``maps`` (P, H, W) to [0, 1]; a constant map becomes 0."""
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(_EPS)).view_as(maps)


def check_layer_output(name: str, features: torch.Tensor | None, logits: torch.Tensor) -> None:
    """Raise ValueError unless the layer ran, gave a spatial (B, C, h, w) map and the model (B, K) logits."""
    if features is None:
        raise ValueError(f"layer {name!r} was not run by the model's forward; pick one that is (hooks.layer_names)")
    if features.dim() != 4 or features.shape[-1] * features.shape[-2] <= 1:
        raise ValueError(
            f"layer {name!r} outputs shape {tuple(features.shape)}, not a spatial (B, C, h, w) map with h*w > 1; "
            "GAIN needs a convolutional layer (e.g. the model's last conv block)"
        )
    if logits.dim() != 2:
        raise ValueError(f"GAIN trains classifiers with (B, K) logits, got logits of shape {tuple(logits.shape)}")


def _name_of(model: nn.Module, module: nn.Module) -> str:
    """The dotted name of ``module`` in ``model`` (under DDP: without the wrapper's ``module.``)."""
    for name, m in model.named_modules():
        if m is module:
            return name.removeprefix("module.") or type(module).__name__
    return type(module).__name__


def attention(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    layer: str | nn.Module,
    *,
    create_graph: bool = True,
) -> Attention:
    """Grad-CAM attention of each present class, differentiable w.r.t. the weights.

    Args:
        model: a classifier returning logits (B, K).
        images: (B, 3, H, W) input batch.
        labels: (B,) class indices or (B, K) multi-hot labels: which classes get a map.
        layer: dotted name (or module) of a layer with a spatial (B, C, h, w) output.
        create_graph: keep the graph of the map (training); ``False`` for probes and evaluation.

    The model is run once, in whatever mode it is in; the forward hook is removed on exit.
    """
    module = hooks.get_layer(model, layer)
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _args: object, out: object) -> object:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layer {layer!r} returns {type(out).__name__}, not a tensor; pick a convolutional layer")
        store["f"] = out
        # Why a copy downstream: an nn.ReLU(inplace=True) after the layer would overwrite f.
        return out.clone()

    with hooks.hooked() as h, torch.enable_grad():
        h.forward(module, hook)
        logits = hooks.model_output(model(images))
    f = store.get("f")
    name = layer if isinstance(layer, str) else _name_of(model, module)
    check_layer_output(name, f, logits)
    assert f is not None
    if not f.requires_grad:
        raise ValueError(f"layer {name!r}'s output does not require grad; GAIN needs trainable layers before it")
    image, cls = target_pairs(labels.to(logits.device), logits.shape[1])
    grads = torch.zeros((len(image), *f.shape[1:]), dtype=f.dtype, device=f.device)
    gathered = []
    classes = cls.unique().tolist()
    for k, c in enumerate(classes):
        sel = (cls == c).nonzero(as_tuple=True)[0]
        idx = image[sel]
        # Why one call per class: d(sum_b y^c_b)/d f_b is image b's own gradient when samples are
        # independent after the layer, so a class costs one backward, not one per image.
        (g,) = torch.autograd.grad(
            logits[idx, c].sum(),
            f,
            create_graph=create_graph,
            retain_graph=create_graph or k < len(classes) - 1,
        )
        gathered.append((sel, g[idx]))
    if gathered:
        grads = torch.cat([g for _, g in gathered])
        order = torch.cat([s for s, _ in gathered])
        grads = grads[torch.argsort(order)]
    feats = f[image] if create_graph else f[image].detach()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    raw = F.relu((weights * feats).sum(dim=1))
    up = F.interpolate(raw[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    maps = normalize_maps(up)
    if not create_graph:
        maps, raw, logits = maps.detach(), raw.detach(), logits.detach()
    return Attention(maps=maps, image=image, cls=cls, logits=logits, raw=raw)


def soft_mask(maps: torch.Tensor, sigma: float = 0.5, omega: float = 10.0) -> torch.Tensor:
    """GAIN's soft mask ``T(A) = sigmoid(omega (A - sigma))``: near 1 where the attention is above
    the threshold ``sigma``, near 0 below it; ``omega`` sets how steep the step is."""
    if omega < 0:
        raise ValueError(f"omega (the soft mask's steepness) must be >= 0, got {omega}")
    return torch.sigmoid(omega * (maps - sigma))


def masked_image(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``I* = I - T * I``: the image with the attended region erased (images (P, C, H, W), mask (P, H, W))."""
    if mask.shape[-2:] != images.shape[-2:] or mask.dim() != 3 or len(mask) != len(images):
        raise ValueError(
            f"mask must be (P, H, W) matching images (P, C, H, W), got mask {tuple(mask.shape)} and images "
            f"{tuple(images.shape)}"
        )
    return images - mask[:, None] * images
