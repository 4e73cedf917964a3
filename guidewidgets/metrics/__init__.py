"""Scores for explanation maps: does the map point at the object, and is it faithful to the model?

>>> from guidewidgets import metrics, zoo
>>> model = zoo.load("shapes-classifier")
>>> table = metrics.evaluate(model, zoo.ShapeScenes(32, seed=2024), ["grad-cam", "saliency"])
>>> table.pivot(index="method", columns="metric", values="value")

Segmentation and box scores live here too, all in ``(pred, truth)`` order:
:func:`confusion` (rows = truth, columns = prediction), :func:`iou_per_class`, :func:`miou`,
:func:`box_iou` (pairwise, (N, M)).

Inside the package import them from their modules (``from ..metrics.boxes import box_iou``): those
import nothing of the package but ``checks``. (Not lazily from here: ``evaluate`` is both a module and
a function of this package, and a lazy attribute would be shadowed by the submodule once imported.)

Pure torch / numpy / scipy (pandas for the table); every map comes from :mod:`guidewidgets.explain`.
``python -m guidewidgets.metrics.scoreboard`` prints every method x every metric.
"""

from __future__ import annotations

from .boxes import box_iou, check_boxes
from .evaluate import METRICS, MetricInfo, evaluate
from .faithfulness import auc, deletion, insertion, noisy_linear_imputation, perturbation_curves, relevance_order, road
from .pointing import default_tolerance, energy_pointing, pointing_game
from .sanity import (
    cascading_randomization,
    data_randomization,
    randomizable_layers,
    randomized_copy,
    spearman,
    train_copy,
)
from .segmentation import (
    accuracy_from_confusion,
    confusion,
    iou_from_confusion,
    iou_per_class,
    miou,
    miou_from_confusion,
)

__all__ = [
    "confusion",
    "iou_per_class",
    "miou",
    "iou_from_confusion",
    "miou_from_confusion",
    "accuracy_from_confusion",
    "box_iou",
    "check_boxes",
    "METRICS",
    "MetricInfo",
    "evaluate",
    "pointing_game",
    "energy_pointing",
    "default_tolerance",
    "perturbation_curves",
    "deletion",
    "insertion",
    "auc",
    "relevance_order",
    "road",
    "noisy_linear_imputation",
    "spearman",
    "randomizable_layers",
    "randomized_copy",
    "cascading_randomization",
    "data_randomization",
    "train_copy",
]
