"""Read a transformer layer's output as a (B, C, h, w) map: tokens (B, N, D) laid on their patch
grid, channels-last (B, h, w, C) maps turned channels-first. Re-exported by :mod:`guidewidgets.hooks`."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

Reshape = Callable[[torch.Tensor], torch.Tensor]


def _is_attention(m: nn.Module) -> bool:
    # nn.MultiheadAttention (ViT), or a custom one by name (Swin's ShiftedWindowAttention, timm's Attention)
    return isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention")


def _has_attention(m: nn.Module) -> bool:
    return any(_is_attention(s) for s in m.modules())


def _patch_size(model: nn.Module) -> tuple[int, int] | None:
    """Stride of the patch embedding: the first conv whose kernel equals its stride (> 1)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            k, st = tuple(m.kernel_size), tuple(m.stride)
            return st if k == st and st[0] > 1 else None  # type: ignore[return-value]
    return None


def _layer_norm_dims(model: nn.Module) -> set[int]:
    return {m.normalized_shape[-1] for m in model.modules() if isinstance(m, nn.LayerNorm)}


def token_grid(model: nn.Module, tokens: int, image_size: tuple[int, int] | None = None) -> tuple[int, int, int] | None:
    """(extra, h, w): ``tokens`` = ``extra`` leading tokens (class/distillation) + an h x w grid.

    The grid comes from the patch embedding's stride and the image size when both are known,
    else from the largest square that leaves at most 2 leading tokens. None if neither fits.
    """
    patch = _patch_size(model)
    if patch is not None and image_size is not None:
        h, w = image_size[0] // patch[0], image_size[1] // patch[1]
        if h * w and 0 <= tokens - h * w <= 8:
            return tokens - h * w, h, w
    for extra in range(3):
        side = math.isqrt(max(tokens - extra, 0))
        if side > 1 and side * side == tokens - extra:
            return extra, side, side
    return None


def grid_transform(model: nn.Module, output: torch.Tensor, image_size: tuple[int, ...] | None = None) -> Reshape | None:
    """How to read a layer's ``output`` as a (B, C, h, w) map, or None when it already is one
    (or cannot be: then it is no feature map).

    - tokens (B, N, D) of a transformer: leading class/distillation tokens dropped, the rest laid
      on the patch grid (see :func:`token_grid`); sequence-first (N, B, D) outputs are recognised
      when the batch size is known;
    - channels-last maps (B, h, w, C) (Swin): recognised when the last size is the width of one
      of the model's LayerNorms and the second is not;
    - (B, C, h, w): None (nothing to do).

    ``image_size`` is the input's shape (B, C, H, W) or its (H, W). Custom layouts: pass
    ``reshape=`` to the method instead.
    """
    hw = tuple(image_size[-2:]) if image_size is not None else None
    batch = image_size[0] if image_size is not None and len(image_size) == 4 else None
    if output.dim() == 3:
        seq_first = batch is not None and output.shape[0] != batch and output.shape[1] == batch
        n = output.shape[0] if seq_first else output.shape[1]
        found = token_grid(model, n, hw)  # type: ignore[arg-type]
        if found is None:
            return None
        extra, h, w = found

        def tokens_to_grid(t: torch.Tensor) -> torch.Tensor:
            if seq_first:
                t = t.transpose(0, 1)
            return t[:, extra:, :].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

        return tokens_to_grid
    if output.dim() == 4:
        dims = _layer_norm_dims(model)
        if output.shape[-1] in dims and output.shape[1] not in dims:
            return _channels_last_to_first
    return None


def _channels_last_to_first(t: torch.Tensor) -> torch.Tensor:
    return t.permute(0, 3, 1, 2)
