"""Small readout charts (loss curve, gamma bars) drawn in numpy as RGBA, sent as PNG.

Why not matplotlib: an Agg figure with text costs ~150 ms here, twice per guide step; these
sparklines cost about a millisecond, and the numbers go into an HTML caption next to them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import render

BG = (255, 255, 255, 255)
AXIS = (150, 150, 150, 255)
LINE = (31, 119, 180, 255)
POS = (214, 39, 40, 255)
NEG = (31, 119, 180, 255)


def _canvas(width: int, height: int) -> np.ndarray:
    out = np.empty((height, width, 4), np.uint8)
    out[...] = BG
    return out


def line_rgba(
    values: Sequence[float], *, width: int = 240, height: int = 80, logy: bool = False, pad: int = 4
) -> np.ndarray:
    """A sparkline of ``values`` against their index (y scaled to the data's range)."""
    out = _canvas(width, height)
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    out[height - pad, pad : width - pad] = AXIS
    out[pad : height - pad + 1, pad] = AXIS
    if v.size == 0:
        return out
    if logy and np.all(v > 0):
        v = np.log10(v)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:  # a flat series sits mid-height, not on the axis
        lo, hi = lo - 1.0, hi + 1.0
    span = hi - lo
    n = v.size
    xs = pad + 1 + (np.arange(n) * (width - 2 * pad - 2) / max(1, n - 1))
    ys = (height - pad - 1) - (v - lo) / span * (height - 2 * pad - 2)
    if n == 1:
        xs, ys = np.array([xs[0], width - pad - 1.0]), np.array([ys[0], ys[0]])
    # dense samples along each segment: a 2-px line without a rasteriser
    longest = float(np.max(np.maximum(np.abs(np.diff(xs)), np.abs(np.diff(ys)))))
    t = np.linspace(0.0, 1.0, int(longest) + 2)[None, :]
    px = (xs[:-1, None] + t * np.diff(xs)[:, None]).ravel()
    py = (ys[:-1, None] + t * np.diff(ys)[:, None]).ravel()
    for dy in (0, 1):
        yy = np.clip(np.rint(py).astype(int) + dy, 0, height - 1)
        xx = np.clip(np.rint(px).astype(int), 0, width - 1)
        out[yy, xx] = LINE
    return out


def bars_rgba(values: Sequence[float], *, width: int = 240, height: int = 80, pad: int = 4) -> np.ndarray:
    """Bars of signed ``values`` around a zero line (positive red, negative blue)."""
    out = _canvas(width, height)
    v = np.nan_to_num(np.asarray(list(values), dtype=np.float64))
    mid = height // 2
    out[mid, pad : width - pad] = AXIS
    if v.size == 0:
        return out
    m = float(np.abs(v).max()) or 1.0
    edges = np.linspace(pad, width - pad, v.size + 1).astype(int)
    for i, val in enumerate(v):
        h = int(round(abs(val) / m * (mid - pad)))
        x0, x1 = edges[i], max(edges[i] + 1, edges[i + 1] - (1 if v.size < 64 else 0))
        if val >= 0:
            out[mid - h : mid, x0:x1] = POS
        else:
            out[mid + 1 : mid + 1 + h, x0:x1] = NEG
    return out


def line_png(values: Sequence[float], **kw) -> bytes:
    return render.to_png(line_rgba(values, **kw))


def bars_png(values: Sequence[float], **kw) -> bytes:
    return render.to_png(bars_rgba(values, **kw))
