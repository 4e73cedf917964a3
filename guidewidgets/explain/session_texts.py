"""The texts an explain view shows (menus, headings, notes, colour scales, hover readouts), kept
widget-free so that scripts and tests read the same words as the widget.

:class:`ExplainerTexts` is a mixin of :class:`guidewidgets.explain.session.Explainer`: it reads the
session's images, scores and detections and computes nothing of its own but one hooked forward
for a layer's label.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..hooks import FeatureMap, eval_mode, get_layer, hooked, model_lock
from .registry import method_info
from .task_targets import DetectorBoxScore

if TYPE_CHECKING:
    from .session import MapKey

__all__ = ["ExplainerTexts"]

Result = dict[str, np.ndarray]  # "map": (H, W); "raw": (3, H, W) for gradient images


class ExplainerTexts:
    """Menu entries and sentences about an explain session's images and maps."""

    # What the session (Explainer) provides.
    model: nn.Module
    images: list[torch.Tensor]
    labels: list[int | None]
    names: list[str]
    segmentation: bool
    detection: bool
    detections: dict[int, dict[str, torch.Tensor]]
    probabilities: Callable[[int], np.ndarray]
    top_classes: Callable[..., list[int]]
    class_name: Callable[[int], str]
    target_name: Callable[[int, int], str]
    layers: Callable[..., list[FeatureMap]]
    model_input: Callable[[int], torch.Tensor]
    _image_index: Callable[[object], int]

    def target_options(self, index: int, top_k: int = 5) -> list[tuple[str, int]]:
        """``(label, class)`` for a target menu: the top ``top_k`` by score, then every other class."""
        p, order = self.probabilities(index), self.top_classes(index)
        if self.detection:  # every box, best first: "label score"
            d = self.detections[index]
            return [(f"{self.class_name(int(d['labels'][j]))} {p[j]:.2f}", j) for j in order]
        unit = " of pixels" if self.segmentation else ""
        top, rest = order[:top_k], sorted(order[top_k:])
        return [(f"{self.class_name(k)} ({p[k]:.1%}{unit})", k) for k in top] + [
            (f"   {self.class_name(k)} ({p[k]:.1%})", k) for k in rest
        ]

    def layer_options(self, index: int, default: str | None = None) -> list[tuple[str, str]]:
        """``(label, name)`` for a layer menu: ``""`` = default first, then each spatial map once."""
        index = self._image_index(index)  # checked here: the menu below swallows errors
        try:
            maps = self.layers(index)
        except Exception:  # the menu is a convenience; the default layer still works
            maps = []
        labels = {f.name: f.label for f in maps}
        if self.detection and not default:  # DetectorBoxScore's: the backbone's deepest map
            default = (DetectorBoxScore(self.model, (0, 0, 1, 1)).default_explain_layer or "")[len("detector.") :]
        default = default or getattr(self.model, "default_explain_layer", None) or (maps[-1].name if maps else "")
        if default and default not in labels:  # an inner module whose output an outer one returns
            labels[default] = self._label_of(index, default)
        return [(f"default: {labels.get(default, default)}", "")] + [(f.label, f.name) for f in maps]

    def _label_of(self, index: int, name: str) -> str:
        """``"name (h x w)"`` from one hooked forward (just ``name`` if it is no spatial map)."""
        shapes: list[tuple[int, ...]] = []
        try:
            with model_lock(self.model), torch.no_grad(), eval_mode(self.model), hooked() as placed:
                placed.forward(get_layer(self.model, name), lambda _m, _a, out: shapes.append(out.shape))
                self.model(self.model_input(index))
        except Exception:
            return name
        if not shapes or len(shapes[0]) != 4:
            return name
        _, c, h, w = shapes[0]
        return FeatureMap(name, (c, h, w)).label

    def heading(self, key: MapKey, title: str | None = None) -> str:
        """``"Grad-CAM for star (p = 97%), true label star | scene 0"``: what a map shows."""
        p = self.probabilities(key.image)[key.target]
        what = "share of pixels" if self.segmentation else "score" if self.detection else "p"
        text = (
            f"{title or method_info(key.method).title} for {self.target_name(key.image, key.target)} ({what} = {p:.0%})"
        )
        if key.region is not None:
            text += " inside box ({}, {})-({}, {})".format(*key.region)
        label = self.labels[key.image]
        truth = f", true label {self.class_name(label)}" if label is not None else ""
        return f"{text}{truth} | {self.names[key.image]}"

    def empty_note(self, key: MapKey, result: Result) -> str:
        """A sentence when a map has nothing to show (flat zero) or its class is all but absent
        (p below 1 %): a blank map must never look like a failure. "" otherwise."""
        if "raw" in result:
            return ""
        p = float(self.probabilities(key.image)[key.target])
        what = "share of pixels" if self.segmentation else "score" if self.detection else ""
        gives = f"the model gives {self.target_name(key.image, key.target)} {what + ' ' if what else ''}{p:.1%}"
        title = method_info(key.method).title
        a = result["map"]
        if not np.isfinite(a).all() or float(np.abs(a).max()) == 0.0:
            kind = "evidence either way" if method_info(key.method).signed else "positive evidence"
            return f"{gives}: {title} has no {kind} to show"
        if p < 0.01 and not self.detection:
            return f"{gives}: {title} shows the little evidence there is for a class the model all but rules out"
        return ""

    def scale_text(self, key: MapKey, result: Result) -> tuple[tuple[str, str], str]:
        """``((low label, high label), meaning)`` of a map's colour scale."""
        cls, a = self.target_name(key.image, key.target), result["map"]
        if method_info(key.method).signed and "raw" not in result:
            m = float(np.abs(a).max())
            return (f"-{m:.3g} against", f"+{m:.3g} for"), f"colour: evidence against (blue) <- 0 -> for (red) {cls}"
        return (f"{float(a.min()):.3g} low", f"{float(a.max()):.3g} high"), f"colour: low -> high evidence for {cls}"

    def value_text(self, key: MapKey, y: int, x: int, result: Result | None = None) -> str:
        """A hover readout: the pixel's RGB and, with a result, its map value and place in the range."""
        rgb = (self.images[key.image][:, y, x] * 255 + 0.5).clamp(0, 255).to(torch.uint8).tolist()
        text = f"RGB {tuple(rgb)}"
        if result is not None:
            m = result["map"]
            lo, hi = float(m.min()), float(m.max())
            rel = (m[y, x] - lo) / (hi - lo) if hi > lo else 0.0
            text += f" | {method_info(key.method).title}: {m[y, x]:.3g} ({rel:.0%})"
        return text
