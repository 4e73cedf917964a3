"""SmoothGrad-squared and VarGrad: the second moments of the gradient over noisy copies.

SmoothGrad (``gradients.smoothgrad``) averages the gradient g over copies ``x + eps``; these two
keep its second moments instead, as Captum's ``NoiseTunnel(nt_type=...)`` does:

- ``smoothgrad-sq``: ``E[g^2]`` (Hooker et al. 2019, "SmoothGrad-Squared");
- ``vargrad``: ``Var[g] = E[g^2] - E[g]^2`` (Adebayo et al. 2018, "VarGrad").

Both are unsigned; the map is the largest value over the colour channels (``raw=True``: the
(B, C, H, W) moment). The noise is SmoothGrad's (same seed, same copies).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .batching import Progress, auto_batch_size
from .gradient_shap import fixed_target
from .gradients import input_gradient
from .noise import noisy_copies
from .registry import MethodInfo, register
from .targets import TargetLike

__all__ = ["gradient_moments", "smoothgrad_sq", "vargrad"]


def gradient_moments(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike,
    samples: int,
    noise: float,
    seed: int,
    batch_size: int | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean gradient and the mean squared gradient over ``samples`` noisy copies of ``x``.

    Args:
        model: the classifier.
        x: images (B, C, H, W).
        target: as for every method; the class is the clean image's for every copy.
        samples: number of noisy copies.
        noise: the noise's standard deviation as a fraction of each image's value range.
        seed: seeds the noise (see :func:`guidewidgets.explain.noise.noisy_copies`).
        batch_size: copies per forward (None: chosen from the image size).
        progress: called with the fraction done.

    Returns:
        ``(E[g], E[g^2])``, each (B, C, H, W).
    """
    b = x.shape[0]
    t = fixed_target(model, x, target)
    first = torch.zeros_like(x)
    second = torch.zeros_like(x)
    done = Progress(progress, samples)
    for xn, k in noisy_copies(x, samples, noise, seed, auto_batch_size(x, batch_size)):
        g, _ = input_gradient(model, xn, t, repeats=k)
        g = g.view(k, b, *g.shape[1:])
        first += g.sum(0)
        second += g.square().sum(0)
        done.advance(k)
    return first / samples, second / samples


Moment = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _moment_method(info: MethodInfo, name: str, moment: Moment, doc: str) -> Callable[..., torch.Tensor]:
    """A registered method: ``moment(E[g], E[g^2])`` over noisy copies, the largest over channels."""

    def method(
        model: nn.Module,
        x: torch.Tensor,
        target: TargetLike = None,
        layer: str | nn.Module | None = None,
        *,
        progress: Callable[[float], None] | None = None,
        raw: bool = False,
        samples: int = 25,
        noise: float = 0.15,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> torch.Tensor:
        first, second = gradient_moments(model, x, target, samples, noise, seed, batch_size, progress)
        m = moment(first, second)
        return m if raw else m.amax(1)

    # Why set before registering: register copies them, and the docs find a method by its name.
    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc
    return register(info)(method)


def _info(name: str, title: str, reference: str, summary: str, order: float) -> MethodInfo:
    return MethodInfo(
        name, title, "gradient", reference, summary, order=order, slow=True, has_image=True, quick={"samples": 3}
    )


smoothgrad_sq = _moment_method(
    _info(
        "smoothgrad-sq",
        "SmoothGrad-squared",
        "Hooker et al., A Benchmark for Interpretability Methods in Deep Neural Networks, NeurIPS 2019",
        "Squared gradient averaged over noisy copies of the image (SmoothGrad's second moment).",
        230,
    ),
    "smoothgrad_sq",
    lambda first, second: second,
    """``E[g^2]`` over ``samples`` noisy copies (std ``noise`` x the image's range), as Captum's
    ``NoiseTunnel(Saliency, nt_type="smoothgrad_sq")`` on the signed gradient; ``raw=True``: the
    (B, C, H, W) moment.""",
)

vargrad = _moment_method(
    _info(
        "vargrad",
        "VarGrad",
        "Adebayo et al., Local Explanation Methods for Deep Neural Networks Lack Sensitivity to Parameter Values, ICLR 2018 workshop",
        "Variance of the gradient over noisy copies of the image: where the explanation is unstable.",
        240,
    ),
    "vargrad",
    # Why clamp: exact in exact arithmetic, but rounding can leave a tiny negative variance.
    lambda first, second: (second - first.square()).clamp_min(0),
    """``E[g^2] - E[g]^2`` over ``samples`` noisy copies, as Captum's ``nt_type="vargrad"``
    (clamped at 0 against rounding); ``raw=True``: the (B, C, H, W) variance.""",
)
