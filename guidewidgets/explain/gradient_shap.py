"""GradientSHAP: expected gradients between the image and baselines drawn from a distribution.

Lundberg & Lee (2017) approximate SHAP values by Integrated Gradients averaged over a
distribution of baselines; GradientSHAP (Captum's name; "expected gradients", Erion et al.)
estimates that expectation by sampling: per sample, a baseline ``r`` from the set, a point
``alpha ~ U(0, 1)`` on the path, optional Gaussian noise on the image, and the attribution
``grad(r + alpha (x' - r)) * (x' - r)`` with ``x' = x + noise``; the mean over samples.
In expectation its sum is ``score(x) - E[score(r)]`` (with noise 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .batching import Progress, auto_batch_size
from .gradients import input_gradient
from .input_attribution import attribution_map, signed_image_method
from .noise import noisy_copies
from .registry import Call

__all__ = ["gradient_shap", "resolve_baselines", "shap_draws"]

BaselinesLike = torch.Tensor | Sequence[float] | float | None


def resolve_baselines(baselines: BaselinesLike, x: torch.Tensor) -> torch.Tensor:
    """A set of baseline images (N, C, H, W) for ``x`` (B, C, H, W).

    Args:
        baselines: None (the black, mid-grey and white images), one number or a list of numbers
            (one constant image each), an image (C, H, W) or a stack of images (N, C, H, W).
        x: the images explained.

    Returns:
        The baselines on ``x``'s device and dtype.
    """
    shape = tuple(x.shape[1:])
    if baselines is None:
        baselines = [0.0, 0.5, 1.0]
    if not isinstance(baselines, torch.Tensor):
        try:
            values = torch.as_tensor(baselines, dtype=x.dtype, device=x.device).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"baselines must be a number, a list of numbers or a tensor of images, got {type(baselines).__name__}"
            ) from None
        if values.numel() == 0:
            raise ValueError("baselines is empty; give at least one baseline image or value")
        return values.view(-1, 1, 1, 1).expand(-1, *shape).clone()
    if baselines.dim() == len(shape):
        baselines = baselines.unsqueeze(0)
    if baselines.dim() != len(shape) + 1 or tuple(baselines.shape[1:]) != shape or baselines.shape[0] == 0:
        raise ValueError(
            f"baselines must be an image of shape {shape} or a stack (N, {', '.join(map(str, shape))}) of them "
            f"(the images' own shape), got {tuple(baselines.shape)}"
        )
    return baselines.detach().to(device=x.device, dtype=x.dtype)


def shap_draws(samples: int, baselines: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded random choices of :func:`gradient_shap`: ``alpha`` (samples,) in [0, 1) and the
    baseline index (samples,). Sample ``s`` uses the same pair for every image of the batch (as
    SmoothGrad's copies share their noise), so an image gets the same map alone or in a batch."""
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    g = torch.Generator().manual_seed(int(seed))
    alphas = torch.rand(samples, generator=g, dtype=torch.float64)
    index = torch.randint(baselines, (samples,), generator=g)
    return alphas, index


@signed_image_method("gradient-shap", slow=True, quick={"samples": 4})
def gradient_shap(
    c: Call,
    *,
    raw: bool = False,
    baselines: BaselinesLike = None,
    samples: int = 20,
    noise: float = 0.0,
    seed: int = 0,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Mean over ``samples`` of ``grad(r + alpha (x' - r)) * (x' - r)``, summed over channels.

    ``baselines``: see :func:`resolve_baselines`; ``noise``: the std of Gaussian noise on the
    image as a fraction of its value range (Captum's ``stdevs``, 0 by default); the draws are
    :func:`shap_draws` (``seed``). The class is the clean image's for every sample.
    ``batch_size``: images per forward (Captum's ``internal_batch_size``; None: from the image size).
    """
    b = c.x.shape[0]
    x = c.x.detach()
    refs = resolve_baselines(baselines, x)
    alphas, index = shap_draws(samples, refs.shape[0], seed)
    alphas = alphas.to(device=x.device, dtype=x.dtype)
    index = index.to(x.device)
    t = c.fixed_target()
    total = torch.zeros_like(x)
    done = Progress(c.progress, samples)
    start = 0
    for xn, k in noisy_copies(x, samples, noise, seed, auto_batch_size(x, batch_size)):
        r = refs[index[start : start + k]].unsqueeze(1)  # (k, 1, C, H, W): one per copy
        diff = xn.view(k, b, *x.shape[1:]) - r
        a = alphas[start : start + k].view(k, 1, 1, 1, 1)
        g, _ = input_gradient(c.model, (r + a * diff).reshape(k * b, *x.shape[1:]), t, repeats=k)
        total += (g.view(k, b, *x.shape[1:]) * diff).sum(0)
        start += k
        done.advance(k)
    return attribution_map(total / samples, raw)
