"""Unpooling: the upsampling layers of the lecture's encoder-decoder segmenters.

Nearest neighbour copies each value over its k x k cell; "bed of nails" puts it in the top-left
corner and zeros elsewhere; max-unpooling (SegNet, Noh et al.'s DeconvNet) puts it back where
the matching max-pool found its maximum, using the indices the pool returned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["pool_with_indices", "max_unpool", "nearest_unpool", "bed_of_nails"]


def _check(x: torch.Tensor, k: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError("x must be a (B, C, H, W) tensor; add dims with x[None, None]")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def pool_with_indices(x: torch.Tensor, k: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """k x k max-pool with stride k; returns (pooled, flat argmax indices into each H x W plane)."""
    _check(x, k)
    if x.shape[-2] % k or x.shape[-1] % k:
        raise ValueError(f"H and W must be multiples of k={k}, got {tuple(x.shape[-2:])}; crop the input")
    return F.max_pool2d(x, k, stride=k, return_indices=True)


def max_unpool(pooled: torch.Tensor, indices: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Each pooled value back at its argmax position, zeros elsewhere (the pool's size x k)."""
    _check(pooled, k)
    if indices.shape != pooled.shape:
        raise ValueError("indices must come from the same pool as the values (same shape); use pool_with_indices")
    return F.max_unpool2d(pooled, indices, (k, k), stride=(k, k))


def nearest_unpool(x: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Nearest neighbour: each value copied over its k x k cell."""
    _check(x, k)
    return x.repeat_interleave(k, -2).repeat_interleave(k, -1)


def bed_of_nails(x: torch.Tensor, k: int = 2) -> torch.Tensor:
    """Each value in its cell's top-left corner, zeros elsewhere."""
    _check(x, k)
    out = x.new_zeros(*x.shape[:-2], x.shape[-2] * k, x.shape[-1] * k)
    out[..., ::k, ::k] = x
    return out
