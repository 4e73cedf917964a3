"""Split many model evaluations (noisy copies, occluded or masked images) into batched forwards."""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Callable, Iterator

import torch

__all__ = ["auto_batch_size", "autocast", "chunks", "Progress"]

# Images of 224 x 224 per forward. On CPU smaller batches stay in cache: occlusion on ResNet-18
# (169 patches, 1 thread) took 6.9-7.8 s at 8 images per forward against 8.3-8.6 s at 32.
# A GPU needs larger batches to be busy.
_PIXELS_CPU = 8 * 224 * 224
_PIXELS_GPU = 128 * 224 * 224
# On CUDA: bytes an image may cost, as a multiple of its own float32 bytes, and the share of the
# free memory to fill. A forward without gradients keeps about 16x (ResNet-18) to 45x (VGG-16,
# two 64 x 224 x 224 maps live) the input; gradient methods keep more, hence 128x and 40 %.
_CUDA_BYTES_PER_INPUT_BYTE = 128
_CUDA_FREE_SHARE = 0.4


def auto_batch_size(x: torch.Tensor, batch_size: int | None = None) -> int:
    """Images per forward for perturbation/noise methods (at least ``x.shape[0]``): on CUDA from
    the device's free memory (``torch.cuda.mem_get_info``), elsewhere a fixed pixel budget."""
    if batch_size is not None:
        # Why not int(): 2.5 would run as 2 and True as 1 without a word.
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
            raise TypeError(f"batch_size must be a whole number of images (an int) or None, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        return int(batch_size)
    if x.device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(x.device)
        per_image = 4 * x.shape[1] * x.shape[2] * x.shape[3] * _CUDA_BYTES_PER_INPUT_BYTE
        return max(1, min(1024, int(free * _CUDA_FREE_SHARE) // per_image))
    budget = _PIXELS_CPU if x.device.type == "cpu" else _PIXELS_GPU
    return max(1, min(1024, budget // (x.shape[2] * x.shape[3])))


def autocast(x: torch.Tensor, amp: bool) -> contextlib.AbstractContextManager:
    """Mixed precision for the forwards on ``x``'s device when ``amp`` (float16 on CUDA, bfloat16
    elsewhere: CPUs have no fast float16); a no-op otherwise."""
    if not isinstance(amp, bool):
        raise TypeError(f"amp must be True (mixed precision forwards) or False, got {amp!r}")
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=torch.float16 if x.device.type == "cuda" else torch.bfloat16)


def chunks(n: int, images_per_item: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """(start, stop) ranges over ``n`` items (each costing ``images_per_item`` images)."""
    step = max(1, batch_size // images_per_item)
    for start in range(0, n, step):
        yield start, min(n, start + step)


class Progress:
    """Calls ``fn(fraction)`` as work is done; a no-op when ``fn`` is None."""

    def __init__(self, fn: Callable[[float], None] | None, total: int) -> None:
        if fn is not None and not callable(fn):
            raise TypeError("progress must be a callable(fraction) or None")
        self.fn, self.total, self.done = fn, max(1, total), 0

    def advance(self, n: int) -> None:
        self.done += n
        if self.fn is not None:
            self.fn(min(1.0, self.done / self.total))
