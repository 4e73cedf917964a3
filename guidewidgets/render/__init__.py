"""Turn images, maps and label masks into RGBA ``uint8`` arrays (and PNG bytes).

This is the rendering boundary of the package: inputs may be torch tensors on any device or numpy
arrays; outputs are always numpy ``(H, W, 4) uint8`` arrays, ready for a canvas, a PNG or
matplotlib's ``imshow``. Colormaps come from ``matplotlib.colormaps`` (no pyplot, no global state).

Conventions:

- an *image* is ``(3, H, W)`` / ``(1, 3, H, W)`` float in [0, 1] (the model convention), or
  ``(H, W, 3|4)`` / ``(H, W)`` numpy, float in [0, 1] or ``uint8``;
- a *map* is ``(H, W)`` (a batch of one ``(1, H, W)`` is accepted) of any real values;
- *labels* are ``(H, W)`` integers (class index per pixel).
"""

from __future__ import annotations

from .arrays import ArrayLike as ArrayLike
from .arrays import grid, resize, to_numpy, to_png, to_rgba, upscale
from .colors import (
    COLORMAPS,
    DIVERGING,
    FADE,
    check_cmap,
    colorbar,
    colorize,
    colormap_names,
    gradient_image,
    heatmap_rgba,
    map_rgba,
    normalize,
    overlay,
    split_cmap,
)
from .labels import HIGH_CONTRAST, outline_rgba, palette, segmentation_rgba
from .text import text_rgba, titled

__all__ = [
    "to_numpy",
    "to_rgba",
    "normalize",
    "colorize",
    "overlay",
    "palette",
    "segmentation_rgba",
    "gradient_image",
    "grid",
    "upscale",
    "resize",
    "to_png",
    "colormap_names",
    "split_cmap",
    "heatmap_rgba",
    "colorbar",
    "text_rgba",
    "titled",
    "outline_rgba",
    "HIGH_CONTRAST",
    "map_rgba",
    "check_cmap",
    "COLORMAPS",
    "DIVERGING",
    "FADE",
]
