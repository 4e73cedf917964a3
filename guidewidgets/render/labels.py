"""Class labels to colours: palettes, segmentation layers and class outlines."""

from __future__ import annotations

import numpy as np

from .arrays import ArrayLike, _squeeze_batch, to_numpy

#: Class colours that stay apart over any photo: saturated, with black/white outlines drawn around.
HIGH_CONTRAST = np.asarray(
    [
        (0, 0, 0, 255),
        (255, 225, 25, 255),
        (0, 130, 200, 255),
        (230, 25, 75, 255),
        (60, 180, 75, 255),
        (245, 130, 48, 255),
        (145, 30, 180, 255),
        (70, 240, 240, 255),
        (240, 50, 230, 255),
        (255, 255, 255, 255),
    ],
    dtype=np.uint8,
)


def palette(n: int) -> np.ndarray:
    """``n`` distinct opaque colours as ``(n, 4) uint8``; index 0 (background) is dark grey.

    The first 10 foreground colours are matplotlib's ``tab10``; more come from ``tab20`` and then
    evenly spaced hues, so neighbouring class indices stay distinguishable.
    """
    if int(n) < 1:
        raise ValueError(f"palette needs at least one colour, got n={n}")
    import matplotlib

    cols = [(64, 64, 64, 255)]
    tab = list(getattr(matplotlib.colormaps["tab10"], "colors", []))
    tab += list(getattr(matplotlib.colormaps["tab20"], "colors", [])[1::2])
    for i in range(n - 1):
        if i < len(tab):
            r, g, b = tab[i]
        else:
            import colorsys

            r, g, b = colorsys.hsv_to_rgb(((i - len(tab)) * 0.618034) % 1.0, 0.75, 0.95)
        cols.append((int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5), 255))
    return np.asarray(cols[:n], dtype=np.uint8)


def segmentation_rgba(
    labels: ArrayLike,
    palette: ArrayLike | None = None,
    alpha: float = 0.6,
    *,
    background: int | None = 0,
    num_classes: int | None = None,
) -> np.ndarray:
    """Class labels ``(H, W)`` as an RGBA layer: each class in its palette colour at ``alpha``.

    Pixels of class ``background`` are fully transparent (``background=None`` paints them too).
    ``palette`` defaults to :func:`palette` of ``num_classes`` (or ``labels.max() + 1``).
    """
    lab = _squeeze_batch(to_numpy(labels), 2, "labels")
    if lab.ndim != 2:
        raise ValueError(f"labels have shape {tuple(lab.shape)}; expected (H, W) class indices")
    if not np.issubdtype(lab.dtype, np.integer):
        if np.issubdtype(lab.dtype, np.floating) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise TypeError(f"labels must be integer class indices, got dtype {lab.dtype} (use .argmax(0) on logits)")
    if lab.size and lab.min() < 0:
        raise ValueError(f"labels must be >= 0, found {int(lab.min())}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    n = int(lab.max()) + 1 if lab.size else 1
    if palette is None:
        pal = globals()["palette"](max(n, num_classes or 0, 1))
    else:
        pal = to_numpy(palette)
        if pal.ndim != 2 or pal.shape[1] not in (3, 4):
            raise ValueError(f"palette must be (K, 3) or (K, 4) colours, got shape {tuple(pal.shape)}")
        if np.issubdtype(pal.dtype, np.floating):
            pal = (np.clip(pal, 0, 1) * 255 + 0.5).astype(np.uint8)
        pal = pal.astype(np.uint8)
    if n > len(pal):
        raise ValueError(f"labels go up to {n - 1} but the palette has only {len(pal)} colours")
    out = np.empty(lab.shape + (4,), dtype=np.uint8)
    out[..., :3] = pal[lab, :3]
    out[..., 3] = int(round(float(alpha) * 255))
    if background is not None:
        out[lab == background, 3] = 0
    return out


def outline_rgba(labels: ArrayLike, palette: ArrayLike, *, background: int | None = 0, width: int = 1) -> np.ndarray:
    """Class regions drawn as contours only (their palette colour, black on the outside), so the
    scene under them stays visible and each outline's colour is the legend's."""
    lab = _squeeze_batch(to_numpy(labels), 2, "labels").astype(np.int64)
    pal = to_numpy(palette)
    edge = np.zeros(lab.shape, bool)
    edge[1:] |= lab[1:] != lab[:-1]
    edge[:-1] |= lab[1:] != lab[:-1]
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[:, :-1] |= lab[:, 1:] != lab[:, :-1]
    for _ in range(max(0, int(width) - 1)):
        grown = edge.copy()
        grown[1:] |= edge[:-1]
        grown[:-1] |= edge[1:]
        grown[:, 1:] |= edge[:, :-1]
        grown[:, :-1] |= edge[:, 1:]
        edge = grown
    out = np.zeros(lab.shape + (4,), np.uint8)
    inner = edge if background is None else edge & (lab != background)
    out[inner, :3] = pal[lab[inner], :3]
    out[inner, 3] = 255
    # a dark rim just outside each coloured contour keeps light colours readable on light scenes
    rim = np.zeros_like(inner)
    rim[1:] |= inner[:-1]
    rim[:-1] |= inner[1:]
    rim[:, 1:] |= inner[:, :-1]
    rim[:, :-1] |= inner[:, 1:]
    rim &= ~inner
    out[rim] = (0, 0, 0, 200)
    return out
