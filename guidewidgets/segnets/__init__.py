"""Segmentation networks from the attention-and-segmentation lecture, opened up on the embedded segmenter.

>>> from guidewidgets import segnets
>>> labels, forwards = segnets.sliding_window_labels(seg, image)   # one forward per pixel (stride)
>>> segnets.fcn_labels(seg, image)                                 # one forward for all pixels
>>> segnets.transposed_conv(g, w, x.shape, stride=2, padding=1)    # == conv_input_gradient(g, w, ...)
>>> segnets.overlap_counts(3, 2)                                   # uneven: the checkerboard
>>> pooled, idx = segnets.pool_with_indices(x); segnets.max_unpool(pooled, idx)
"""

from __future__ import annotations

from .fcn import fcn_labels, path_shapes, same_class_groups, semantic_from_instances, sliding_window_labels
from .transposed import (
    checkerboard_score,
    conv_input_gradient,
    conv_matrix,
    conv_out_size,
    output_padding_for,
    overlap_counts,
    resize_conv,
    transposed_conv,
)
from .unpool import bed_of_nails, max_unpool, nearest_unpool, pool_with_indices

__all__ = [
    "sliding_window_labels",
    "fcn_labels",
    "path_shapes",
    "semantic_from_instances",
    "same_class_groups",
    "conv_out_size",
    "output_padding_for",
    "conv_input_gradient",
    "transposed_conv",
    "conv_matrix",
    "overlap_counts",
    "resize_conv",
    "checkerboard_score",
    "pool_with_indices",
    "max_unpool",
    "nearest_unpool",
    "bed_of_nails",
]
