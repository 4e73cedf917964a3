"""Segmentation networks from the attention-and-segmentation lecture, opened up on the embedded segmenter.

>>> from guidewidgets import segnets
>>> labels, forwards = segnets.sliding_window_labels(seg, image)   # one forward per pixel (stride)
>>> segnets.fcn_labels(seg, image)                                 # one forward for all pixels
>>> segnets.transposed_conv(g, w, x.shape, stride=2, padding=1)    # == conv_input_gradient(g, w, ...)
>>> segnets.overlap_counts(3, 2)                                   # uneven: the checkerboard
>>> pooled, idx = segnets.pool_with_indices(x); segnets.max_unpool(pooled, idx)
"""

from __future__ import annotations

# Why star imports: each submodule keeps its own ``__all__`` (in its order), so a new function is
# named once; the package lists them in the order of the lecture.
from . import fcn, transposed, unpool
from .fcn import *  # noqa: F403
from .transposed import *  # noqa: F403
from .unpool import *  # noqa: F403

__all__ = [*fcn.__all__, *transposed.__all__, *unpool.__all__]
