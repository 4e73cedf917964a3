"""The shipped models: their names, their weights files inside the package, and loading them."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .models import ShapeClassifier, ShapeSegmenter, ShapesModel
from .weights_io import load_state, read_blob

__all__ = ["models", "load", "weights_path", "FORMAT"]

#: Tag written into every weights file, so a foreign .pt file is recognised as such.
FORMAT = "guidewidgets.zoo/1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

_BUILDERS: dict[str, Callable[[], ShapesModel]] = {
    "shapes-classifier": ShapeClassifier,
    "shapes-segmenter": ShapeSegmenter,
}
_RECIPE = {"shapes-classifier": "classifier", "shapes-segmenter": "segmenter"}


def models() -> list[str]:
    """Names of the models that ship with the package (``load`` accepts them)."""
    return list(_BUILDERS)


def _check_name(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"model name must be a str, got {type(name).__name__}; one of {models()}")
    if name not in _BUILDERS:
        close = difflib.get_close_matches(name, models(), n=2, cutoff=0.4)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        tv = " For torchvision models use guidewidgets.zoo.torchvision_model(name)."
        raise ValueError(f"unknown model {name!r}.{hint} Shipped models: {models()}.{tv}")


def weights_path(name: str) -> Path:
    """Where the packaged weights of model ``name`` live."""
    _check_name(name)
    return WEIGHTS_DIR / f"{name}.pt"


def load(name: str, *, weights: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Build shipped model ``name`` with its trained weights, in eval mode, on ``device``.

    ``weights`` overrides the packaged file (e.g. one written by ``python -m guidewidgets.zoo.train``).
    Nothing is downloaded. A missing, corrupted or mismatched file raises a ``FileNotFoundError`` /
    ``ValueError`` that says how to regenerate it.
    """
    _check_name(name)
    path = Path(weights) if weights is not None else weights_path(name)
    regen = f"regenerate it with `python -m guidewidgets.zoo.train {_RECIPE[name]}` or reinstall guidewidgets"
    blob = read_blob(path, repr(name), regen, accept=lambda b: b.get("format") == FORMAT and b.get("model") == name)
    model = _BUILDERS[name]()
    load_state(model, blob["state_dict"], path, repr(name), regen)
    model.classes = list(blob.get("classes", model.classes))
    model.meta = dict(blob.get("meta", {}))
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval().to(device)
