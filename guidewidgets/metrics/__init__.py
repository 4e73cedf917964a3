"""Scores for explanation maps: does the map point at the object, and is it faithful to the model?

>>> from guidewidgets import metrics, zoo
>>> model = zoo.load("shapes-classifier")
>>> table = metrics.evaluate(model, zoo.ShapeScenes(32, seed=2024), ["grad-cam", "saliency"])
>>> table.pivot(index="method", columns="metric", values="value")

Pure torch / numpy / scipy (pandas for the table); every map comes from :mod:`guidewidgets.explain`.
``python -m guidewidgets.metrics.scoreboard`` prints every method x every metric.
"""

from __future__ import annotations

from .evaluate import METRICS, evaluate
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

__all__ = [
    "METRICS",
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
