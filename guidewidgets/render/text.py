"""Text drawn into RGBA strips (Pillow's default font) and titled pictures for exports."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .arrays import ArrayLike, resize, to_rgba


@functools.lru_cache(maxsize=8)
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: bitmap font of one size
        return ImageFont.load_default()


def text_rgba(
    text: str,
    width: int,
    *,
    size: int = 14,
    color: tuple[int, int, int, int] = (20, 20, 20, 255),
    background: tuple[int, int, int, int] = (255, 255, 255, 255),
    align: str = "left",
) -> np.ndarray:
    """Lines of text drawn into an RGBA strip ``width`` px wide (words wrap to fit)."""
    from PIL import Image, ImageDraw

    font = _font(int(size))
    lines: list[str] = []
    for para in str(text).split("\n"):
        line = ""
        for word in para.split(" "):
            trial = f"{line} {word}".strip()
            if line and font.getlength(trial) > width - 4:
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    step = int(size * 1.3)
    im = Image.new("RGBA", (int(width), step * len(lines) + 4), background)
    draw = ImageDraw.Draw(im)
    for i, line in enumerate(lines):
        x = 2 if align == "left" else max(2, int((width - font.getlength(line)) / 2))
        draw.text((x, 2 + i * step), line, fill=color, font=font)
    return np.asarray(im).copy()


def titled(
    picture: ArrayLike,
    heading: str = "",
    *,
    bar: np.ndarray | None = None,
    bar_labels: tuple[str, str] = ("", ""),
    caption: str = "",
    size: int = 14,
) -> np.ndarray:
    """A picture with a heading above, an optional colour bar (with top/bottom labels) at its
    right and a caption below, on white: what an export shows."""
    pic = to_rgba(picture)
    h = pic.shape[0]
    parts = [pic]
    if bar is not None:
        b = resize(to_rgba(bar), (h, bar.shape[1]), nearest=True)
        labels = max(60, int(size * 0.6 * max(len(bar_labels[0]), len(bar_labels[1]), 1)))
        col = np.full((h, 8 + b.shape[1] + 4 + labels, 4), 255, np.uint8)
        col[:, 8 : 8 + b.shape[1]] = b
        hi = text_rgba(bar_labels[1], labels, size=size - 2)
        lo = text_rgba(bar_labels[0], labels, size=size - 2)
        x0 = 12 + b.shape[1]
        col[: min(h, hi.shape[0]), x0:] = hi[: min(h, hi.shape[0])]
        col[max(0, h - lo.shape[0]) :, x0:] = lo[: min(h, lo.shape[0])]
        parts.append(col)
    body = np.concatenate(parts, axis=1) if len(parts) > 1 else pic
    rows = []
    if heading:
        rows.append(text_rgba(heading, body.shape[1], size=size))
    rows.append(body)
    if caption:
        rows.append(text_rgba(caption, body.shape[1], size=size - 2))
    return np.concatenate(rows, axis=0)
