"""Attention rollout for Vision Transformers (ViT, DeiT): how much each patch feeds the class token."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from .. import hooks
from ..hooks import model_output
from .layers import upsample
from .registry import Call, method

__all__ = ["attention_rollout"]


@method("attention-rollout")
def attention_rollout(c: Call, *, head_fusion: Literal["mean", "max", "min"] = "mean") -> torch.Tensor:
    """Rollout R = A_L ... A_1 with A_l = 0.5 W_l + 0.5 I (rows renormalised), W_l layer l's
    attention fused over heads (``head_fusion``: the paper's mean, or max/min); the map is the
    class token's row over the patch tokens, laid on the patch grid and upsampled. For a model
    without a class token the mean row is used. ``target`` is checked but does not change the map.
    """
    if head_fusion not in ("mean", "max", "min"):
        raise ValueError(f"head_fusion must be 'mean', 'max' or 'min', got {head_fusion!r}")
    model, x = c.model, c.x
    if not any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
        raise ValueError(
            f"attention rollout needs a transformer whose attention layers are nn.MultiheadAttention "
            f"(torchvision's ViT, DeiT); {type(model).__name__} has none. Use 'grad-cam' (it works on "
            "transformers too) or another method"
        )
    with hooks.attention_weights(model, average=head_fusion == "mean") as found, torch.no_grad():
        model_output(model(x))
    if not found:
        raise ValueError("the model's attention layers were not run by its forward; attention rollout needs them")
    n = found[0].shape[-1]
    if any(w.shape[-1] != n or w.shape[-2] != n for w in found):
        raise ValueError("attention rollout needs the same tokens in every layer (no token pooling or merging)")
    grid = hooks.token_grid(model, n, (x.shape[2], x.shape[3]))
    if grid is None:
        raise ValueError(f"cannot lay {n} tokens on a patch grid for an image of {tuple(x.shape[2:])}")
    extra, h, w = grid
    with torch.no_grad():
        eye = torch.eye(n, device=x.device, dtype=torch.float64)
        rollout = eye.expand(x.shape[0], n, n)
        for weights in found:
            a = weights.to(torch.float64)
            if a.dim() == 4:  # (B, heads, N, N): fuse the heads
                a = a.amax(1) if head_fusion == "max" else a.amin(1)
            a = 0.5 * a + 0.5 * eye
            a = a / a.sum(-1, keepdim=True)
            rollout = a @ rollout
        row = rollout[:, 0] if extra > 0 else rollout.mean(1)
        maps = row[:, extra:].reshape(x.shape[0], h, w).to(x.dtype)
    return upsample(maps, x)
