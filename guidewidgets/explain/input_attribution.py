"""Attributions to the input pixels: Integrated Gradients and gradient x input.

Both are signed and additive over pixels: the map is the attribution summed over the colour
channels (``raw=True`` gives the (B, 3, H, W) attribution). For Integrated Gradients the map's
sum approximates score(x) - score(baseline) (completeness, Sundararajan et al., 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .batching import Progress, auto_batch_size, chunks
from .gradients import input_gradient
from .registry import Call, method

__all__ = [
    "integrated_gradients",
    "gradient_x_input",
    "path_points",
    "resolve_baseline",
    "attribution_map",
    "signed_image_method",
]

_RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def path_points(steps: int, rule: str = "gausslegendre") -> tuple[list[float], list[float]]:
    """(alphas in [0, 1], weights summing to 1) of the quadrature along the straight path;
    the same rules and names as Captum's ``IntegratedGradients(method=...)``."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an int >= 1 (points on the path from the baseline), got {steps!r}")
    key = rule.lower().replace("-", "_") if isinstance(rule, str) else rule
    if key not in _RULES:
        raise ValueError(f"unknown integration rule {rule!r}; use one of {', '.join(_RULES)}")
    if key == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (0.5 * (1 + nodes)).tolist(), (0.5 * weights).tolist()
    if steps < 2:
        raise ValueError(f"the {key} rule needs steps >= 2, got {steps}; or use rule='gausslegendre'")
    n = steps
    deltas = [1 / n] * n
    if key == "riemann_trapezoid":
        # Why not Captum's weights (1/n, halved at the ends): they sum to 1 - 1/n, so completeness
        # would miss by 1/n whatever the model. These are the trapezoid rule's, summing to 1.
        deltas = [1 / (n - 1)] * n
        deltas[0] /= 2
        deltas[-1] /= 2
        alphas = torch.linspace(0, 1, n)
    elif key == "riemann_left":
        alphas = torch.linspace(0, 1 - 1 / n, n)
    elif key == "riemann_middle":
        alphas = torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n)
    else:
        alphas = torch.linspace(1 / n, 1, n)
    return alphas.tolist(), deltas


def resolve_baseline(baseline: float | Sequence[float] | torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The baseline as a tensor broadcastable to ``x``: None or a number (every pixel that
    value), three numbers (a colour), or a tensor of shape (3, H, W) or (B, 3, H, W)."""
    if baseline is None:
        baseline = 0.0
    if isinstance(baseline, torch.Tensor):
        if baseline.shape not in (x.shape, x.shape[1:]) and baseline.numel() != 1:
            raise ValueError(
                f"baseline tensor must have the image's shape {tuple(x.shape[1:])} or the batch's "
                f"{tuple(x.shape)}, got {tuple(baseline.shape)}"
            )
        return baseline.to(device=x.device, dtype=x.dtype)
    try:
        v = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(
            f"baseline must be a number, three numbers (a colour) or a tensor, got {type(baseline).__name__}"
        ) from None
    if v.numel() == 3:
        return v.view(1, 3, 1, 1)
    if v.numel() != 1:
        raise ValueError(f"baseline must be one value or one per colour channel (3), got {baseline!r}")
    return v.view(1, 1, 1, 1)


def attribution_map(attr: torch.Tensor, raw: bool) -> torch.Tensor:
    """A signed attribution (B, C, H, W) as it is (``raw``) or summed over channels (B, H, W)."""
    return attr if raw else attr.sum(1)


def signed_image_method(name: str, **more: Any) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator (:func:`~guidewidgets.explain.registry.method`) for a signed attribution to the
    pixels, the catalog's row ``name``: ``raw=True`` gives the (B, C, H, W) attribution."""
    return method(name, signed=True, has_image=True, **more)


@signed_image_method("gradient-x-input")
def gradient_x_input(c: Call, *, raw: bool = False) -> torch.Tensor:
    """x * d score / d x; ``raw=True`` gives the (B, 3, H, W) product."""
    g, _ = input_gradient(c.model, c.x, c.target)
    return attribution_map(g * c.x.detach(), raw)


@signed_image_method("integrated-gradients", slow=True, quick={"steps": 4})
def integrated_gradients(
    c: Call,
    *,
    raw: bool = False,
    baseline: float | Sequence[float] | torch.Tensor | None = 0.0,
    steps: int = 50,
    rule: str = "gausslegendre",
    batch_size: int | None = None,
) -> torch.Tensor:
    """(x - baseline) * sum_i w_i d score / d x at baseline + alpha_i (x - baseline).

    ``steps`` points of the quadrature ``rule`` (Captum's default, Gauss-Legendre, unless told);
    the points are batched, ``batch_size`` images per forward (Captum's ``internal_batch_size``;
    None: chosen from the image size). The class explained is the clean image's (predicted or
    given) at every point. ``baseline``: 0 (black) by default; see :func:`resolve_baseline`.
    """
    alphas, weights = path_points(steps, rule)
    b = c.x.shape[0]
    x = c.x.detach()
    base = resolve_baseline(baseline, x)
    diff = x - base
    t = c.fixed_target()
    total = torch.zeros_like(x)
    done = Progress(c.progress, steps)
    a_all = torch.tensor(alphas, device=x.device, dtype=x.dtype)
    w_all = torch.tensor(weights, device=x.device, dtype=x.dtype)
    for start, stop in chunks(steps, b, auto_batch_size(x, batch_size)):
        k = stop - start
        a = a_all[start:stop].view(k, 1, 1, 1, 1)
        points = (base + a * diff.unsqueeze(0)).reshape(k * b, *x.shape[1:])
        g, _ = input_gradient(c.model, points, t, repeats=k)
        total += torch.einsum("k,kbchw->bchw", w_all[start:stop], g.view(k, b, *x.shape[1:]))
        done.advance(k)
    return attribution_map(total * diff, raw)
