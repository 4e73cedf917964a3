"""Maps to colours: normalisation, colormaps (matplotlib's, no pyplot), heatmap layers, overlays,
colour bars and gradient images."""

from __future__ import annotations

import difflib
import functools
from typing import Any

import numpy as np

from .arrays import ArrayLike, _squeeze_batch, resize, to_numpy, to_rgba

# Colormaps offered by the widgets (matplotlib has ~170; these read well as heatmaps).
COLORMAPS = ["jet", "turbo", "viridis", "inferno", "magma", "plasma", "hot", "coolwarm", "seismic", "gray"]

#: Suffix of a colormap menu entry whose low values fade to transparent ("turbo (fade)").
FADE = " (fade)"

#: Signed maps use a diverging colormap centred on zero; the menu's own is used when it is one of these.
DIVERGING = ("RdBu_r", "coolwarm", "seismic", "bwr", "PiYG", "PuOr")


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
