"""A widget-free spatial-transformer session: a distorted scene, its sampling grid, the rectified view
and what the STN classifier and a plain classifier say (what ``STNWidget`` shows).

>>> s = STNSession()                      # the shipped STN and plain classifiers, 64 held-out scenes
>>> s.pick(3)["stn"], s.result["label"]   # scene 3 with its own distortion
>>> s.distort(angle=90.0)["plain"]        # rotate the object; one forward pass of each model

The scene's background, clutter and noise stay; only the object is rotated, scaled and moved.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .. import hooks
from . import stn

__all__ = ["STNSession", "SCALE_RANGE"]

#: Object sizes the session accepts (1 = the clean scene's size).
SCALE_RANGE = (0.05, 4.0)


def _number(value: object, name: str, why: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise TypeError(f"{name} must be a finite number ({why}), got {value!r}")
    return float(value)


class STNSession:
    """A distorted scene and what the spatial transformer makes of it.

    Args:
        model: an STN classifier with ``.transform(x)`` and ``.classify(view)`` (default: the shipped one).
        plain: the baseline classifier to compare with (default: the shipped one; ``False`` for none).
        scenes: a :class:`~guidewidgets.attend.stn.DistortedScenes` (default: 64 held-out scenes).
        index: the scene shown first.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        plain: nn.Module | bool | None = None,
        scenes: stn.DistortedScenes | None = None,
        index: int = 0,
    ) -> None:
        # Any: an STN classifier is duck-typed (.transform, .classify), not a class check
        self.model: Any = model if model is not None else stn.load("stn")
        if not hasattr(self.model, "transform") or not hasattr(self.model, "classify"):
            raise TypeError(
                "model must be an STN classifier with .transform(x) and .classify(view) methods "
                "(guidewidgets.attend.stn.STNClassifier)"
            )
        self.plain: nn.Module | None = None
        if isinstance(plain, nn.Module):
            self.plain = plain
        elif plain is None or plain is True:
            self.plain = stn.load("plain")
        elif plain is not False:
            raise TypeError(f"plain must be a classifier, True/None (the shipped one) or False (none), got {plain!r}")
        self.scenes = scenes if scenes is not None else stn.DistortedScenes(64, seed=61_001)
        if len(self.scenes) == 0:
            raise ValueError("scenes is empty; pass a DistortedScenes with at least one scene")
        self.classes = list(getattr(self.model, "classes", stn.CLASSES))
        self.index = 0
        self.angle, self.scale, self.shift = 0.0, 1.0, (0.0, 0.0)
        self.result: dict[str, Any] = {}
        self.pick(index)

    # ---- state ----------------------------------------------------------------------------------
    def check_index(self, index: object) -> int:
        n = len(self.scenes)
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or not 0 <= int(index) < n:
            raise ValueError(f"scene {index!r} does not exist; pick 0..{n - 1}")
        return int(index)

    def check_scale(self, scale: object) -> float:
        s = _number(scale, "scale", "the object's size, 1 = the clean scene's")
        lo, hi = SCALE_RANGE
        if not lo <= s <= hi:
            raise ValueError(f"scale {s} is out of range; use {lo:g}..{hi:g} (1 = the clean scene's size)")
        return s

    def own_distortion(self, index: int | None = None) -> tuple[float, float, tuple[float, float]]:
        """``(angle, scale, (shift x, shift y))`` the data set drew for scene ``index`` (default: the shown one)."""
        item = self.scenes[self.index if index is None else self.check_index(index)]
        shift = tuple(round(float(v), 3) for v in item["shift"])
        return round(item["angle"], 1), round(item["scale"], 3), (shift[0], shift[1])

    def pick(self, index: int) -> dict[str, Any]:
        """Show scene ``index`` with its own distortion; returns the new :attr:`result`."""
        self.index = self.check_index(index)
        self.angle, self.scale, self.shift = self.own_distortion()
        return self.compute()

    def reset(self) -> dict[str, Any]:
        """Back to the distortion the data set drew for this scene."""
        return self.pick(self.index)

    def distort(
        self, angle: float | None = None, scale: float | None = None, shift: Sequence[float] | None = None
    ) -> dict[str, Any]:
        """Rotate (degrees), scale and move (normalised centre, -1..1) the object; what is not
        given stays. Nothing changes when a value is refused (TypeError / ValueError)."""
        a = self.angle if angle is None else _number(angle, "angle", "degrees")
        s = self.scale if scale is None else self.check_scale(scale)
        if shift is None:
            t = self.shift
        else:
            if isinstance(shift, (str, bytes)) or not isinstance(shift, Sequence) or len(shift) != 2:
                raise TypeError(f"shift must be a pair (x, y) of numbers in about -1..1, got {shift!r}")
            t = (
                _number(shift[0], "shift x", "-1 left edge, +1 right"),
                _number(shift[1], "shift y", "-1 top, +1 bottom"),
            )
        self.angle, self.scale, self.shift = a, s, t
        return self.compute()

    # ---- computation ----------------------------------------------------------------------------
    def image(self) -> torch.Tensor:
        """The current input (3, 96, 96): the scene with the current distortion."""
        return self.scenes.render(self.index, angle=self.angle, scale=self.scale, shift=self.shift)

    def compute(self) -> dict[str, Any]:
        """Grid, rectified output and both predictions of the current input (kept in :attr:`result`):
        ``theta`` (2, 3), ``input`` (3, 96, 96), ``output`` (3, 48, 48), ``stn`` / ``plain`` class
        and ``stn_p`` / ``plain_p`` probability (None without a plain model), ``label``."""
        x = self.image()[None]
        with torch.no_grad(), hooks.model_lock(self.model), hooks.eval_mode(self.model):
            theta, _grid, out = self.model.transform(x)
            p_stn = self.model.classify(out).softmax(1)[0]
        p_plain = None
        if self.plain is not None:
            with torch.no_grad(), hooks.model_lock(self.plain), hooks.eval_mode(self.plain):
                p_plain = self.plain(x).softmax(1)[0]
        self.result = {
            "theta": theta[0],
            "input": x[0],
            "output": out[0],
            "stn": int(p_stn.argmax()),
            "stn_p": float(p_stn.max()),
            "plain": None if p_plain is None else int(p_plain.argmax()),
            "plain_p": None if p_plain is None else float(p_plain.max()),
            "label": self.scenes.label(self.index),
        }
        return self.result

    # ---- words a view shows ---------------------------------------------------------------------
    def verdict(self, which: str) -> tuple[str, bool] | None:
        """``("square 97%", correct)`` for ``which`` = "stn" or "plain"; None without that model."""
        r = self.result
        if r.get(which) is None:
            return None
        return f"{self.classes[r[which]]} {100 * r[which + '_p']:.0f}%", r[which] == r["label"]

    def describe(self) -> str:
        """``"scene 3: rotate 45°, scale 0.50, shift (0.10, -0.20)"``."""
        return (
            f"scene {self.index}: rotate {self.angle:.0f}°, scale {self.scale:.2f}, "
            f"shift ({self.shift[0]:.2f}, {self.shift[1]:.2f})"
        )

    def close(self) -> None:
        """Nothing runs in the background and no hook stays on the models; here for the one shape."""
