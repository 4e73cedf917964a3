"""A wrapping grid of captioned tiles (the compare view): each tile carries its own caption, so
captions match their pictures for any count and any window width."""

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
            boxes.append(W.VBox([img, text], layout=W.Layout(margin="0 8px 8px 0")))
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
