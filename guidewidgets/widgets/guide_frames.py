"""What ``GuideWidget`` draws, as pure functions of the session's state: the hint layer (strokes,
their outline, the asked pixel's ring), the IoU table, the readout numbers, the legend and the
text-guide help. No controls here: the widget wires these to its views."""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

from .. import render
from ..guide.interactive import IOU_EPS, GuideSession, IoUReadout
from . import theme

HINT_ALPHA = 170  # hints are drawn at 2/3 opacity over the segmentation


def disk(radius: int) -> np.ndarray:
    """(N, 2) offsets of a round-ish disk of ``radius`` pixels."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.stack(np.nonzero(yy**2 + xx**2 <= r * r + r), -1) - r


def line(p: tuple[int, int], q: tuple[int, int]) -> list[tuple[int, int]]:
    """The pixels from ``p`` (excluded) to ``q``: a fast drag paints a continuous line."""
    n = max(abs(q[0] - p[0]), abs(q[1] - p[1]))
    if n == 0:
        return []
    t = np.linspace(0.0, 1.0, n + 1)[1:]
    ys = np.rint(p[0] + t * (q[0] - p[0])).astype(int)
    xs = np.rint(p[1] + t * (q[1] - p[1])).astype(int)
    return list(zip(ys.tolist(), xs.tolist()))


def stroke_pixels(points: Sequence[tuple[int, int]], radius: int, height: int, width: int) -> np.ndarray:
    """(N, 2) pixels a provisional stroke covers, inside the image."""
    if not points:
        return np.zeros((0, 2), int)
    pts = (np.asarray(points)[:, None, :] + disk(radius)[None]).reshape(-1, 2)
    ok = (pts[:, 0] >= 0) & (pts[:, 0] < height) & (pts[:, 1] >= 0) & (pts[:, 1] < width)
    return np.unique(pts[ok], axis=0)


def _paint(out: np.ndarray, pixels: np.ndarray, colour: np.ndarray, negative: bool) -> None:
    # Translucent, so the segmentation under a hint stays visible (and a browser test can see it
    # change there); the white outline keeps strokes readable.
    if pixels.size == 0:
        return
    ys, xs = pixels[:, 0], pixels[:, 1]
    out[ys, xs, :3] = colour[:3]
    out[ys, xs, 3] = HINT_ALPHA
    if negative:  # hatched: black on every third diagonal says "not this class"
        on = (ys + xs) % 3 == 0
        out[ys[on], xs[on], :3] = 0


def hints_rgba(
    session: GuideSession,
    palette: np.ndarray,
    stroke: tuple[np.ndarray, int, bool] | None = None,
    asking: tuple[int, int] | None = None,
) -> np.ndarray:
    """The hint layer (H, W, 4): every hint, the provisional ``stroke`` (pixels, class, negative),
    a white outline around them, and a ring around the ``asking`` pixel."""
    h, w = session.height, session.width
    out = np.zeros((h, w, 4), np.uint8)
    for hint in session.guide.hints:
        _paint(out, render.to_numpy(hint.pixels).reshape(-1, 2), palette[hint.cls], hint.negative)
    if stroke is not None:
        _paint(out, stroke[0], palette[stroke[1]], stroke[2])
    painted = out[..., 3] > 0
    grown = painted.copy()
    grown[1:] |= painted[:-1]
    grown[:-1] |= painted[1:]
    grown[:, 1:] |= painted[:, :-1]
    grown[:, :-1] |= painted[:, 1:]
    out[grown & ~painted] = (255, 255, 255, 255)
    if asking is not None:  # a ring around the asked pixel, white outside black
        y, x = asking
        for r, col in ((4, (255, 255, 255, 255)), (3, (0, 0, 0, 255))):
            yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
            ring = np.stack(np.nonzero((np.abs(yy) == r) | (np.abs(xx) == r)), -1) - r + (y, x)
            ok = (ring[:, 0] >= 0) & (ring[:, 0] < h) & (ring[:, 1] >= 0) & (ring[:, 1] < w)
            out[ring[ok, 0], ring[ok, 1]] = col
    return out


def iou_table_html(readout: IoUReadout, classes: Sequence[str]) -> str:
    """Per-class IoU, before vs now; green where better, red where worse; a flag on a regression."""

    def cell(now: float, d: float, bold: bool = False) -> str:
        if np.isnan(now):
            return "<td>–</td>"
        color = theme.GOOD if d > IOU_EPS else theme.BAD if d < -IOU_EPS else theme.TEXT
        arrow = " &#9650;" if d > IOU_EPS else " &#9660;" if d < -IOU_EPS else ""
        text = f"<b>{now:.3f}</b>" if bold else f"{now:.2f}"
        return f"<td style='color:{color}'>{text}{arrow}</td>"

    r = readout
    rows = "".join(
        f"<tr><td>{html.escape(classes[k])}</td><td>{'–' if np.isnan(r.before[k]) else f'{r.before[k]:.2f}'}</td>"
        f"{cell(r.now[k], r.change(k))}</tr>"
        for k in range(len(classes))
        if not np.isnan(r.now[k]) or not np.isnan(r.before[k])
    )
    table = (
        f"<table style='font-size:90%'><tr><th>class</th><th>IoU before</th><th>IoU now</th></tr>{rows}"
        f"<tr><td><b>mean</b></td><td>{r.mean_before:.3f}</td>{cell(r.mean_now, r.change(), bold=True)}</tr></table>"
    )
    if r.regression:
        table += (
            f"<div class='gw-bad' style='font-weight:bold'>&#9888; worse: mean IoU {r.last_mean:.3f} &rarr; "
            f"{r.mean_now:.3f} after the last action. Undo (Ctrl+Z) or add a hint there.</div>"
        )
    return table


def numbers_html(session: GuideSession) -> str:
    """The readout column: steps, loss, hints, block norms, pixels changed, words and the IoU table."""
    g = session.guide
    norms = " &nbsp; ".join(f"|{k}| = {float(v.norm()):.3g}" for k, v in g.params.items())
    loss = f"{g.losses[-1]:.4g}" if g.losses else "–"
    rows = [
        f"<b>steps</b> {session.step_count} &nbsp; <b>loss</b> {loss} &nbsp; <b>hints</b> {len(g.hints)}",
        norms,
        f"<b>pixels changed</b> at the last step: {session.changed}; vs. original: "
        f"{int((session.prediction != session.original).sum())}",
    ]
    if g.texts:
        rows.append("<b>words</b>: " + "; ".join(html.escape(t) for t in g.texts))
    if session.readout is not None:
        rows.append(iou_table_html(session.readout, session.classes))
    return "<div style='overflow-wrap:anywhere'>" + "<br>".join(rows) + "</div>"


def legend_html(classes: Sequence[str], palette: np.ndarray) -> str:
    items = []
    for k, name in enumerate(classes):
        r, g, b = (int(c) for c in palette[k, :3])
        items.append(
            f'<span style="display:inline-block;margin-right:10px"><span style="display:inline-block;'
            f'width:12px;height:12px;background:rgb({r},{g},{b});border:1px solid #888;vertical-align:middle">'
            f"</span> {k}: {html.escape(name)}</span>"
        )
    return "<div>" + "".join(items) + "</div>"


def text_help_html(session: GuideSession) -> str:
    """What the text guide understands (templates, classes, places, words), or why words are off."""
    if session.text_guide is None:
        return f"<span class='gw-muted'>Hints in words are off: {html.escape(session.text_note)}.</span>"
    tok = session.text_guide.tokenizer
    return (
        "<span><b>Words</b> (templates: "
        + "; ".join(f"&ldquo;{html.escape(e)}&rdquo;" for e in tok.examples())
        + f"). Classes: {html.escape(', '.join(tok.named))}. Places: {html.escape(', '.join(tok.cells))}. "
        + f"Vocabulary: {html.escape(' '.join(tok.words[1:]))}.</span>"
    )


def gamma_caption(gamma: np.ndarray) -> str:
    top: list[int] = np.argsort(-np.abs(gamma))[:3].tolist() if gamma.size else []
    if not gamma.size or np.abs(gamma).max() == 0:
        return "<b>gamma</b> per channel: all zero"
    return f"<b>gamma</b> per channel ({gamma.size} channels; red up, blue down); largest: " + ", ".join(
        f"#{int(c)} {gamma[c]:+.2f}" for c in top
    )
