"""The world the spatial transformer learns in: ShapeScenes objects, distorted, on clutter.

:class:`DistortedScenes` puts the one object of a ShapeScenes classification scene, rotated,
shrunk and moved (:func:`distort`), onto a textured background with clutter (fragments of other
objects). The grid convention (``align_corners=False``) is explained in :mod:`.stn`, which
re-exports everything here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..zoo.scenes import CLASSES, ShapeScenes, _backgrounds, scene_index

__all__ = ["SIZE", "ALIGN_CORNERS", "distortion_theta", "distort", "sample", "DistortedScenes"]

#: Side of the (distorted) input images in pixels; the models accept exactly this.
SIZE = 96
#: One convention for every grid of the STN (see the docstring of :mod:`.stn`).
ALIGN_CORNERS = False

# Distortion ranges of DistortedScenes (the widget's sliders cover wider ones).
ANGLE = (-180.0, 180.0)  # degrees
SCALE = (0.35, 0.6)  # object size relative to the clean scene
SHIFT = 0.65  # object centre within +-SHIFT of the image centre (normalised units)
CLUTTER = 6  # fragments of other objects per image
FRAGMENT = 7  # fragment side in pixels


# --- the distortion ------------------------------------------------------------------------------


def _rotation(angle_deg: torch.Tensor) -> torch.Tensor:
    a = angle_deg * (math.pi / 180.0)
    c, s = torch.cos(a), torch.sin(a)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (..., 2, 2)


def distortion_theta(
    angle: float | torch.Tensor,
    scale: float | torch.Tensor,
    shift: Sequence[float] | torch.Tensor,
    centre: Sequence[float] | torch.Tensor = (0.0, 0.0),
) -> torch.Tensor:
    """The affine ``theta`` (B, 2, 3) that *samples* a distorted image from a clean one.

    The distortion moves a clean point ``q`` to ``p = scale * R(angle) (q - centre) + shift``
    (normalised coordinates, y down, ``angle`` in degrees clockwise on screen); sampling needs the
    inverse, ``q = R(-angle) (p - shift) / scale + centre``, which is what is returned.
    """
    angle_t = torch.as_tensor(angle, dtype=torch.float32).reshape(-1)
    scale_t = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
    shift_t = torch.as_tensor(shift, dtype=torch.float32).reshape(-1, 2)
    centre_t = torch.as_tensor(centre, dtype=torch.float32).reshape(-1, 2)
    if (scale_t <= 0).any():
        raise ValueError(f"scale must be positive (1 = unchanged, 0.5 = half size), got {scale_t.tolist()}")
    B = max(len(angle_t), len(scale_t), len(shift_t), len(centre_t))
    inv = _rotation(-angle_t).expand(B, 2, 2) / scale_t.expand(B).view(B, 1, 1)
    offset = centre_t.expand(B, 2) - (inv @ shift_t.expand(B, 2)[..., None])[..., 0]
    return torch.cat([inv, offset[..., None]], dim=2)


def _object_centre(mask: torch.Tensor) -> torch.Tensor:
    """(B, 2) centre (x, y) of each mask's foreground box in normalised coordinates."""
    H, W = mask.shape[-2:]
    fg = mask > 0
    ys = torch.arange(H, dtype=torch.float32)
    xs = torch.arange(W, dtype=torch.float32)
    rows, cols = fg.any(2), fg.any(1)
    big = float(max(H, W))
    y0 = torch.where(rows, ys, big).amin(1)
    y1 = torch.where(rows, ys, -1.0).amax(1)
    x0 = torch.where(cols, xs, big).amin(1)
    x1 = torch.where(cols, xs, -1.0).amax(1)
    empty = ~rows.any(1)
    cx = torch.where(empty, (W - 1) / 2, (x0 + x1) / 2)
    cy = torch.where(empty, (H - 1) / 2, (y0 + y1) / 2)
    return torch.stack([(2 * cx + 1) / W - 1, (2 * cy + 1) / H - 1], 1)


def distort(
    image: torch.Tensor,
    mask: torch.Tensor,
    canvas: torch.Tensor,
    *,
    angle: float | torch.Tensor = 0.0,
    scale: float | torch.Tensor = 1.0,
    shift: Sequence[float] | torch.Tensor = (0.0, 0.0),
) -> torch.Tensor:
    """Rotate, scale and move the object of ``image`` (its pixels: ``mask > 0``) onto ``canvas``.

    ``image`` and ``canvas``: (3, H, W) or (B, 3, H, W) in [0, 1]; ``mask``: (H, W) or (B, H, W).
    The object is first centred (its box centre), then scaled by ``scale``, rotated by ``angle``
    degrees and moved to ``shift`` = (x, y) in normalised units (0 = image centre, +-1 = edges).
    Deterministic: the same arguments give the same pixels. Returns the canvas' shape.
    """
    single = image.dim() == 3
    x, m, c = (image[None], mask[None], canvas[None]) if single else (image, mask, canvas)
    if x.dim() != 4 or x.shape[1] != 3 or m.shape != (x.shape[0], *x.shape[2:]) or c.shape != x.shape:
        raise ValueError(
            f"distort needs image (B, 3, H, W), mask (B, H, W) and canvas like image; got "
            f"{tuple(image.shape)}, {tuple(mask.shape)}, {tuple(canvas.shape)}"
        )
    theta = distortion_theta(angle, scale, shift, _object_centre(m)).expand(x.shape[0], 2, 3)
    alpha = sample((m > 0).float()[:, None], theta, x.shape[-2:])
    obj = sample(x.float() * (m > 0)[:, None], theta, x.shape[-2:])
    # Why: premultiplied colour over alpha keeps the old background out of the object's soft edge.
    out = obj + (1 - alpha) * c.float()
    return out[0] if single else out


def sample(image: torch.Tensor, theta: torch.Tensor, size: Sequence[int] | torch.Size) -> torch.Tensor:
    """Grid generator + bilinear sampler: ``image`` (B, C, H, W) read at ``theta``'s grid of ``size`` (h, w)."""
    h, w = int(size[0]), int(size[1])
    grid = F.affine_grid(theta, [image.shape[0], image.shape[1], h, w], align_corners=ALIGN_CORNERS)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=ALIGN_CORNERS)


# --- the data set --------------------------------------------------------------------------------


class DistortedScenes(torch.utils.data.Dataset):
    """ShapeScenes' objects rotated, shrunk and moved onto textured, cluttered backgrounds.

    Item ``i`` depends only on ``(seed, i)``: its clean scene is ``ShapeScenes(.., seed)[i]``, its
    background, clutter and distortion come from a generator seeded by ``(seed, i // 64)``.
    Items are dicts: ``image`` (3, 96, 96) float in [0, 1], ``label``, ``angle`` (degrees),
    ``scale``, ``shift`` (2,), and for re-rendering: ``clean``, ``mask``, ``canvas``.
    :meth:`render` redraws item ``i`` with other distortion parameters (the widget's sliders).
    """

    classes: list[str] = CLASSES
    chunk = 64

    def __init__(
        self,
        n: int,
        seed: int = 0,
        *,
        angle: tuple[float, float] = ANGLE,
        scale: tuple[float, float] = SCALE,
        shift: float = SHIFT,
        clutter: int = CLUTTER,
    ) -> None:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int (number of scenes), got {n!r}")
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {scale!r}")
        self.n, self.seed = int(n), int(seed)
        self.angle, self.scale, self.shift, self.clutter = tuple(angle), tuple(scale), float(shift), int(clutter)
        self._scenes = ShapeScenes(max(1, -(-self.n // self.chunk)) * self.chunk, seed=self.seed, size=SIZE)
        self._cache: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return f"DistortedScenes(n={self.n}, seed={self.seed}, scale={self.scale}, clutter={self.clutter})"

    def _generator(self, c: int) -> torch.Generator:
        key = [self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF, 0x57A, c]
        state = np.random.SeedSequence(key).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def _chunk(self, c: int) -> dict[str, torch.Tensor]:
        if c in self._cache:
            return self._cache[c]
        B, S = self.chunk, SIZE
        g = self._generator(c)
        clean = self._scenes.batch(c * B, (c + 1) * B)
        images = clean["images"].float() / 255
        masks = clean["masks"]
        kinds = torch.randint(0, 5, (B,), generator=g)
        canvas = _backgrounds(kinds, S, g).clamp(0, 1)
        # Clutter: fragments cut from the objects of other scenes of the chunk (as cluttered MNIST).
        donor = torch.randint(0, B, (B, self.clutter), generator=g)
        pos = torch.randint(0, S - FRAGMENT, (B, self.clutter, 2), generator=g)
        pick = torch.rand((B, self.clutter, 2), generator=g)
        where = [(masks[d] > 0).nonzero(as_tuple=True) for d in range(B)]
        for b in range(B):
            for k in range(self.clutter):
                d = int(donor[b, k])
                ys, xs = where[d]
                if len(ys) == 0:
                    continue
                j = int(pick[b, k, 0] * len(ys))
                y0 = min(max(int(ys[j]) - FRAGMENT // 2, 0), S - FRAGMENT)
                x0 = min(max(int(xs[j]) - FRAGMENT // 2, 0), S - FRAGMENT)
                py, px = int(pos[b, k, 0]), int(pos[b, k, 1])
                m = (masks[d, y0 : y0 + FRAGMENT, x0 : x0 + FRAGMENT] > 0).float()
                patch = images[d, :, y0 : y0 + FRAGMENT, x0 : x0 + FRAGMENT]
                region = canvas[b, :, py : py + FRAGMENT, px : px + FRAGMENT]
                canvas[b, :, py : py + FRAGMENT, px : px + FRAGMENT] = m * patch + (1 - m) * region
        lo, hi = self.angle
        angle = lo + (hi - lo) * torch.rand((B,), generator=g)
        slo, shi = self.scale
        scale = slo + (shi - slo) * torch.rand((B,), generator=g)
        shift = (torch.rand((B, 2), generator=g) * 2 - 1) * self.shift
        noise = 0.03 * torch.randn((B, 3, S, S), generator=g)
        out = {
            "clean": images,
            "mask": masks,
            "canvas": canvas,
            "labels": clean["labels"],
            "angle": angle,
            "scale": scale,
            "shift": shift,
            "noise": noise,
        }
        if len(self._cache) >= 4:  # bounded memory over a long walk
            self._cache.pop(next(iter(self._cache)))
        self._cache[c] = out
        return out

    def batch(self, start: int = 0, stop: int | None = None) -> dict[str, torch.Tensor]:
        """Scenes ``start:stop``: ``images`` (B, 3, 96, 96) float in [0, 1], ``labels``, ``angle``, ``scale``, ``shift``."""
        stop = self.n if stop is None else min(int(stop), self.n)
        start = max(0, int(start))
        imgs: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        params: dict[str, list[torch.Tensor]] = {"angle": [], "scale": [], "shift": []}
        i = start
        while i < stop:
            c, j = divmod(i, self.chunk)
            k = min(stop - i, self.chunk - j)
            ch = self._chunk(c)
            sl = slice(j, j + k)
            imgs.append(self._compose(ch, sl, ch["angle"][sl], ch["scale"][sl], ch["shift"][sl]))
            labels.append(ch["labels"][sl])
            for key in params:
                params[key].append(ch[key][sl])
            i += k
        if not imgs:
            return {"images": torch.zeros(0, 3, SIZE, SIZE), "labels": torch.zeros(0, dtype=torch.long)}
        return {"images": torch.cat(imgs), "labels": torch.cat(labels), **{k: torch.cat(v) for k, v in params.items()}}

    @staticmethod
    def _compose(ch: dict[str, torch.Tensor], sl: slice, angle, scale, shift) -> torch.Tensor:
        img = distort(ch["clean"][sl], ch["mask"][sl], ch["canvas"][sl], angle=angle, scale=scale, shift=shift)
        return (img + ch["noise"][sl]).clamp(0, 1)

    def _locate(self, i: int) -> tuple[dict[str, torch.Tensor], int]:
        """Scene ``i``'s chunk and its row there (negative indices count from the end)."""
        c, j = divmod(scene_index(i, self.n), self.chunk)
        return self._chunk(c), j

    def __getitem__(self, i: int) -> dict:
        ch, j = self._locate(i)
        sl = slice(j, j + 1)
        return {
            "image": self._compose(ch, sl, ch["angle"][sl], ch["scale"][sl], ch["shift"][sl])[0],
            "label": int(ch["labels"][j]),
            "angle": float(ch["angle"][j]),
            "scale": float(ch["scale"][j]),
            "shift": ch["shift"][j].clone(),
            "clean": ch["clean"][j].clone(),
            "mask": ch["mask"][j].clone(),
            "canvas": ch["canvas"][j].clone(),
        }

    def render(
        self, i: int, *, angle: float | None = None, scale: float | None = None, shift: Sequence[float] | None = None
    ) -> torch.Tensor:
        """Scene ``i`` (3, 96, 96) with its own distortion, or the one given (same background, clutter, noise)."""
        ch, j = self._locate(i)  # no item dict: the widget calls this on every slider move
        sl = slice(j, j + 1)
        a = float(ch["angle"][j]) if angle is None else float(angle)
        s = float(ch["scale"][j]) if scale is None else float(scale)
        t = ch["shift"][j] if shift is None else torch.as_tensor(shift, dtype=torch.float32)
        return self._compose(ch, sl, a, s, t)[0]

    def label(self, i: int) -> int:
        """Scene ``i``'s class index, without rendering it."""
        ch, j = self._locate(i)
        return int(ch["labels"][j])
