"""Charts with axes, ticks, units and legends for the widgets' live curves (bqplot).

Why bqplot: it is an ipywidgets-native chart library (d3 in the browser, the same comm as every
other control, prebuilt for JupyterLab 4, Notebook 7 and Voila, no Node build), so a new point is
a data-only update of two arrays: no picture is rendered in the kernel. Matplotlib figures cost
~150 ms each here and ipympl redraws the whole figure; plotly's FigureWidget needs anywidget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import bqplot as bq
import ipywidgets as W
import numpy as np

__all__ = ["LineChart", "BarChart", "COLOURS", "integer_ticks", "nice_ticks"]

#: Tableau colours: blue, orange, green, red, purple (distinct in print and for most colour vision).
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]
_MARGIN = {"top": 28, "bottom": 44, "left": 58, "right": 12}


def _figure(
    title: str, marks: list, x_axis: bq.Axis, y_axis: bq.Axis, height: str, legend: str = "top-right"
) -> bq.Figure:
    fig = bq.Figure(
        marks=marks,
        axes=[x_axis, y_axis],
        title=title,
        fig_margin=dict(_MARGIN),
        legend_location=legend,
        animation_duration=0,  # a live curve must not lag behind its numbers
        layout=W.Layout(width="100%", min_width="220px", height=height),
    )
    fig.add_class("gw-chart")
    return fig


class LineChart:
    """Lines of named series against a shared x (steps), with labelled axes and a legend.

    ``update(x, {"L_cl": [...], ...})`` sends only the arrays. ``log=True`` draws y on a log
    scale (non-positive values are dropped from the picture, never from the data).
    """

    def __init__(
        self,
        names: Sequence[str],
        *,
        title: str,
        xlabel: str,
        ylabel: str,
        log: bool = False,
        height: str = "200px",
        colours: Sequence[str] | None = None,
        ymin: float | None = None,
        ymax: float | None = None,
        labels: Sequence[str] | None = None,
        integer_x: bool = True,
    ) -> None:
        self.names = list(names)
        self.integer_x = integer_x
        self.log = log
        self.x_scale = bq.LinearScale()
        # A log scale with no data and no range fails to draw in the browser (bqplot 0.13): give it one.
        self.ymin, self.ymax = ymin, ymax
        # no padding: a range from 0 starts at the axis (padding drew the ticks -0.8 and 101 for 0..100 %)
        self.y_scale = (
            bq.LogScale(min=0.01, max=1.0) if log else bq.LinearScale(min=ymin, max=ymax, allow_padding=False)
        )
        self.lines = bq.Lines(
            x=np.zeros(0),
            y=np.zeros((len(self.names), 0)) if len(self.names) > 1 else np.zeros(0),
            scales={"x": self.x_scale, "y": self.y_scale},
            labels=list(labels or self.names),  # short legend labels keep the legend inside a narrow chart
            colors=list(colours or COLOURS[: len(self.names)]),
            display_legend=len(self.names) > 1,
            stroke_width=2,
        )
        self.x_axis = bq.Axis(scale=self.x_scale, label=xlabel, num_ticks=5, tick_format="d" if integer_x else None)
        self.y_axis = bq.Axis(scale=self.y_scale, label=ylabel, side="left", num_ticks=4, tick_format=".3~g")
        self.figure = _figure(title, [self.lines], self.x_axis, self.y_axis, height)

    def update(self, x: Sequence[float], series: Mapping[str, Sequence[float]]) -> None:
        """Replace the data: ``x`` and one sequence per name (a missing name draws nothing)."""
        xs = np.asarray(list(x), dtype=float)
        ys = np.full((len(self.names), xs.size), np.nan)
        for i, name in enumerate(self.names):
            v = np.asarray(list(series.get(name, ())), dtype=float)[: xs.size]
            ys[i, : v.size] = v
        if self.log:
            ys[~(ys > 0)] = np.nan
            shown = ys[np.isfinite(ys)]
            if shown.size:  # a decade-aligned range around the data
                lo, hi = np.floor(np.log10(shown.min())), np.ceil(np.log10(shown.max()))
                self.y_scale.min, self.y_scale.max = float(10**lo), float(10 ** max(hi, lo + 1))
        with self.lines.hold_sync():
            self.lines.x, self.lines.y = xs, (ys[0] if len(self.names) == 1 else ys)  # bqplot squeezes one row
        if self.integer_x and xs.size:  # steps: ticks on whole numbers only (d3 would put 2.5 between 2 and 3)
            _set_ticks(self.x_axis, integer_ticks(float(xs.min()), float(xs.max())))
        shown = ys[np.isfinite(ys)]
        if not self.log and shown.size:  # bqplot's num_ticks spaces ticks evenly (0.676, 0.449, ...): round ones
            lo = self.ymin if self.ymin is not None else float(shown.min())
            hi = self.ymax if self.ymax is not None else float(shown.max())
            _set_ticks(self.y_axis, nice_ticks(lo, hi))


def _set_ticks(axis: bq.Axis, ticks: np.ndarray) -> None:
    if axis.tick_values is None or not np.array_equal(ticks, axis.tick_values):  # one message per change
        axis.tick_values = ticks


def nice_ticks(lo: float, hi: float, most: int = 6, *, integer: bool = False) -> np.ndarray:
    """At most ``most`` ticks from ``lo`` to ``hi``, a 1, 2 or 5 x 10^k apart (whole numbers with ``integer``).

    Args:
        lo: the smallest value shown. hi: the largest.
        most: the most ticks wanted.
        integer: whole-number ticks only (steps on an x axis), at least 1 apart.

    Returns:
        The ticks, ascending (int64 with ``integer``); one tick where the range holds no more.
    """
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        v = lo if np.isfinite(lo) else 0.0
        return np.array([round(v)] if integer else [v], dtype=np.int64 if integer else np.float64)
    step = 10.0 ** np.floor(np.log10((hi - lo) / most))
    for m in (1, 2, 5, 10, 20):
        s = max(step * m, 1.0) if integer else step * m
        first, last = np.ceil(lo / s - 1e-9) * s, np.floor(hi / s + 1e-9) * s
        if (last - first) / s + 1 <= most:
            break
    ticks = np.arange(max(0, round((last - first) / s)) + 1) * s + first
    if integer:
        ticks = ticks[(ticks >= np.ceil(lo)) & (ticks <= hi)]
        return ticks.round().astype(np.int64) if ticks.size else np.array([round(lo)], dtype=np.int64)
    return np.round(ticks, 12)


def integer_ticks(lo: float, hi: float, most: int = 6) -> np.ndarray:
    """Whole-number ticks for steps: :func:`nice_ticks` with ``integer=True``."""
    return nice_ticks(lo, hi, most, integer=True)


class BarChart:
    """Signed bars per index (e.g. gamma per channel): positive up in red, negative down in blue."""

    def __init__(self, *, title: str, xlabel: str, ylabel: str, height: str = "180px") -> None:
        self.x_scale = bq.LinearScale()
        self.y_scale = bq.LinearScale()
        self.bars = bq.Bars(
            x=np.zeros(0),
            y=np.zeros((2, 0)),
            scales={"x": self.x_scale, "y": self.y_scale},
            type="stacked",
            colors=[COLOURS[3], COLOURS[0]],
            labels=["raises", "lowers"],
            display_legend=True,
            padding=0.15,
        )
        x_axis = bq.Axis(scale=self.x_scale, label=xlabel, num_ticks=6)
        y_axis = bq.Axis(scale=self.y_scale, label=ylabel, side="left", num_ticks=4, tick_format=".2f")
        self.figure = _figure(title, [self.bars], x_axis, y_axis, height, legend="top-left")

    def update(self, values: Sequence[float]) -> None:
        """Replace the bars with ``values`` (index i -> bar i)."""
        v = np.asarray(list(values), dtype=float)
        with self.bars.hold_sync():
            self.bars.x = np.arange(v.size)
            self.bars.y = np.stack([np.clip(v, 0, None), np.clip(v, None, 0)]) if v.size else np.zeros((2, 0))
