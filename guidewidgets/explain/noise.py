"""Seeded noisy copies of a batch, for SmoothGrad and Smooth Grad-CAM++."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .batching import chunks

__all__ = ["noisy_copies"]


def noisy_copies(
    x: torch.Tensor, samples: int, noise: float, seed: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, int]]:
    """Yield (copies (k*B, C, H, W) ordered copy-major, k) until ``samples`` copies are made.

    Copy ``i`` adds the same Gaussian pattern to every sample (scaled by each sample's value
    range), drawn one copy at a time from a generator seeded with ``seed``: a sample gets the
    same noise whether it is explained alone or in a batch.
    """
    if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
        raise ValueError(f"samples must be a positive int, got {samples!r}")
    if not noise >= 0:
        raise ValueError(f"noise must be >= 0 (a fraction of the image's value range), got {noise!r}")
    b = x.shape[0]
    x = x.detach()
    sigma = noise * (x.amax((1, 2, 3)) - x.amin((1, 2, 3))).view(1, b, 1, 1, 1)
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    for start, stop in chunks(samples, b, batch_size):
        k = stop - start
        eps = torch.stack([torch.randn(x.shape[1:], generator=gen, device=x.device, dtype=x.dtype) for _ in range(k)])
        yield (x.unsqueeze(0) + sigma * eps.unsqueeze(1)).reshape(k * b, *x.shape[1:]), k
