"""Training basics from the localisation lecture, on the embedded world.

>>> from guidewidgets import basics
>>> stats = basics.training_stats(train_images)          # per-channel mean / std of the training split
>>> basics.normalize(test_images, stats)                  # the same numbers applied to the test split
>>> a, b = basics.bn_affine(model.features.block1[1])     # BN in eval mode: y = a x + b per channel
>>> basics.roc(scores, y)["auc"] == basics.pairwise_auc(scores, y)
>>> heads, info = basics.train_pooled_heads(zoo.load("shapes-classifier"))   # GAP vs GMP, seconds
"""

from __future__ import annotations

from .batchnorm import bn_affine, bn_layers, fold_bn, output_in_batches, train_mode
from .normalization import LeakageWarning, Stats, leaked_stats, normalize, training_stats
from .pooling import HEAD_SEED, PooledClassifier, class_maps, train_pooled_heads
from .roc import binary_scores, confusion, pairwise_auc, predict, rates, roc

__all__ = [
    "Stats",
    "LeakageWarning",
    "training_stats",
    "leaked_stats",
    "normalize",
    "bn_affine",
    "fold_bn",
    "bn_layers",
    "train_mode",
    "output_in_batches",
    "predict",
    "confusion",
    "binary_scores",
    "roc",
    "pairwise_auc",
    "rates",
    "PooledClassifier",
    "train_pooled_heads",
    "class_maps",
    "HEAD_SEED",
]
