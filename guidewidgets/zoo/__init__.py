"""The embedded default: ShapeScenes data, small trained models shipped as package data, real
photos bundled with scikit-image, and adapters for torchvision models. Nothing here downloads.

>>> from guidewidgets import zoo
>>> model = zoo.load("shapes-segmenter")
>>> scene = zoo.ShapeScenes(10, seed=1, task="segmentation")[0]
>>> logits = model(scene["image"][None])  # (1, 7, 96, 96)
"""

from __future__ import annotations

from .models import ShapeClassifier, ShapeSegmenter
from .registry import load, models, weights_path
from .scenes import BACKGROUNDS, CLASSES, MASK_CLASSES, ShapeScenes

__all__ = [
    "ShapeScenes",
    "CLASSES",
    "MASK_CLASSES",
    "BACKGROUNDS",
    "ShapeClassifier",
    "ShapeSegmenter",
    "load",
    "models",
    "weights_path",
    "photos",
    "photo",
    "torchvision_model",
]


def __getattr__(name: str):
    # Why: photos and torchvision adapters import scikit-image / torchvision weights lazily.
    if name in ("photos", "photo"):
        from . import bundled_photos as _photos

        return getattr(_photos, name)
    if name == "torchvision_model":
        from .adapters import torchvision_model

        return torchvision_model
    raise AttributeError(f"module 'guidewidgets.zoo' has no attribute {name!r}")
