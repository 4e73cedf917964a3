"""Scores for explanation maps: does the map point at the object, and is it faithful to the model?

>>> from guidewidgets import metrics, zoo
>>> model = zoo.load("shapes-classifier")
>>> table = metrics.evaluate(model, zoo.ShapeScenes(32, seed=2024), ["grad-cam", "saliency"])
>>> table.pivot(index="method", columns="metric", values="value")

Segmentation and box scores live here too, all in ``(pred, truth)`` order:
:func:`confusion` (rows = truth, columns = prediction), :func:`iou_per_class`, :func:`miou`,
:func:`box_iou` (pairwise, (N, M)).

They import nothing of the package but ``checks``, and the map scores (which import explain) load
on first use, so guide/ and explain/ can use them without loading the whole explanation layer.

Pure torch / numpy / scipy (pandas for the table); every map comes from :mod:`guidewidgets.explain`.
``python -m guidewidgets.metrics.scoreboard`` prints every method x every metric.
"""

from __future__ import annotations

import importlib
from typing import Any

from .boxes import box_iou, check_boxes
from .segmentation import (
    accuracy_from_confusion,
    confusion,
    iou_from_confusion,
    iou_per_class,
    miou,
    miou_from_confusion,
)

# Why lazy: the map scores import explain (and localize), while guide/ and explain/ need only the
# segmentation and box scores; importing those must not load the whole explanation layer.
_LAZY = {
    "METRICS": "evaluate",
    "MetricInfo": "evaluate",
    "evaluate": "evaluate",
    "auc": "faithfulness",
    "deletion": "faithfulness",
    "insertion": "faithfulness",
    "noisy_linear_imputation": "faithfulness",
    "perturbation_curves": "faithfulness",
    "relevance_order": "faithfulness",
    "road": "faithfulness",
    "default_tolerance": "pointing",
    "energy_pointing": "pointing",
    "pointing_game": "pointing",
    "cascading_randomization": "sanity",
    "data_randomization": "sanity",
    "randomizable_layers": "sanity",
    "randomized_copy": "sanity",
    "spearman": "sanity",
    "train_copy": "sanity",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
