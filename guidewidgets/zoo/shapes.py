"""The object templates of ShapeScenes: each class's form and shading on a 128 x 128 grid, rendered
once and warped into every scene (see :mod:`guidewidgets.zoo.scenes`)."""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["templates"]

_TEMPLATE = 128


@functools.lru_cache(maxsize=1)
def templates(nc: int) -> torch.Tensor:
    """(nc, 1, 128, 128): each class's shading inside its shape, 0 outside, on [-1, 1]^2.

    Args:
        nc: the number of classes (ShapeScenes' CLASSES, in order).

    Returns:
        The templates, float32.
    """
    t = (torch.arange(_TEMPLATE, dtype=torch.float32) + 0.5) / _TEMPLATE * 2 - 1
    v, u = torch.meshgrid(t, t, indexing="ij")
    u, v = u.expand(nc, -1, -1), v.expand(nc, -1, -1)
    cls = torch.arange(nc)
    inside, shade = _shapes(u, v, cls, aspect=1.0, freq=3.0, phase=torch.zeros(2))
    return (shade * inside)[:, None].contiguous()


def _shapes(u, v, cls, aspect, freq, phase):
    """Inside-masks and shading (texture) of every object in the batch, selected by its class."""
    rho2 = u * u + v * v
    # circle: radial shading, smooth
    circle = rho2 <= 1.0
    # ellipse: same family of colour and shading, only its aspect ratio tells it apart
    ellipse = u * u + (v / aspect) ** 2 <= 1.0
    square = torch.maximum(u.abs(), v.abs()) <= 0.8
    # triangle: three half-planes at distance 0.5 from the centre (vertices on the unit circle)
    s3 = math.sqrt(3) / 2
    triangle = (v <= 0.5) & (s3 * u - 0.5 * v <= 0.5) & (-s3 * u - 0.5 * v <= 0.5)
    # star: five points, inner radius 0.45
    theta = torch.atan2(v, u)
    sector = 2 * math.pi / 5
    phi = (torch.remainder(theta + sector / 2 - math.pi / 2, sector) - sector / 2).abs()
    rho = rho2.sqrt()
    px, py = rho * torch.cos(phi), rho * torch.sin(phi)
    ri, half = 0.45, sector / 2
    star = (px - 1) * ri * math.sin(half) + py * (1 - ri * math.cos(half)) <= 0
    cross = ((u.abs() <= 0.32) & (v.abs() <= 0.95)) | ((v.abs() <= 0.32) & (u.abs() <= 0.95))

    fu = freq * u * math.pi + phase[..., 0]
    fv = freq * v * math.pi + phase[..., 1]
    radial = 1.08 - 0.35 * rho2.clamp(max=1.0)
    shades = [
        radial,  # circle
        radial,  # ellipse
        0.72 + 0.28 * (torch.sin(fu) > 0).float(),  # square: stripes
        1.0 - 0.4 * ((torch.sin(fu) * torch.sin(fv)) > 0.45).float(),  # triangle: dots
        0.95 + 0.1 * torch.sin(fu * 0.5),  # star: nearly plain
        0.7 + 0.3 * ((torch.sin(fu) * torch.sin(fv)) > 0).float(),  # cross: checker
    ]
    forms = [circle, ellipse, square, triangle, star, cross]
    inside = torch.zeros_like(circle)
    shade = torch.ones_like(u)
    for c, (form, sh) in enumerate(zip(forms, shades)):
        sel = (cls == c).view(-1, 1, 1)
        inside = torch.where(sel, form, inside)
        shade = torch.where(sel, sh, shade)
    return inside, shade
