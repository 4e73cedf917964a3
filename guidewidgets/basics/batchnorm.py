"""Batch normalisation in training vs test mode.

Training: each channel is normalised with the *batch's* mean and variance,
``y = gamma (x - mu_B) / sqrt(sigma_B^2 + eps) + beta``, so one image's output depends on the
other images of the batch; the running averages are updated as a side effect. Test (eval): the
running statistics are fixed numbers and BN is the per-channel affine map ``y = a x + b`` with
``a = gamma / sqrt(running_var + eps)`` and ``b = beta - a running_mean``, which can be folded
into the preceding convolution.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..hooks import eval_mode, model_lock

__all__ = ["bn_affine", "fold_bn", "bn_layers", "train_mode", "output_in_batches"]


def _check_bn(bn: nn.Module) -> nn.BatchNorm2d:
    if not isinstance(bn, nn.BatchNorm2d):
        raise TypeError(f"expected an nn.BatchNorm2d, got {type(bn).__name__}; pick one from bn_layers(model)")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "this BatchNorm2d tracks no running statistics (track_running_stats=False); it has no eval map"
        )
    return bn


def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b), each (C,), with ``bn.eval()(x) == a[c] * x + b[c]`` per channel c."""
    bn = _check_bn(bn)
    assert bn.running_var is not None and bn.running_mean is not None
    with torch.no_grad():
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_mean)
        a = gamma / torch.sqrt(bn.running_var + bn.eps)
        b = beta - a * bn.running_mean
    return a.detach().clone(), b.detach().clone()


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d equal to ``bn.eval()(conv(x))`` (the lecture's "fused with the previous conv")."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected an nn.Conv2d before the BatchNorm2d, got {type(conv).__name__}")
    a, b = bn_affine(bn)
    if conv.out_channels != a.numel():
        raise ValueError(
            f"the conv has {conv.out_channels} output channels, the BN {a.numel()}; pass the pair in order"
        )
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        fused.weight.mul_(a.view(-1, 1, 1, 1))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(a)
        fused.bias = nn.Parameter(a * bias + b)
    return fused


def bn_layers(model: nn.Module) -> list[str]:
    """Dotted names of the model's BatchNorm2d layers, shallow to deep."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


@contextmanager
def train_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block with the model in training mode; the flags *and* the running statistics
    (which a training-mode forward overwrites) are restored afterwards, so the model is unchanged."""
    with model_lock(model):
        flags = {m: m.training for m in model.modules()}
        buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        try:
            model.train()
            yield model
        finally:
            for m, flag in flags.items():
                m.training = flag
            with torch.no_grad():
                for k, v in model.named_buffers():
                    if k in buffers:
                        v.copy_(buffers[k])


def output_in_batches(
    model: nn.Module, image: torch.Tensor, companions: list[torch.Tensor], *, train: bool
) -> torch.Tensor:
    """The output for ``image`` (C, H, W) when it is run in a batch with each of ``companions``
    ((B_i, C, H, W) each), one row per batch. In eval mode the rows are equal; in training mode
    they differ, since BN normalises with the batch's statistics. The model is left unchanged."""
    if image.dim() != 3:
        raise ValueError(f"image must be one (C, H, W) image, got {tuple(image.shape)}; drop the batch dim with x[0]")
    if not companions or any(c.dim() != 4 or c.shape[1:] != image.shape for c in companions):
        raise ValueError("companions must be a non-empty list of (B, C, H, W) batches of images shaped like image")
    rows = []
    with torch.no_grad():
        if train:
            with train_mode(model):
                for other in companions:
                    rows.append(model(torch.cat([image[None], other]))[0])
        else:
            with model_lock(model), eval_mode(model):
                for other in companions:
                    rows.append(model(torch.cat([image[None], other]))[0])
    return torch.stack(rows)
