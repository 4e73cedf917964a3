"""FullGrad: the input-gradient plus the bias-gradient of every convolution and BatchNorm.

Srinivas & Fleuret (NeurIPS 2019) decompose a ReLU network's score exactly as
``f(x) = sum(grad_x f * x) + sum_l sum(b_l * grad_{z_l} f)``: the input term plus, for every layer
``l`` with a bias ``b_l``, the bias times the gradient of the score with respect to that layer's
output ``z_l`` (its "bias-gradient", a map per channel). FullGrad's saliency map post-processes
each term (absolute value, min-max rescale, bilinear upsample to the image) and sums them.

Which layers carry a bias (pytorch-grad-cam's choice, which follows the authors' code):
``nn.Conv2d`` with a ``bias``, and ``nn.BatchNorm2d``, whose eval-mode output
``gamma (z - mean) / sqrt(var + eps) + beta`` has the implicit bias
``beta - mean * gamma / sqrt(var + eps)`` (running statistics). Linear layers and other norms are
left out: their bias-gradients have no spatial layout. Where pytorch-grad-cam differs: a
BatchNorm2d without affine parameters counts here (gamma = 1, beta = 0; its implicit bias is
still a bias of the network), the peer skips it; a BatchNorm2d without running statistics
normalises with the batch's own statistics, so only its ``beta`` counts. A network with no such
layer (e.g. bias-free convolutions and linear layers) has no bias term, and FullGrad is then its
input term alone, ``|grad_x f * x|`` post-processed: the full decomposition of such a net.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..hooks import hooked, model_output
from .layers import upsample
from .registry import Call, method
from .targets import Target

__all__ = ["fullgrad", "full_gradients", "bias_of", "rescale_channels"]

# Why 1e-7: pytorch-grad-cam's scale_cam_image divides by (1e-7 + max), so a flat channel
# (zero after subtracting its minimum) stays 0 instead of becoming NaN.
_EPS = 1e-7


def bias_of(module: nn.Module) -> torch.Tensor | None:
    """The per-channel bias (C,) that ``module`` adds to its output, or None if it adds none.

    Args:
        module: any module; only ``nn.Conv2d`` with a bias and ``nn.BatchNorm2d`` have one here.

    Returns:
        A detached tensor (C,), or None.
    """
    if isinstance(module, nn.BatchNorm2d):
        mean, var = module.running_mean, module.running_var
        beta = module.bias.detach() if module.bias is not None else None
        if mean is None or var is None:
            return beta  # batch statistics: the shift depends on the batch, not a bias of the net
        gamma = module.weight.detach() if module.weight is not None else torch.ones_like(mean)
        implicit = -mean * gamma / torch.sqrt(var + module.eps)
        return implicit if beta is None else implicit + beta
    if isinstance(module, nn.Conv2d) and module.bias is not None:
        return module.bias.detach()
    return None


def full_gradients(
    model: nn.Module, x: torch.Tensor, target: Target
) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """The full-gradient decomposition of ``model``'s scores at ``x``: one forward and one backward.

    Args:
        model: the network (run as it is: the caller sets eval mode).
        x: images (B, C, H, W).
        target: the checked target.

    Returns:
        (input gradient (B, C, H, W), [(bias (C,), bias-gradient dy/dz (B, C, h, w)) per call of a
        layer with a bias, in forward order], the scores (B,)). For a piecewise-linear network
        (ReLU, max-pool, conv, eval BatchNorm) ``scores = sum(g * x) + sum_l sum(b_l * g_l)`` plus
        the biases of the layers not counted (a linear head's).
    """
    outs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(bias: torch.Tensor):
        def on_output(module: nn.Module, args: Any, out: Any) -> torch.Tensor | None:
            if not isinstance(out, torch.Tensor) or out.dim() != 4 or not out.requires_grad:
                return None
            outs.append((bias, out))
            # Why a clone goes on: a following inplace ReLU must change the copy, not the tensor
            # whose gradient we ask for (that would be the gradient of relu(z), not of z).
            return out.clone()

        return on_output

    xg = x.detach().requires_grad_(True)
    with torch.enable_grad(), hooked() as h:
        for m in model.modules():
            b = bias_of(m)
            if b is not None:
                h.forward(m, keep(b))
        scores = target.scores(model_output(model(xg)))
        grads = torch.autograd.grad(scores.sum(), [xg, *(z for _, z in outs)], allow_unused=True)
    # A layer whose output does not reach the score (an unused branch) has bias-gradient 0.
    layers = [(b, torch.zeros_like(z) if g is None else g) for (b, z), g in zip(outs, grads[1:])]
    assert grads[0] is not None  # x always reaches the score
    return grads[0], layers, scores.detach()


def rescale_channels(m: torch.Tensor) -> torch.Tensor:
    """Each (sample, channel) map of ``m`` (B, C, h, w) min-max rescaled to [0, 1]: FullGrad's
    post-processing as pytorch-grad-cam applies it (per channel; the authors' code rescales
    per layer), with its ``1e-7`` in the denominator."""
    m = m - m.amin((2, 3), keepdim=True)
    return m / (m.amax((2, 3), keepdim=True) + _EPS)


@method("fullgrad")
def fullgrad(c: Call) -> torch.Tensor:
    """FullGrad: ``sum_c R(|g_x x|_c) + sum_l sum_c up(R(|b_l,c g_l,c|))``, R a min-max rescale.

    One forward and one backward. Each channel of each term is rescaled to [0, 1] on its own grid
    and, since bilinear upsampling is linear, a layer's channels are summed before one upsample
    per grid size (pytorch-grad-cam upsamples every channel: the same map). The map is not
    normalised (pytorch-grad-cam min-max normalises the sum; the correlation is the same). Which
    layers count, and a network without any: see :mod:`guidewidgets.explain.fullgrad`.
    """
    g, layers, _ = full_gradients(c.model, c.x, c.target)
    with torch.no_grad():
        total = rescale_channels((g * c.x).abs()).sum(1)
        by_grid: dict[tuple[int, int], torch.Tensor] = {}
        for bias, grad in layers:
            part = rescale_channels((bias.to(grad.dtype).view(1, -1, 1, 1) * grad).abs()).sum(1)
            key = (part.shape[-2], part.shape[-1])
            by_grid[key] = part if key not in by_grid else by_grid[key] + part
        for part in by_grid.values():
            total = total + upsample(part, c.x)
    return total
