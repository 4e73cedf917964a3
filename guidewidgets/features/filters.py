"""First-layer filters as an RGB grid, deeper filters as grey grids, and a layer's activation maps
for one image as a sorted grid (the lecture's "First Layer: Visualize Filters" and activations)."""

from __future__ import annotations

import numbers
from typing import Literal

import torch
from torch import nn

from .. import hooks
from ..checks import check_int
from ..explain.targets import check_input
from ._common import forward_to, locked_eval, model_device

__all__ = ["conv_layers", "filters", "filter_grid", "activation_maps", "tile", "normalize_each"]


def conv_layers(model: nn.Module) -> list[str]:
    """Dotted names of the model's ``nn.Conv2d`` modules, in definition order."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def normalize_each(t: torch.Tensor) -> torch.Tensor:
    """Each t[i] mapped affinely to [0, 1] by its own min and max (a constant t[i] becomes 0.5)."""
    if not isinstance(t, torch.Tensor) or t.dim() < 2 or t.numel() == 0 or not t.is_floating_point():
        what = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"normalize_each needs a non-empty float tensor (N, ...) with N items, got {what}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("the values hold NaN or inf (a diverged layer?); they cannot be shown as a picture")
    flat = t.flatten(1)
    lo = flat.min(1).values.view(-1, *[1] * (t.dim() - 1))
    hi = flat.max(1).values.view(-1, *[1] * (t.dim() - 1))
    span = hi - lo
    return torch.where(span > 0, (t - lo) / span.clamp_min(1e-12), torch.full_like(t, 0.5))


def filters(
    model: nn.Module, layer: str | nn.Module | None = None, per: Literal["filter", "kernel"] = "filter"
) -> torch.Tensor:
    """Weights of a conv layer (default: the first ``nn.Conv2d``) ready to show, values in [0, 1].

    A layer with 3 input channels gives RGB tiles (out, 3, kh, kw), each filter normalised by its
    own min and max (the lecture's figure of the first layer). Deeper layers give grey tiles
    (out, in, kh, kw), one per input channel: ``per="filter"`` normalises each output filter over
    all its kernels (kernels of one filter stay comparable), ``per="kernel"`` each kernel alone.
    """
    if layer is None:
        names = conv_layers(model)
        if not names:
            raise ValueError(f"{type(model).__name__} has no nn.Conv2d; pass layer=... naming a conv layer")
        layer = names[0]
    conv = hooks.get_layer(model, layer)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError(
            f"layer {layer!r} is a {type(conv).__name__}, not an nn.Conv2d; features.conv_layers(model) lists the convs"
        )
    if per not in ("filter", "kernel"):
        raise ValueError(f"per must be 'filter' or 'kernel', got {per!r}")
    w = conv.weight.detach().float().cpu()
    if per == "kernel" and w.shape[1] != 3:
        return normalize_each(w.flatten(0, 1)).view_as(w)
    return normalize_each(w)


def tile(tiles: torch.Tensor, cols: int | None = None, pad: int = 1, fill: float = 1.0) -> torch.Tensor:
    """(N, C, h, w) tiles laid out in rows of ``cols`` with ``pad`` pixels of ``fill`` between: (C, H, W).

    ``fill=float("nan")`` is allowed on purpose: matplotlib leaves NaN pixels blank."""
    if not isinstance(tiles, torch.Tensor) or tiles.dim() != 4 or tiles.shape[0] == 0:
        shape = tuple(tiles.shape) if isinstance(tiles, torch.Tensor) else type(tiles).__name__
        raise ValueError(f"tile needs (N, C, h, w) tiles with N >= 1, got {shape}")
    if tiles.is_floating_point() and not bool(torch.isfinite(tiles).all()):
        raise ValueError("tiles hold NaN or inf values; replace them, e.g. torch.nan_to_num(tiles)")
    n, c, h, w = tiles.shape
    pad = check_int(pad, "pad (pixels)", 0)
    if isinstance(fill, bool) or not isinstance(fill, numbers.Real):
        raise TypeError(f"fill must be a number (NaN shows as blank in matplotlib), got {fill!r}")
    cols = min(n, int(n**0.5 + 0.999) if cols is None else check_int(cols, "cols", 1))
    rows = -(-n // cols)
    out = torch.full((c, rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad), fill, dtype=tiles.dtype)
    for i in range(n):
        r, q = divmod(i, cols)
        out[:, r * (h + pad) : r * (h + pad) + h, q * (w + pad) : q * (w + pad) + w] = tiles[i]
    return out


def filter_grid(
    model: nn.Module, layer: str | nn.Module | None = None, cols: int | None = None, pad: int = 1
) -> torch.Tensor:
    """One picture of a conv layer's filters: RGB (3, H, W) for a first layer, grey (1, H, W) otherwise.

    First layer: one tile per filter (normalised per filter). Deeper: one row per output filter,
    one grey tile per input channel (at most 32 shown per row). Values in [0, 1], padding white.
    """
    w = filters(model, layer)
    if w.shape[1] == 3:
        return tile(w, cols=cols, pad=pad)
    kernels = w[:, :32]
    o, i, kh, kw = kernels.shape
    return tile(kernels.reshape(o * i, 1, kh, kw), cols=i, pad=pad)


def activation_maps(
    model: nn.Module,
    layer: str | nn.Module,
    image: torch.Tensor,
    sort: Literal["mean", "max", "none"] | None = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every channel of ``layer`` for one image: ``(maps (C, h, w), order (C,))``.

    ``maps[i]`` is channel ``order[i]``; sorted by each channel's mean or max activation,
    largest first (``sort=None`` or ``"none"``: as is). Lay them out with :func:`tile`.
    """
    if sort not in ("mean", "max", "none", None):
        raise ValueError(f"sort must be 'mean', 'max' or None, got {sort!r}")
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a (C, H, W) tensor with values in [0, 1], got {type(image).__name__}")
    x = image[None] if image.dim() == 3 else image
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"activation_maps takes one image (C, H, W), got {tuple(image.shape)}; pass x[i]")
    # Why check: a NaN pixel spreads to every channel, and a wrong shape fails deep inside the model.
    x = check_input(model, x.to(model_device(model)))
    with locked_eval(model), torch.no_grad():
        a = forward_to(model, layer, x)[0].detach().float().cpu()
    if sort in (None, "none"):
        order = torch.arange(a.shape[0])
    else:
        score = a.flatten(1).mean(1) if sort == "mean" else a.flatten(1).max(1).values
        order = torch.sort(score, descending=True, stable=True).indices
    return a[order], order
