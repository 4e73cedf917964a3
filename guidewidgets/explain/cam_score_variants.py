"""Score-CAM's two smoothed variants, SS-CAM and IS-CAM (torchcam's ``SSCAM`` and ``ISCAM``), on
the base of :mod:`guidewidgets.explain.cam_base`.

Both weight the layer's channels as Score-CAM does (:func:`guidewidgets.explain.score_cam`):
each channel A_k, upsampled and min-max normalised to a mask M_k in [0, 1], masks the image, and
the softmax over channels of the target scores (logits) of the masked images gives the weights.
They average those scores over several masked copies per channel:

- SS-CAM: ``samples`` copies with Gaussian noise (std ``noise``) added to the mask, x (M_k + d);
- IS-CAM: ``samples`` copies with the masked image scaled by c_i = sum_{j<=i} j / N, i = 1..N.

That is ``samples`` x channels masked forwards per image, batched over channels (``batch_size``
images per forward, :func:`guidewidgets.explain.batching.auto_batch_size` by default), with
``progress`` counting them; ``max_channels=k`` keeps each image's k channels of largest mean
activation (:func:`guidewidgets.explain.score_cam` has the same option).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ..hooks import model_output
from .batching import Progress, auto_batch_size, chunks
from .cam_base import CamCall, cam_method, clean_pass
from .cam_gradient_free import _channels, _check_max_channels, _gather, _warn_many, unit_masks
from .targets import Target

__all__ = ["ss_cam", "is_cam"]

# SS-CAM keeps all masks (B, channels, H, W) for its samples up to this size, else remakes them per chunk.
_KEEP_BYTES = 512 * 2**20


def _check_samples(samples: object) -> int:
    """``samples`` as an int >= 1, or a sentence naming the fix."""
    if isinstance(samples, bool) or not isinstance(samples, numbers.Integral) or samples < 1:
        raise ValueError(f"samples must be a whole number >= 1 (masked copies per channel), got {samples!r}")
    return int(samples)


def _kept_channels(
    c: CamCall, name: str, samples: int, max_channels: int | None
) -> tuple[torch.Tensor, Target, Progress]:
    """(the clean image's feature maps of the kept channels (B, n, h, w), the target fixed to the
    clean image, progress over the samples x n x B masked forwards), after the warning of a long run."""
    a, _, t = clean_pass(c)
    a = _gather(a, _channels(a, _check_max_channels(max_channels)))
    b, n = c.x.shape[0], a.shape[1]
    _warn_many(name, n, b, max_channels, samples, stacklevel=6)
    return a, t, Progress(c.progress, samples * n * b)


def _masked_scores(model: nn.Module, x: torch.Tensor, masks: torch.Tensor, t: Target) -> torch.Tensor:
    """Target scores (k, B) of the images ``x`` (B, C, H, W) times the masks (B, k, H, W), one
    forward of k*B images (copy-major, as :meth:`Target.scores` reads them)."""
    k, b = masks.shape[1], x.shape[0]
    masked = x.unsqueeze(0) * masks.transpose(0, 1).unsqueeze(2)  # (k, B, C, H, W)
    out = model_output(model(masked.reshape(k * b, *x.shape[1:])))
    return t.scores(out, k).view(k, b)


@cam_method("ss-cam", slow=True, quick={"samples": 2, "max_channels": 8}, channel_weights=True)
def ss_cam(
    c: CamCall,
    *,
    samples: int = 35,
    noise: float = 2.0,
    seed: int = 0,
    batch_size: int | None = None,
    max_channels: int | None = None,
) -> torch.Tensor:
    """SS-CAM (torchcam's ``SSCAM``, noise on the masks): w = softmax_k (1/N sum_i Y(x * (M_k + d_i)))
    with d_i ~ N(0, ``noise``^2) at the input's resolution; ``samples`` = N (torchcam's defaults:
    35 samples, std 2.0).

    Noise: sample i draws one (channels, H, W) pattern from a generator seeded with ``seed`` (on
    the input's device) and every image of the batch gets it, so an image gets the same map alone
    or in a batch; on the CPU the pattern is torchcam's draw for one image after
    ``torch.manual_seed(seed)``. Memory: one such pattern (channels x H x W floats) at a time, and
    the masks (B x channels x H x W) while they take at most 512 MiB.

    Args:
        samples: noisy masks per channel (forwards per channel and image).
        noise: the noise's standard deviation, in mask units (masks are in [0, 1]).
        seed: seeds the noise.
        batch_size: images per forward (None: :func:`guidewidgets.explain.batching.auto_batch_size`).
        max_channels: keep only each image's ``max_channels`` channels of largest mean activation.
    """
    samples = _check_samples(samples)
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0 (the std of the noise added to the masks), got {noise!r}")
    x = c.x
    b, _, h, w = x.shape
    a, t, done = _kept_channels(c, "ss-cam", samples, max_channels)
    n = a.shape[1]
    per = auto_batch_size(x, batch_size)
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    total = torch.zeros(n, b, device=x.device, dtype=x.dtype)
    # Why keep the masks when they fit: every sample reuses them (torchcam keeps them always).
    kept = unit_masks(a, (h, w)) if b * n * h * w * x.element_size() <= _KEEP_BYTES else None
    with torch.no_grad():
        for _ in range(samples):
            eps = torch.randn((n, h, w), generator=gen, device=x.device, dtype=x.dtype)
            for start, stop in chunks(n, b, per):
                masks = kept[:, start:stop] if kept is not None else unit_masks(a[:, start:stop], (h, w))
                total[start:stop] += _masked_scores(c.model, x, masks + noise * eps[start:stop], t)
                done.advance((stop - start) * b)
    # Why no baseline score Y(x) subtracted (torchcam and the paper do): a softmax ignores it.
    return c.combine((total / samples).t().softmax(1), a)


@cam_method("is-cam", slow=True, quick={"samples": 2, "max_channels": 8}, channel_weights=True)
def is_cam(
    c: CamCall, *, samples: int = 10, batch_size: int | None = None, max_channels: int | None = None
) -> torch.Tensor:
    """IS-CAM (torchcam's ``ISCAM``): w = softmax_k (1/N sum_{i=1..N} Y(c_i x * M_k)) with
    c_i = sum_{j=1..i} j / N, the paper's M_i = sum_{j<i} (j / N) M_k x summed as torchcam does
    (c_N = (N + 1) / 2: the last copies are brighter than the image); ``samples`` = N (torchcam: 10).

    Args:
        samples: scaled copies per channel (forwards per channel and image).
        batch_size: images per forward (None: :func:`guidewidgets.explain.batching.auto_batch_size`).
        max_channels: keep only each image's ``max_channels`` channels of largest mean activation.
    """
    samples = _check_samples(samples)
    x = c.x
    b, _, h, w = x.shape
    a, t, done = _kept_channels(c, "is-cam", samples, max_channels)
    n = a.shape[1]
    coeffs = torch.arange(1, samples + 1, dtype=torch.float64).cumsum(0) / samples
    total = torch.zeros(n, b, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        for start, stop in chunks(n, b, auto_batch_size(x, batch_size)):
            masks = unit_masks(a[:, start:stop], (h, w))
            for coeff in coeffs.tolist():
                total[start:stop] += _masked_scores(c.model, x, coeff * masks, t)
                done.advance((stop - start) * b)
    return c.combine((total / samples).t().softmax(1), a)
