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

import difflib
import functools
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

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
]

ArrayLike = Any  # torch.Tensor | np.ndarray | nested sequences

# Colormaps offered by the widgets (matplotlib has ~170; these read well as heatmaps).
COLORMAPS = ["jet", "turbo", "viridis", "inferno", "magma", "plasma", "hot", "coolwarm", "seismic", "gray"]
#: Suffix of a colormap menu entry whose low values fade to transparent ("turbo (fade)").
FADE = " (fade)"
#: Signed maps use a diverging colormap centred on zero; the menu's own is used when it is one of these.
DIVERGING = ("RdBu_r", "coolwarm", "seismic", "bwr", "PiYG", "PuOr")
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


def to_numpy(x: ArrayLike) -> np.ndarray:
    """A numpy view/copy of ``x``; torch tensors are detached and moved to the CPU here, once."""
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):  # no numpy twin for bfloat16
            x = x.float()
        return x.cpu().numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise TypeError(f"expected a torch tensor or numpy array, got {type(x).__name__}") from err


def _squeeze_batch(a: np.ndarray, want_ndim: int, what: str) -> np.ndarray:
    while a.ndim > want_ndim and a.shape[0] == 1:
        a = a[0]
    if a.ndim > want_ndim:
        raise ValueError(
            f"{what} has shape {tuple(a.shape)}: render one item at a time "
            f"(index the batch, e.g. x[0]), or use render.grid for several"
        )
    return a


def to_rgba(image: ArrayLike) -> np.ndarray:
    """An image as ``(H, W, 4) uint8`` RGBA (opaque unless it already carries alpha).

    Accepts ``(3, H, W)`` or ``(1, 3, H, W)`` tensors/arrays (channels first, the model
    convention), ``(H, W, 3)``/``(H, W, 4)`` channels last, or ``(H, W)`` grayscale; floats are
    taken to be in [0, 1] (values outside are clipped), integers in [0, 255].
    """
    is_tensor = isinstance(image, torch.Tensor)
    a = to_numpy(image)
    if a.ndim == 4:
        a = _squeeze_batch(a, 3, "image")
    if a.ndim == 3 and a.shape[0] in (1, 3) and (is_tensor or a.shape[-1] not in (1, 3, 4)):
        a = np.moveaxis(a, 0, -1)  # channels first (torch convention) -> last
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.stack([a, a, a], axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ValueError(f"image has shape {tuple(a.shape)}; expected (3, H, W), (H, W, 3), (H, W, 4) or (H, W)")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
        a = (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.shape[-1] == 3:
        out = np.empty(a.shape[:2] + (4,), dtype=np.uint8)
        out[..., :3] = a
        out[..., 3] = 255
        return out
    return np.ascontiguousarray(a)


def normalize(map: ArrayLike, *, signed: bool = False, clip: float | None = None) -> np.ndarray:
    """A map rescaled to ``float32`` in [0, 1].

    Unsigned (default): min-max scaling; a constant map becomes all zeros (nothing stands out).
    ``signed=True``: zero maps to 0.5 and the largest magnitude to 0 or 1, so a diverging colormap
    shows the sign. ``clip``: a percentile (e.g. 99) above which values saturate, which keeps one
    hot pixel from washing out the rest (used for gradients).
    """
    a = _squeeze_batch(to_numpy(map), 2, "map").astype(np.float32, copy=False)
    if a.ndim != 2:
        raise ValueError(f"map has shape {tuple(a.shape)}; expected (H, W) (or (1, H, W))")
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if signed:
        m = np.percentile(np.abs(a), clip) if clip is not None else np.abs(a).max()
        if m <= 0:
            return np.full(a.shape, 0.5, dtype=np.float32)
        return np.clip(0.5 + 0.5 * a / m, 0.0, 1.0).astype(np.float32)
    lo = float(a.min())
    hi = float(np.percentile(a, clip)) if clip is not None else float(a.max())
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        return np.zeros(a.shape, dtype=np.float32)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def colormap_names(fade: bool = False) -> list[str]:
    """The colormap names the widgets offer (any name in ``matplotlib.colormaps`` works too);
    ``fade=True`` lists the fading variants ("turbo (fade)") first."""
    return ([c + FADE for c in COLORMAPS] if fade else []) + list(COLORMAPS)


def check_cmap(name: str) -> str:
    """ "" if ``name`` (fade suffix allowed) is a known colormap, else the error message."""
    try:
        _lut(split_cmap(name)[0])
    except ValueError as err:
        return str(err)
    return ""


def split_cmap(name: str) -> tuple[str, bool]:
    """``"turbo (fade)"`` -> ``("turbo", True)``; a plain name -> ``(name, False)``."""
    return (name[: -len(FADE)], True) if name.endswith(FADE) else (name, False)


@functools.lru_cache(maxsize=64)
def _lut(cmap: str) -> np.ndarray:
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        close = difflib.get_close_matches(cmap, list(matplotlib.colormaps), n=4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown colormap {cmap!r}.{hint} Try one of {COLORMAPS}.") from None
    return (cm(np.linspace(0.0, 1.0, 256)) * 255.0 + 0.5).astype(np.uint8)


def _lut_of(cmap: Any) -> np.ndarray:
    if isinstance(cmap, str):
        return _lut(cmap)
    if callable(cmap):  # a matplotlib Colormap object
        return (np.asarray(cmap(np.linspace(0.0, 1.0, 256))) * 255.0 + 0.5).astype(np.uint8)
    raise TypeError(f"cmap must be a colormap name or a matplotlib Colormap, got {type(cmap).__name__}")


def colorize(
    map: ArrayLike,
    cmap: Any = "jet",
    *,
    normalized: bool = False,
    signed: bool = False,
    clip: float | None = None,
) -> np.ndarray:
    """A map through a colormap as opaque ``(H, W, 4) uint8``.

    The map is min-max normalised first (see :func:`normalize`) unless ``normalized=True`` says it
    already lies in [0, 1].
    """
    a = (
        normalize(map, signed=signed, clip=clip)
        if not normalized
        else np.clip(_squeeze_batch(to_numpy(map), 2, "map").astype(np.float32), 0.0, 1.0)
    )
    idx = (a * 255.0 + 0.5).astype(np.uint8)
    return _lut_of(cmap)[idx]


def resize(a: np.ndarray, size: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """Resize an ``(H, W)`` float map or ``(H, W, C) uint8`` image to ``size = (H, W)``."""
    from PIL import Image

    h, w = size
    if a.shape[:2] == (h, w):
        return a
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    if a.ndim == 2:
        return np.asarray(Image.fromarray(a.astype(np.float32)).resize((w, h), resample))
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(a[..., c])).resize((w, h), resample))
        for c in range(a.shape[-1])
    ]
    return np.stack(chans, axis=-1)


def overlay(
    image: ArrayLike,
    map: ArrayLike,
    cmap: Any = "jet",
    alpha: float = 0.5,
    *,
    signed: bool = False,
    clip: float | None = None,
) -> np.ndarray:
    """The image with a map blended on top: ``(1 - alpha) * image + alpha * colormap(map)``.

    ``map`` may be an ``(H, W)`` map (normalised and colourised here) or an ``(H, W, 4)`` RGBA
    layer, whose own alpha is multiplied by ``alpha`` (how segmentation overlays are composited).
    A map at another resolution than the image is resized to it (bilinear). Output is opaque RGBA.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1] (0 = image only, 1 = map only), got {alpha}")
    base = to_rgba(image)
    h, w = base.shape[:2]
    m = to_numpy(map)
    if m.ndim == 3 and m.shape[-1] == 4 and m.dtype == np.uint8:
        layer = resize(m, (h, w), nearest=True)
        a = (layer[..., 3:4].astype(np.float32) / 255.0) * float(alpha)
    else:
        m = _squeeze_batch(m, 2, "map")
        if m.ndim != 2:
            raise ValueError(f"map has shape {tuple(m.shape)}; expected (H, W) or an (H, W, 4) RGBA layer")
        m = normalize(m, signed=signed, clip=clip)
        layer = colorize(resize(m, (h, w)), cmap, normalized=True)
        a = np.full((1, 1, 1), alpha, np.float32)
    out = base.copy()
    out[..., :3] = (base[..., :3] * (1.0 - a) + layer[..., :3] * a + 0.5).astype(np.uint8)
    out[..., 3] = 255
    return out


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


def gradient_image(raw: ArrayLike, *, clip: float | None = 99.5) -> np.ndarray:
    """A signed ``(3, H, W)`` gradient image (guided backprop, deconvnet, ...) as RGBA.

    Zero-centred and scaled by the ``clip`` percentile of its magnitude so that grey (0.5) means
    zero gradient, the lectures' rendering of these pictures.
    """
    a = to_numpy(raw)
    if a.ndim == 4:
        a = _squeeze_batch(a, 3, "gradient image")
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"gradient image has shape {tuple(a.shape)}; expected (3, H, W) (explain(..., raw=True))")
    a = np.nan_to_num(a.astype(np.float32))
    a = a - a.mean()
    m = float(np.percentile(np.abs(a), clip)) if clip is not None else float(np.abs(a).max())
    if m <= 0:
        return to_rgba(np.full(a.shape, 0.5, np.float32))
    return to_rgba(np.clip(0.5 + 0.5 * a / m, 0.0, 1.0))


def grid(
    tiles: Sequence[ArrayLike],
    cols: int | None = None,
    pad: int = 2,
    fill: tuple[int, int, int, int] = (255, 255, 255, 255),
) -> np.ndarray:
    """Tiles (each anything :func:`to_rgba` takes) side by side in rows of ``cols``, ``pad`` px apart.

    Tiles of different sizes are placed top-left in equal cells of the largest size.
    """
    rgba = [to_rgba(t) for t in tiles]
    if not rgba:
        raise ValueError("grid needs at least one tile")
    n = len(rgba)
    cols = n if cols is None else max(1, min(int(cols), n))
    rows = -(-n // cols)
    th = max(t.shape[0] for t in rgba)
    tw = max(t.shape[1] for t in rgba)
    pad = max(0, int(pad))
    out = np.empty((rows * th + (rows - 1) * pad, cols * tw + (cols - 1) * pad, 4), dtype=np.uint8)
    out[...] = np.asarray(fill, dtype=np.uint8)
    for i, t in enumerate(rgba):
        r, c = divmod(i, cols)
        y, x = r * (th + pad), c * (tw + pad)
        out[y : y + t.shape[0], x : x + t.shape[1]] = t
    return out


def upscale(rgba: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (each pixel becomes a scale x scale block)."""
    s = int(scale)
    if s < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    if s == 1:
        return rgba
    return np.repeat(np.repeat(rgba, s, axis=0), s, axis=1)


def to_png(rgba: ArrayLike) -> bytes:
    """PNG bytes of an image (lossless; RGBA kept)."""
    from PIL import Image

    a = to_rgba(rgba)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def heatmap_rgba(
    map: ArrayLike,
    cmap: str = "turbo",
    *,
    signed: bool = False,
    opacity: float = 0.6,
    vrange: tuple[float, float] | None = None,
) -> np.ndarray:
    """A map as an RGBA overlay layer: colour from ``cmap``, alpha from ``opacity``.

    ``cmap`` may carry the fade suffix (``"turbo (fade)"``): alpha then grows with the value
    (unsigned) or with the magnitude (signed), so low evidence leaves the photo visible. Signed
    maps are centred on zero with a diverging colormap (the menu's if it is diverging, else
    ``RdBu_r``). ``vrange``: a shared (lo, hi) instead of the map's own range (signed: the largest
    magnitude ``hi``).
    """
    name, fade = split_cmap(cmap)
    a = _squeeze_batch(to_numpy(map), 2, "map").astype(np.float32, copy=False)
    if a.ndim != 2:
        raise ValueError(f"map has shape {tuple(a.shape)}; expected (H, W)")
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if signed:
        name = name if name in DIVERGING else DIVERGING[0]
        m = float(np.abs(a).max()) if vrange is None else max(abs(vrange[0]), abs(vrange[1]))
        v = np.clip(0.5 + 0.5 * a / m, 0.0, 1.0) if m > 0 else np.full(a.shape, 0.5, np.float32)
        strength = np.abs(2.0 * v - 1.0)
    else:
        if vrange is None:
            v = normalize(a)
        else:
            lo, hi = vrange
            v = np.clip((a - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.zeros(a.shape, np.float32)
        strength = v
    out = colorize(v, name, normalized=True).copy()
    alpha = float(min(1.0, max(0.0, opacity)))
    if fade:
        out[..., 3] = (alpha * 255.0 * np.sqrt(strength) + 0.5).astype(np.uint8)
    else:
        out[..., 3] = int(round(alpha * 255))
    return out


def colorbar(cmap: str = "turbo", length: int = 256, thickness: int = 14, *, signed: bool = False) -> np.ndarray:
    """A vertical colour bar (high at the top), opaque RGBA ``(length, thickness, 4)``; the fade
    suffix is ignored (the bar shows the colours at full strength)."""
    name, _ = split_cmap(cmap)
    if signed and name not in DIVERGING:
        name = DIVERGING[0]
    v = np.linspace(1.0, 0.0, max(2, int(length)), dtype=np.float32)[:, None].repeat(max(1, int(thickness)), 1)
    out = colorize(v, name, normalized=True).copy()
    out[[0, -1], :] = (90, 90, 90, 255)
    out[:, [0, -1]] = (90, 90, 90, 255)
    return out


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


def map_rgba(
    result: dict[str, np.ndarray],
    cmap: str = "turbo",
    *,
    signed: bool = False,
    opacity: float = 0.6,
    vrange: tuple[float, float] | None = None,
) -> np.ndarray:
    """An explain result (``{"map": (H, W)}`` or ``{"raw": (3, H, W), ...}``) as an overlay layer:
    :func:`gradient_image` for raw gradient images, else :func:`heatmap_rgba`."""
    if "raw" in result:
        rgba = gradient_image(result["raw"]).copy()
        rgba[..., 3] = round(float(opacity) * 255)
        return rgba
    return heatmap_rgba(result["map"], cmap, signed=signed, opacity=opacity, vrange=vrange)
