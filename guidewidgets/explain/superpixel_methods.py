"""Attribution over superpixels: feature ablation, Shapley value sampling, KernelSHAP and LIME.

Each method switches superpixels between the image and a baseline (:mod:`.superpixels`), scores
the coalitions in batched forwards on the model's device and gives every pixel its superpixel's
value. The superpixels come from ``segmenter`` (default: scikit-image SLIC, about 50 segments) or
from ``feature_mask`` (Captum's name for the same thing).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..hooks import model_output
from .batching import Progress
from .registry import Call, method
from .superpixels import Segmenter, as_baseline, coalition_scores, paint, superpixels

__all__ = ["feature_ablation", "shapley_sampling", "kernel_shap", "lime"]

Baseline = float | Sequence[float] | torch.Tensor


def _count(value: object, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


class _Setup:
    """What every superpixel method starts from: labels, baseline, the fixed target, the scores of
    the whole image and of the baseline, and the call's batch size and progress."""

    def __init__(self, c: Call, parts: dict[str, Any], baseline: Baseline, batch_size: int | None) -> None:
        model, x = c.model, c.x
        self.model, self.x, self.batch_size, self.progress = model, x, batch_size, c.progress
        self.labels, self.counts = superpixels(x, **parts)
        self.base = as_baseline(baseline, x)
        with torch.no_grad():
            out = model_output(model(x)).to(x.dtype)
            self.target = c.target.fix(out)
            self.full = self.target.scores(out)
            self.empty = self.target.scores(model_output(model(self.base.contiguous())).to(x.dtype))

    @property
    def most(self) -> int:
        return max(self.counts)

    def scores(self, coalitions: torch.Tensor, total: int) -> torch.Tensor:
        """Target scores (B, K) of ``coalitions`` (B, K, most); ``total``: the progress steps."""
        return coalition_scores(
            self.model,
            self.x,
            self.target,
            self.labels,
            self.base,
            coalitions,
            self.batch_size,
            Progress(self.progress, total),
        )


def _superpixel_method(
    name: str, quick: dict[str, Any]
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Decorator: register the catalog's row ``name`` from its own part ``fn(s: _Setup, *, <its options>)``.

    The registered method takes the family's options too (``segmenter``, ``feature_mask``,
    ``segments``, ``baseline``, ``batch_size``: see the module docstring) and gives ``fn`` the
    :class:`_Setup` they make.
    """

    def wrap(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def own(
            c: Call,
            *,
            segmenter: Segmenter | None = None,
            feature_mask: torch.Tensor | None = None,
            segments: int = 50,
            baseline: Baseline = 0.0,
            batch_size: int | None = None,
            **options: Any,
        ) -> torch.Tensor:
            parts = dict(segmenter=segmenter, feature_mask=feature_mask, segments=segments)
            return fn(_Setup(c, parts, baseline, batch_size), **options)

        first, *shared, _ = inspect.signature(own).parameters.values()
        mine = list(inspect.signature(fn).parameters.values())[1:]
        # Why a signature: registry.method reads the options from it (its own, then the family's).
        own.__signature__ = inspect.Signature([first, *mine, *shared])  # type: ignore[attr-defined]
        functools.update_wrapper(own, fn, updated=())  # fn's name, module and docstring
        return method(name, signed=True, slow=True, quick=quick)(own)

    return wrap


def _generator(seed: int) -> torch.Generator:
    """A fresh generator per sample (on the CPU: the draws are small), so that a sample gets the
    same coalitions alone or in a batch."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _orders(count: int, most: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random orders of ``count`` superpixels, each padded with ``count..most-1``."""
    return torch.stack([torch.cat([torch.randperm(count, generator=gen), torch.arange(count, most)]) for _ in range(n)])


@_superpixel_method("feature-ablation", quick={"segments": 6})
def feature_ablation(s: _Setup) -> torch.Tensor:
    """score(x) - score(x with superpixel s set to the baseline), painted on superpixel s (Captum's
    FeatureAblation with a feature mask)."""
    x = s.x
    keep = ~torch.eye(s.most, dtype=torch.bool, device=x.device).expand(x.shape[0], -1, -1)
    drops = s.full[:, None] - s.scores(keep, s.most)
    return paint([drops[i, :n] for i, n in enumerate(s.counts)], s.labels)


@_superpixel_method("shapley-sampling", quick={"segments": 6, "samples": 2})
def shapley_sampling(s: _Setup, *, samples: int = 25, seed: int = 0) -> torch.Tensor:
    """Shapley values estimated from ``samples`` random orders (Captum's ShapleyValueSampling): in
    each order the superpixels join the baseline image one by one and each gets its score gain.
    Every order's values sum exactly to score(x) - score(baseline), so their mean does too."""
    n = _count(samples, "samples")
    x = s.x
    b, most = x.shape[0], s.most
    # orders[b, j]: a permutation of sample b's superpixels, padded with the absent ones at the end
    orders = torch.stack([_orders(c, most, n, _generator(seed)) for c in s.counts]).to(x.device)
    steps = torch.arange(most + 1, device=x.device)
    rank = torch.argsort(orders, -1)  # rank[b, j, s]: when superpixel s joins in order j
    prefixes = rank[:, :, None, :] < steps[None, None, :, None]  # (B, n, most + 1, most)
    scores = s.scores(prefixes.reshape(b, n * (most + 1), most), n * (most + 1))
    gains = scores.view(b, n, most + 1).diff(dim=-1)  # gain of the superpixel joining at each step
    values = torch.zeros(b, most, device=x.device, dtype=x.dtype).scatter_add_(
        1, orders.reshape(b, -1), gains.reshape(b, -1)
    )
    return paint([values[i, :c] / n for i, c in enumerate(s.counts)], s.labels)


def _kernel_coalitions(count: int, samples: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Coalitions (K, count) and their Shapley-kernel weights: every proper non-empty coalition when
    there are at most ``samples`` of them (exact), else ``samples`` drawn in complementary pairs with
    sizes in proportion to the kernel, each of weight 1."""
    sizes = torch.arange(1, count)
    kernel = (count - 1) / (sizes * (count - sizes) * torch.tensor([math.comb(count, int(m)) for m in sizes]))
    if 2**count - 2 <= samples:
        codes = torch.arange(1, 2**count - 1)
        z = ((codes[:, None] >> torch.arange(count)) & 1).bool()
        return z, kernel[z.sum(1) - 1].double()
    per_size = kernel * torch.tensor([math.comb(count, int(m)) for m in sizes])
    half = max(1, samples // 2)
    drawn = sizes[torch.multinomial(per_size.double(), half, replacement=True, generator=gen)]
    z = torch.argsort(torch.rand(half, count, generator=gen), 1) < drawn[:, None]
    return torch.cat([z, ~z]), torch.ones(2 * half, dtype=torch.float64)


def _constrained_wls(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """phi minimising sum w (y - z phi)^2 subject to sum phi = total (the last one eliminated)."""
    zf = z.to(torch.float64)
    a = zf[:, :-1] - zf[:, -1:]
    rhs = y.double() - zf[:, -1] * total.double()
    sw = w.sqrt()[:, None]
    head = torch.linalg.lstsq(a * sw, rhs[:, None] * sw).solution[:, 0]
    return torch.cat([head, (total.double() - head.sum())[None]])


@_superpixel_method("kernel-shap", quick={"segments": 6, "samples": 16})
def kernel_shap(s: _Setup, *, samples: int = 200, seed: int = 0) -> torch.Tensor:
    """KernelSHAP: the linear model of the coalition scores under the Shapley kernel, with the
    efficiency constraint (values sum to score(x) - score(baseline)). With at most ``samples``
    proper coalitions (up to 7 superpixels at 200) all are scored and the values are the exact
    Shapley values; otherwise coalitions are sampled in complementary pairs (``seed``)."""
    n = _count(samples, "samples", 2)
    x = s.x
    drawn = [_kernel_coalitions(c, n, _generator(seed)) for c in s.counts]
    k = max(z.shape[0] for z, _ in drawn)
    # one (B, K, most) batch; shorter lists are padded with the whole image (weight 0)
    coalitions = torch.ones(x.shape[0], k, s.most, dtype=torch.bool)
    for i, (z, _) in enumerate(drawn):
        coalitions[i, : z.shape[0], : z.shape[1]] = z
    scores = s.scores(coalitions.to(x.device), k)
    values = []
    for i, (z, w) in enumerate(drawn):
        y = scores[i, : z.shape[0]] - s.empty[i]
        values.append(_constrained_wls(z.to(x.device), y, w.to(x.device), s.full[i] - s.empty[i]).to(x.dtype))
    return paint(values, s.labels)


def _weighted_ridge(z: torch.Tensor, y: torch.Tensor, w: torch.Tensor, alpha: float) -> torch.Tensor:
    """Coefficients of ridge regression with an unpenalised intercept and sample weights (what
    scikit-learn's ``Ridge(alpha).fit(z, y, sample_weight=w).coef_`` gives)."""
    zf, yf, wf = z.double(), y.double(), w.double()
    mz = (wf[:, None] * zf).sum(0) / wf.sum()
    my = (wf * yf).sum() / wf.sum()
    zc, yc = zf - mz, yf - my
    gram = zc.T @ (wf[:, None] * zc) + alpha * torch.eye(z.shape[1], dtype=torch.float64, device=z.device)
    return torch.linalg.solve(gram, zc.T @ (wf * yc))


@_superpixel_method("lime", quick={"segments": 6, "samples": 16})
def lime(
    s: _Setup, *, samples: int = 200, kernel_width: float = 0.25, alpha: float = 1.0, seed: int = 0
) -> torch.Tensor:
    """LIME as the ``lime`` package explains images: ``samples`` coalitions with each superpixel
    kept with probability 1/2 (the first one the whole image), weighted by
    sqrt(exp(-d^2 / kernel_width^2)) with d the cosine distance to the whole image in superpixel
    space, and a ridge fit (``alpha``) whose coefficients are the superpixels' values.

    Captum's ``Lime`` differs in its defaults (cosine distance in pixel space, width 1, Lasso
    0.01): see docs/explain.md.
    """
    n = _count(samples, "samples", 2)
    if not (isinstance(kernel_width, numbers.Real) and kernel_width > 0 and math.isfinite(kernel_width)):
        raise ValueError(f"kernel_width must be a positive number, got {kernel_width!r}")
    if not (isinstance(alpha, numbers.Real) and alpha >= 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha (the ridge penalty) must be a number >= 0, got {alpha!r}")
    x, most = s.x, s.most
    z = torch.stack([torch.rand(n, most, generator=_generator(seed)) < 0.5 for _ in s.counts])
    z[:, 0] = True
    z[:, :, :] |= torch.arange(most)[None, None, :] >= torch.tensor(s.counts)[:, None, None]  # absent: always "kept"
    z = z.to(x.device)
    scores = s.scores(z, n)
    values = []
    for i, c in enumerate(s.counts):
        zi = z[i, :, :c]
        kept = zi.sum(1).double()
        distance = 1 - kept.sqrt() / math.sqrt(c)  # cosine distance of z to the all-ones vector
        w = torch.exp(-(distance**2) / kernel_width**2).sqrt()
        values.append(_weighted_ridge(zi, scores[i], w, float(alpha)).to(x.dtype))
    return paint(values, s.labels)
