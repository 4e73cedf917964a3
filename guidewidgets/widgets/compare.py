"""Two display pieces of the explain view: a wrapping grid of captioned tiles (the compare view;
each tile carries its own caption, so captions match their pictures for any count and width) and
a colour bar with its range and meaning beside the map."""

from __future__ import annotations

import html
from collections.abc import Sequence

import ipywidgets as W
import numpy as np

from .. import render


class TileGrid(W.Box):
    """Tiles (RGBA at image resolution) shown ``zoom`` times larger, each with a caption under it."""

    def __init__(self) -> None:
        super().__init__(layout=W.Layout(flex_flow="row wrap", display="none"))
        self.captions: list[str] = []
        self.frame: np.ndarray | None = None  # the grid as one RGBA image (export)

    def show(self, tiles: Sequence[np.ndarray], captions: Sequence[str], zoom: int = 1) -> None:
        """Replace the tiles; ``frame`` becomes the same grid with the captions drawn in."""
        boxes = []
        for tile, caption in zip(tiles, captions):
            h, w = tile.shape[0] * zoom, tile.shape[1] * zoom
            img = W.Image(
                value=render.to_png(render.upscale(tile, zoom)), layout=W.Layout(width=f"{w}px", height=f"{h}px")
            )
            text = W.HTML(f"<div style='width:{w}px;text-align:center'>{html.escape(caption)}</div>")
            box = W.VBox([img, text], layout=W.Layout(margin="0 8px 8px 0"))
            box.add_class("gw-tile")  # CSS hooks for the browser tests
            text.add_class("gw-caption")
            boxes.append(box)
        old: list[W.Widget] = list(getattr(self, "children", ()))
        self.children = tuple(boxes)
        for box in old:
            for child in box.children:
                child.close()
            box.close()
        self.captions = list(captions)
        titled = [render.titled(render.upscale(t, zoom), caption=c) for t, c in zip(tiles, captions)]
        self.frame = render.grid(titled, cols=min(4, len(titled)), pad=6) if titled else None

    def set_visible(self, on: bool) -> None:
        self.layout.display = None if on else "none"


class ColorBar(W.VBox):
    """A vertical colour bar ``height`` px tall: high label above, low label and meaning below."""

    def __init__(self, height: int) -> None:
        self.bar = W.Image(format="png", layout=W.Layout(width="16px", height=f"{height}px"))
        self.hi, self.lo = W.HTML(), W.HTML()
        super().__init__(
            [self.hi, self.bar, self.lo], layout=W.Layout(margin="0 0 0 6px", width="auto", max_width="10em")
        )
        self.add_class("gw-colorbar")  # theme.py: the bar stretches to the picture's drawn height

    def show(self, bar: tuple[np.ndarray, tuple[str, str], str] | None) -> None:
        """Show ``(bar RGBA, (low, high) labels, meaning)``, or hide the bar for None."""
        self.layout.visibility = "visible" if bar is not None else "hidden"
        if bar is not None:
            rgba, (lo, hi), meaning = bar
            self.bar.value = render.to_png(rgba)
            self.hi.value = f"<b>{html.escape(hi)}</b>"
            self.lo.value = f"<b>{html.escape(lo)}</b><br><span class='gw-muted'>{html.escape(meaning)}</span>"
