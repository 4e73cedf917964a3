"""Transposed convolution: the adjoint of a strided convolution, and its checkerboard artefacts.

A convolution is a linear map ``y = M x``; the "deconvolution" of segmentation networks is
``M^T`` (better names: convolution transpose, backward strided convolution, fractionally
strided convolution, upconvolution). ``M^T`` is exactly what backpropagation applies to the
gradient, so ``conv_transpose2d(g, w) == d<g, conv2d(x, w)>/dx``. With kernel size not divisible
by the stride, output pixels receive different numbers of kernel taps: the checkerboard of Odena
et al. (2016). Resizing (nearest / bilinear) then convolving gives every pixel the same number.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "conv_out_size",
    "output_padding_for",
    "conv_input_gradient",
    "transposed_conv",
    "conv_matrix",
    "overlap_counts",
    "resize_conv",
    "checkerboard_score",
]


def conv_out_size(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution: floor((n + 2p - d (k - 1) - 1) / s) + 1."""
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def output_padding_for(n: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """The ``output_padding`` that makes conv_transpose2d return length ``n`` (a strided conv maps
    several input sizes to one output size; the transpose must be told which one)."""
    m = conv_out_size(n, kernel, stride, padding, dilation)
    if m < 1:
        raise ValueError(f"an input of length {n} is too small for kernel {kernel} with padding {padding}")
    return n - ((m - 1) * stride - 2 * padding + dilation * (kernel - 1) + 1)


def _check_weight(weight: torch.Tensor) -> None:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError("weight must be a (C_out, C_in, k, k) conv2d weight; use conv.weight")


def conv_input_gradient(
    grad_out: torch.Tensor, weight: torch.Tensor, input_shape: tuple[int, ...], stride: int = 1, padding: int = 0
) -> torch.Tensor:
    """``d <grad_out, conv2d(x, weight)> / dx`` by autograd (at any x: the conv is linear)."""
    _check_weight(weight)
    x = torch.zeros(input_shape, dtype=grad_out.dtype, requires_grad=True)
    y = F.conv2d(x, weight.detach(), stride=stride, padding=padding)
    if y.shape != grad_out.shape:
        raise ValueError(f"grad_out must have the conv's output shape {tuple(y.shape)}, got {tuple(grad_out.shape)}")
    (g,) = torch.autograd.grad(y, x, grad_out)
    return g


def transposed_conv(
    z: torch.Tensor, weight: torch.Tensor, input_shape: tuple[int, ...], stride: int = 1, padding: int = 0
) -> torch.Tensor:
    """``conv_transpose2d(z, weight)`` sized back to ``input_shape`` (the conv's input size)."""
    _check_weight(weight)
    k = weight.shape[-1]
    op = (
        output_padding_for(input_shape[-2], k, stride, padding),
        output_padding_for(input_shape[-1], k, stride, padding),
    )
    return F.conv_transpose2d(z, weight, stride=stride, padding=padding, output_padding=op)


def conv_matrix(weight: torch.Tensor, size: int, stride: int = 1, padding: int = 0) -> torch.Tensor:
    """The matrix M of ``conv2d(., weight)`` on one-channel ``size x size`` inputs: ``(m*m, size*size)``
    with ``conv2d(x).flatten() == M @ x.flatten()``. Built by convolving each basis image."""
    _check_weight(weight)
    if weight.shape[:2] != (1, 1):
        raise ValueError("conv_matrix shows one-channel kernels; pass weight[:1, :1]")
    basis = torch.eye(size * size, dtype=weight.dtype).view(size * size, 1, size, size)
    cols = F.conv2d(basis, weight, stride=stride, padding=padding)  # (size*size, 1, m, m)
    return cols.flatten(1).T.contiguous()


def overlap_counts(kernel: int, stride: int, size: int = 8, padding: int = 0) -> torch.Tensor:
    """How many kernel taps land on each output pixel of a transposed conv (all-ones kernel on a
    ``size x size`` all-ones input). Uneven inside the image <=> checkerboard."""
    w = torch.ones(1, 1, kernel, kernel)
    return F.conv_transpose2d(torch.ones(1, 1, size, size), w, stride=stride, padding=padding)[0, 0]


def resize_conv(x: torch.Tensor, weight: torch.Tensor, scale: int = 2, mode: str = "nearest") -> torch.Tensor:
    """Upsample by ``scale`` (``mode`` "nearest" or "bilinear"), then a stride-1 'same' convolution."""
    _check_weight(weight)
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"mode must be 'nearest' or 'bilinear', got {mode!r}")
    up = F.interpolate(x, scale_factor=scale, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))
    return F.conv2d(up, weight, padding=weight.shape[-1] // 2)


def checkerboard_score(y: torch.Tensor, period: int = 2, border: int = 2) -> float:
    """Spread of the ``period x period`` phase means of ``y`` (..., H, W) away from the border,
    relative to the mean absolute value: 0 for an output without a periodic pattern."""
    if y.dim() < 2 or min(y.shape[-2:]) <= 2 * border + period:
        raise ValueError(f"y must be at least {2 * border + period + 1} pixels on each side")
    core = y[..., border : y.shape[-2] - border, border : y.shape[-1] - border].double()
    phases = torch.stack([core[..., i::period, j::period].mean() for i in range(period) for j in range(period)])
    scale = core.abs().mean().clamp_min(1e-12)
    return float((phases.max() - phases.min()) / scale)
