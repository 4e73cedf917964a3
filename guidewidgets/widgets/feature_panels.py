"""Pieces of the FeatureWidget: the image helpers its panels share and the neuron fold, which shows
what the chosen channel responds to in the shown image (its guided backprop or gradient, computed by
:meth:`guidewidgets.features.FeatureBrowser.neuron_image`; this module only draws it)."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as W
import numpy as np
import torch

from .. import render
from ..features.browser import NEURON_RULES, NEURON_UNITS, FeatureBrowser

PATCH_PX = 64  # each top patch and neighbour is shown this many px wide (readable from the back row)
NEURON_PX = 192  # the image and its neuron picture are shown this many px wide


def show(image: W.Image, rgba: np.ndarray) -> None:
    """Put ``rgba`` into ``image`` at its own pixel size (a flex box would stretch it otherwise)."""
    image.value = render.to_png(rgba)
    image.layout.width, image.layout.height = f"{rgba.shape[1]}px", f"{rgba.shape[0]}px"


def rgb(t: torch.Tensor, px: int = PATCH_PX) -> np.ndarray:
    """(3, h, w) image in [0, 1] -> RGBA about ``px`` wide (nearest-neighbour enlargement)."""
    rgba = render.to_rgba(t.clamp(0, 1))
    return render.upscale(rgba, max(1, px // max(1, rgba.shape[1])))


def scatter_pixels(xy: np.ndarray, side: int, margin: int) -> np.ndarray:
    """(N, 2) points scaled into a ``side`` px square, ``margin`` px from its edges, as ints."""
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    return np.rint(margin + (xy - lo) / span * (side - 1 - 2 * margin)).astype(int)


def draw_maximized(w: Any) -> None:
    """The FeatureWidget ``w``'s maximizing image of its channel, or a grey square until it arrives."""
    img = w.session.cached("maximized", w.layer, w.channel)
    if img is None:
        show(w.w_max, np.full((192, 192, 4), 235, np.uint8))
        w.w_max_caption.value = f"Maximising channel {w.channel} of {html.escape(w.layer)}..."
        return
    show(w.w_max, rgb(img, 192))
    w.w_progress.value = 1.0
    w.w_progress.layout.visibility = "hidden"  # shown only while the maximization runs
    w.w_max_caption.value = (
        f"Image maximising channel {w.channel} of {html.escape(w.layer)} ({w.session.steps} steps, Fourier + jitter)"
    )


def framed(rgba: np.ndarray) -> np.ndarray:
    """``rgba`` with a 2 px red frame (the chosen channel's tile)."""
    out = rgba.copy()
    red = (255, 0, 0, 255)
    out[:2], out[-2:], out[:, :2], out[:, -2:] = red, red, red, red
    return out


class NeuronPanel(W.VBox):
    """The shown image beside the guided-backprop (or gradient) image of one unit of a channel.

    ``w_rule`` and ``w_unit`` are linked to the FeatureWidget's ``neuron_rule`` and ``neuron_unit``.
    """

    def __init__(self) -> None:
        self.w_rule = W.ToggleButtons(options=[(t, k) for k, t in NEURON_RULES.items()], value="guided")
        self.w_unit = W.ToggleButtons(options=[(t, k) for k, t in NEURON_UNITS.items()], value="max")
        self.w_caption = W.HTML()
        self.w_image = W.Image(format="png")
        self.w_image.add_class("gw-feat-neuron")
        self.frame: np.ndarray | None = None
        row = W.HBox([self.w_rule, self.w_unit], layout=W.Layout(flex_flow="row wrap"))
        super().__init__([row, self.w_caption, self.w_image])

    def draw(self, session: FeatureBrowser, layer: str, channel: int, index: int, rule: str, unit_kind: str) -> None:
        """Compute (through the session) and show the neuron image of ``channel`` on image ``index``."""
        g, unit = session.neuron_image(layer, channel, index, rule, unit_kind)
        # Why grey for other channel counts: the signed colour rendering reads three colour channels.
        g3 = g if g.shape[0] == 3 else g.mean(0, keepdim=True).expand(3, -1, -1)
        picture = render.upscale(render.gradient_image(g3), max(1, NEURON_PX // g.shape[-1]))
        self.frame = render.grid([rgb(session.images[index], NEURON_PX), picture], pad=4)
        show(self.w_image, self.frame)
        how = NEURON_RULES[rule].lower()
        self.w_caption.value = (
            f"Image {index} and the {how} of {html.escape(str(unit))} of <b>{html.escape(layer)}</b> "
            "(grey: 0; colour: the pixels' signed effect on the unit)"
        )

    def refresh(self, w: Any) -> None:
        """Draw for the FeatureWidget ``w`` when its first fold is open. While the channel's
        maximization runs it waits: computing now would take the model from that job and restart
        it from step 0 (found in review); the job's end draws it."""
        if w.w_tabs.selected_index != 0:
            return
        job = w.session.job("maximize")
        if job is not None and job.state in ("new", "running") and w._current(job, "maximize"):
            self.w_caption.value = "The unit's image follows when the maximizing image is done ..."
            return
        self.draw(w.session, w.layer, w.channel, w.image_index, w.neuron_rule, w.neuron_unit)
