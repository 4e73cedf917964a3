"""ShapeScenes: procedurally generated images with known labels, per-pixel masks and boxes.

Every scene is a textured background (scikit-image's bundled grass, gravel and brick photos,
water waves or coloured noise) with one object (classification) or one to four objects
(segmentation) on it. Objects differ in form, colour and texture; ``circle`` and ``ellipse`` are
deliberately close (similar hue, similar form when the ellipse is round), the way "sky" and
"cloud" are, so a segmenter makes mistakes a hint can fix.

Scenes are rendered in chunks of :data:`CHUNK` images at once with tensor ops on coordinate grids
(no per-pixel Python), each chunk from its own generator seeded by ``(seed, task, chunk)``; an
item therefore depends only on the seed, the options and its index, and the dataset is lazy:
making ``ShapeScenes(10_000)`` costs nothing until items are read.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .shapes import templates

__all__ = ["ShapeScenes", "CLASSES", "MASK_CLASSES", "BACKGROUNDS", "CHUNK", "COLOUR_MODES"]

#: Object classes, in label order (classification labels index this list).
CLASSES: list[str] = ["circle", "ellipse", "square", "triangle", "star", "cross"]
#: Segmentation classes: background first, so a mask value is ``label + 1``.
MASK_CLASSES: list[str] = ["background", *CLASSES]
#: Background kinds, in the order of ``item["background"]``.
BACKGROUNDS: list[str] = ["grass", "gravel", "brick", "water", "noise"]
#: Images rendered together (and seeded together).
CHUNK = 64
#: Object colouring: each class its own colour, or every object a random one.
COLOUR_MODES = ("class", "random")

# Base colours (RGB in [0, 1]); circle and ellipse are neighbours on purpose.
_COLOURS = torch.tensor(
    [
        [0.86, 0.18, 0.12],  # circle: red
        [0.90, 0.32, 0.10],  # ellipse: orange-red
        [0.15, 0.30, 0.85],  # square: blue
        [0.20, 0.72, 0.22],  # triangle: green
        [0.96, 0.84, 0.15],  # star: yellow
        [0.62, 0.22, 0.78],  # cross: purple
    ]
)
# Size factor per class: the triangle (vertices on the unit circle) would otherwise cover far
# less area than the others, and Grad-CAM then peaks beside it rather than on it.
_SCALE = torch.tensor([1.0, 1.0, 1.0, 1.3, 1.0, 1.0])
_TINTS = torch.tensor(
    [
        [0.36, 0.58, 0.22],  # grass
        [0.56, 0.53, 0.48],  # gravel
        [0.68, 0.36, 0.27],  # brick
        [0.18, 0.40, 0.70],  # water
    ]
)
_TASKS = {"classification": 0, "segmentation": 1}
# Per-task appearance. Segmentation scenes are the harder, PASCAL-VOC-like task: colours vary
# more (jitter 0.2, so colour alone no longer names the class) and ellipses run rounder, so circle
# vs ellipse is a real sky/cloud confusion and a segmenter makes region-sized mistakes a hint can
# fix (with the clean style: +6 mIoU after 20 questions instead of the paper's +18). The
# classification style stays clean so the CAM classifier is accurate and its maps are sharp.
_STYLE: dict[str, dict[str, Any]] = {
    "classification": {"aspect": (0.45, 0.75), "jitter": 0.06},
    "segmentation": {"aspect": (0.55, 0.9), "jitter": 0.2},
}


@functools.lru_cache(maxsize=1)
def _textures() -> torch.Tensor:
    """scikit-image's grass, gravel and brick photos, (3, 512, 512) float in [0, 1], zero mean-ish."""
    from skimage import data

    stack = np.stack([data.grass(), data.gravel(), data.brick()]).astype(np.float32) / 255.0
    t = torch.from_numpy(stack)
    # Why: equalise contrast so no background is told apart by its brightness alone.
    t = (t - t.mean(dim=(1, 2), keepdim=True)) / t.std(dim=(1, 2), keepdim=True)
    return t


def _resolve(name: str | int, options: Sequence[str], what: str) -> int:
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        if 0 <= int(name) < len(options):
            return int(name)
        raise ValueError(f"{what} index {name} is out of range; use 0..{len(options) - 1} or a name from {options}")
    if isinstance(name, str) and name in options:
        return options.index(name)
    raise ValueError(f"unknown {what} {name!r}; choose one of {list(options)}")


def _recolour(colours: object) -> torch.Tensor:
    """(classes,) bool: which classes' objects get random colours."""
    if colours in COLOUR_MODES:
        return torch.full((len(CLASSES),), colours == "random")
    if isinstance(colours, (list, tuple)) and colours and all(c in CLASSES for c in colours):
        return torch.tensor([c in colours for c in CLASSES])
    raise ValueError(
        f"colours must be one of {list(COLOUR_MODES)} or a list of class names from {CLASSES}, got {colours!r}"
    )


def scene_index(i: object, n: int) -> int:
    """Scene ``i`` of ``n`` as a non-negative int (negative indices count from the end); a
    TypeError or IndexError that says what to use otherwise. Shared by the scene datasets."""
    if not isinstance(i, (int, np.integer)):
        raise TypeError(f"index scenes with an int (use .batch(start, stop) for many), got {type(i).__name__}")
    k = int(i) + n if i < 0 else int(i)
    if not 0 <= k < n:
        raise IndexError(f"scene {i} out of range for {n} scenes")
    return k


class ShapeScenes(torch.utils.data.Dataset):
    """An indexable, deterministic dataset of procedurally generated scenes.

    Args:
        n: number of scenes.
        seed: scenes are a pure function of (seed, options, index); same seed, same bytes.
        task: ``"classification"`` (one large object per image; ``label`` is its class) or
            ``"segmentation"`` (``objects`` objects per image, possibly overlapping).
        size: image side in pixels (96 to 512); object sizes scale with it.
        objects: (min, max) objects per scene; default (1, 1) for classification, (1, 4) for
            segmentation.
        bias: ``(cls, background, p)``: scenes containing class ``cls`` get ``background`` with
            probability ``p`` (another one otherwise) and scenes without ``cls`` never get it, so
            the background becomes a shortcut for the class (GAIN's "boat on water").
        noise: maximum standard deviation of the per-pixel Gaussian noise.
        colours: ``"class"`` (each class its own base colour, jittered), ``"random"`` (every
            object a random colour, so only form and texture name the class) or a list of class
            names whose objects get random colours (the others keep theirs).
        scale: object size factor in (0, 1.5] (1 = the default sizes; smaller objects are harder
            to recognise while the background stays as easy).

    Items are dicts: ``image`` (3, H, W) float32 in [0, 1]; ``label`` int (index into
    :attr:`classes`; for segmentation the class of the largest visible object); ``mask`` (H, W)
    int64 with 0 = background and ``label + 1`` on an object's pixels; ``instances`` (H, W) int64
    (0 = background, i + 1 = object i); ``boxes`` (N, 4) int64 ``[x0, y0, x1, y1]`` with exclusive
    ends (``mask[y0:y1, x0:x1]`` is the tight crop of object i's visible pixels); ``box_labels``
    (N,) int64; ``background`` int (index into :attr:`backgrounds`).
    """

    classes: list[str] = CLASSES
    mask_classes: list[str] = MASK_CLASSES
    backgrounds: list[str] = BACKGROUNDS

    def __init__(
        self,
        n: int,
        seed: int = 0,
        task: str = "classification",
        size: int = 96,
        objects: tuple[int, int] | None = None,
        bias: tuple[str | int, str | int, float] | None = None,
        noise: float = 0.05,
        colours: str | Sequence[str] = "class",
        scale: float = 1.0,
    ) -> None:
        if not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int (number of scenes), got {n!r}")
        if task not in _TASKS:
            raise ValueError(f"task must be 'classification' or 'segmentation', got {task!r}")
        if not isinstance(size, (int, np.integer)) or not 96 <= size <= 512:
            raise ValueError(f"size must be an int from 96 to 512 pixels, got {size!r}")
        if objects is None:
            objects = (1, 1) if task == "classification" else (1, 4)
        lo, hi = (int(v) for v in objects)
        if not 1 <= lo <= hi <= 8:
            raise ValueError(f"objects must be (min, max) with 1 <= min <= max <= 8, got {objects!r}")
        if task == "classification" and hi != 1:
            raise ValueError("classification scenes hold one object; use task='segmentation' for more")
        self.recolour = _recolour(colours)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0.0 < float(scale) <= 1.5:
            raise ValueError(f"scale must be a number in (0, 1.5] (the object size factor), got {scale!r}")
        self.colours, self.scale = colours if isinstance(colours, str) else tuple(colours), float(scale)
        self.bias = None
        if bias is not None:
            try:
                cls, bg, p = bias
            except (TypeError, ValueError):
                raise ValueError(f"bias must be (class, background, probability), got {bias!r}") from None
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"bias probability must lie in [0, 1], got {p!r}")
            self.bias = (_resolve(cls, CLASSES, "class"), _resolve(bg, BACKGROUNDS, "background"), float(p))
        self.n, self.seed, self.task, self.size = int(n), int(seed), task, int(size)
        self.objects = (lo, hi)
        self.noise = float(noise)
        self._cache: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (
            f"ShapeScenes(n={self.n}, seed={self.seed}, task={self.task!r}, size={self.size}, "
            f"objects={self.objects}, bias={self.bias}, colours={self.colours!r}, scale={self.scale})"
        )

    # --- access -------------------------------------------------------------------------------

    def __getitem__(self, i: int) -> dict:
        c, j = divmod(scene_index(i, self.n), CHUNK)
        chunk = self._chunk(c)
        valid = chunk["box_valid"][j]
        # Why: renumber so instance i + 1 is boxes[i] even when an object was fully covered.
        renumber = torch.zeros(len(valid) + 1, dtype=torch.long)
        renumber[1:][valid] = torch.arange(1, int(valid.sum()) + 1)
        return {
            "image": chunk["images"][j].float() / 255.0,
            "label": int(chunk["labels"][j]),
            "mask": chunk["masks"][j].long(),
            "instances": renumber[chunk["instances"][j].long()],
            "boxes": chunk["boxes"][j][valid].clone(),
            "box_labels": chunk["box_labels"][j][valid].clone(),
            "background": int(chunk["background"][j]),
        }

    @staticmethod
    def collate(items: list[dict]) -> dict:
        """``collate_fn`` for a ``DataLoader``: stacks fixed-size fields, keeps ``boxes`` and
        ``box_labels`` as lists (scenes hold different numbers of objects)."""
        out: dict = {}
        for k in items[0]:
            vals = [it[k] for it in items]
            if k in ("boxes", "box_labels"):
                out[k] = vals
            elif isinstance(vals[0], torch.Tensor):
                out[k] = torch.stack(vals)
            else:
                out[k] = torch.tensor(vals)
        return out

    def batch(self, start: int = 0, stop: int | None = None) -> dict[str, torch.Tensor]:
        """Scenes ``start:stop`` stacked: ``images`` (B, 3, H, W) uint8, ``masks`` (B, H, W) uint8,
        ``labels`` (B,), ``background`` (B,). Use ``images.float() / 255`` for model input."""
        stop = self.n if stop is None else min(int(stop), self.n)
        start = max(0, int(start))
        parts: dict[str, list[torch.Tensor]] = {"images": [], "masks": [], "labels": [], "background": []}
        for c in range(start // CHUNK, (stop - 1) // CHUNK + 1 if stop > start else start // CHUNK):
            chunk = self._chunk(c)
            a, b = max(start - c * CHUNK, 0), min(stop - c * CHUNK, CHUNK)
            for k in parts:
                parts[k].append(chunk[k][a:b])
        if not parts["images"]:
            s = self.size
            return {
                "images": torch.zeros(0, 3, s, s, dtype=torch.uint8),
                "masks": torch.zeros(0, s, s, dtype=torch.uint8),
                "labels": torch.zeros(0, dtype=torch.long),
                "background": torch.zeros(0, dtype=torch.long),
            }
        return {k: torch.cat(v) for k, v in parts.items()}

    def _chunk(self, c: int, cache: bool = True) -> dict[str, torch.Tensor]:
        if c in self._cache:
            return self._cache[c]
        # Why: always a whole chunk, so scene i does not depend on how many scenes were asked for.
        out = _render(CHUNK, self._generator(c), self)
        if cache:
            if len(self._cache) >= 4:  # Why: bounded memory when a DataLoader walks 10,000 scenes
                self._cache.pop(next(iter(self._cache)))
            self._cache[c] = out
        return out

    def _generator(self, c: int) -> torch.Generator:
        key = [self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF, _TASKS[self.task], c]
        state = np.random.SeedSequence(key).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# --- rendering --------------------------------------------------------------------------------------


def _uniform(g: torch.Generator, shape, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g)


def _objects(B: int, g: torch.Generator, opts: ShapeScenes) -> dict[str, torch.Tensor]:
    """Per-slot object parameters (K = max objects per image; slots beyond the count are inactive)
    and each image's background, with the bias knob tying one class to one background."""
    S = opts.size
    lo, K = opts.objects
    nc = len(CLASSES)
    count = torch.randint(lo, K + 1, (B,), generator=g)
    active = torch.arange(K)[None, :] < count[:, None]
    cls = torch.randint(0, nc, (B, K), generator=g)
    if opts.task == "classification":
        radius = _uniform(g, (B, K), 0.17, 0.36) * S * _SCALE[cls] * opts.scale
        margin = radius * 0.9
    else:
        radius = _uniform(g, (B, K), 0.08, 0.22) * S * _SCALE[cls] * opts.scale
        margin = radius * 0.5
    cx = margin + torch.rand((B, K), generator=g) * (S - 2 * margin)
    cy = margin + torch.rand((B, K), generator=g) * (S - 2 * margin)
    angle = _uniform(g, (B, K), 0.0, 2 * math.pi)
    style = _STYLE[opts.task]
    aspect = _uniform(g, (B, K), *style["aspect"])  # ellipse minor/major axis
    colour = _COLOURS[cls] * _uniform(g, (B, K, 1), 0.75, 1.1) + style["jitter"] * torch.randn((B, K, 3), generator=g)
    nb = len(BACKGROUNDS)
    background = torch.randint(0, nb, (B,), generator=g)
    coin = torch.rand((B,), generator=g)
    other = torch.randint(0, nb - 1, (B,), generator=g)
    if opts.bias is not None:
        bc, bb, p = opts.bias
        has = ((cls == bc) & active).any(dim=1)
        not_bb = other + (other >= bb).long()  # uniform over backgrounds other than bb
        background = torch.where(has & (coin < p), torch.full_like(background, bb), not_bb)
    if opts.recolour.any():
        # Why only here: the default scenes draw nothing more, so their bytes stay as they were.
        colour = torch.where(opts.recolour[cls][..., None], _uniform(g, (B, K, 3), 0.1, 0.95), colour)
    return dict(active=active, cls=cls, radius=radius, cx=cx, cy=cy, angle=angle, aspect=aspect, colour=colour,
                background=background)  # fmt: skip


def _render(B: int, g: torch.Generator, opts: ShapeScenes) -> dict[str, torch.Tensor]:
    S = opts.size
    K = opts.objects[1]
    o = _objects(B, g, opts)
    active, cls, radius, cx, cy = o["active"], o["cls"], o["radius"], o["cx"], o["cy"]
    angle, aspect, colour, background = o["angle"], o["aspect"], o["colour"], o["background"]

    image = _backgrounds(background, S, g)

    # Each object is its class's pre-rendered template (mask + shading) warped into place by one
    # batched affine resample; the ellipse is the circle template squeezed along one axis.
    n_obj = B * K
    s = (S / 2) / radius
    ca, sa = torch.cos(angle), torch.sin(angle)
    squeeze = torch.where(cls == 1, aspect, torch.ones_like(aspect))
    ox, oy = S / 2 - cx, S / 2 - cy
    # Resampling grid (template coordinates of every output pixel), built separably: cheaper
    # than F.affine_grid's batched matmul by a wide margin.
    r = torch.stack([ca * s, sa * s, (ca * ox + sa * oy) / radius], dim=-1).view(n_obj, 3)
    q = torch.stack([-sa * s, ca * s, (-sa * ox + ca * oy) / radius], dim=-1).view(n_obj, 3) / squeeze.view(n_obj, 1)
    on = active.view(-1).nonzero()[:, 0]  # Why: only real objects are worth resampling
    r, q = r[on], q[on]
    t = (torch.arange(S, dtype=torch.float32) + 0.5) / S * 2 - 1  # pixel centres, align_corners=False
    grid = torch.empty((len(on), S, S, 2))
    torch.add((r[:, 0:1] * t + r[:, 2:3])[:, None, :], (r[:, 1:2] * t)[:, :, None], out=grid[..., 0])
    torch.add((q[:, 0:1] * t + q[:, 2:3])[:, None, :], (q[:, 1:2] * t)[:, :, None], out=grid[..., 1])
    warped = torch.zeros((n_obj, S, S))
    # Template value = shading inside the shape (always > 0.5), 0 outside: one channel says both.
    warped[on] = F.grid_sample(
        templates(len(CLASSES))[cls.view(-1)[on]], grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[:, 0]
    warped = warped.view(B, K, S * S)

    # Painter's order: the last object covering a pixel is the visible one.
    slot = torch.arange(1, K + 1, dtype=torch.uint8).view(1, K, 1)
    instances = ((warped > 0) * slot).amax(dim=1)  # (B, S*S), 0 = background
    top = (instances.long() - 1).clamp(min=0)[:, None]
    shade = warped.gather(1, top)  # (B, 1, S*S)
    obj = colour.transpose(1, 2).gather(2, top.expand(B, 3, -1)) * shade
    fg = (instances > 0)[:, None]
    image = torch.where(fg.view(B, 1, S, S), obj.view(B, 3, S, S).clamp(0, 1), image)
    masks = ((cls + 1).to(torch.uint8).gather(1, top[:, 0]) * fg[:, 0]).view(B, S, S)
    instances = instances.view(B, S, S)

    sigma = _uniform(g, (B, 1, 1, 1), 0.2, 1.0) * (255 * opts.noise)
    # Why: scale, noise and rounding in one pass (+0.5 then truncation rounds non-negative values).
    image = torch.addcmul(image * 255 + 0.5, sigma, _noise(g, tuple(image.shape)))
    images = image.clamp_(0, 255).to(torch.uint8)

    boxes, area = _boxes(instances, K)
    box_valid = area > 0
    largest = area.argmax(dim=1)
    labels = cls.gather(1, largest[:, None])[:, 0]
    return {
        "images": images,
        "masks": masks,
        "instances": instances,
        "labels": labels,
        "boxes": boxes,
        "box_labels": cls,
        "box_valid": box_valid,
        "background": background,
    }


def _boxes(instances: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tight boxes (B, K, 4) of each object's visible pixels (exclusive ends) and their areas (B, K):
    one scatter marks, for every instance, the rows and the columns it occupies."""
    B, S = instances.shape[0], instances.shape[-1]
    inst = instances.long().view(B, S, S)
    ar = torch.arange(S)
    rows = torch.zeros((B, (K + 1) * S), dtype=torch.bool)
    rows.scatter_(1, (inst * S + ar.view(1, S, 1)).view(B, -1), True)
    cols = torch.zeros((B, (K + 1) * S), dtype=torch.bool)
    cols.scatter_(1, (inst * S + ar.view(1, 1, S)).view(B, -1), True)
    rows, cols = rows.view(B, K + 1, S)[:, 1:], cols.view(B, K + 1, S)[:, 1:]
    y0 = torch.where(rows, ar, S).amin(dim=2)
    y1 = torch.where(rows, ar, -1).amax(dim=2) + 1
    x0 = torch.where(cols, ar, S).amin(dim=2)
    x1 = torch.where(cols, ar, -1).amax(dim=2) + 1
    boxes = torch.stack([x0, y0, x1, y1], dim=2)
    offsets = torch.arange(B).view(B, 1, 1) * (K + 1)
    area = torch.bincount((inst + offsets).view(-1), minlength=B * (K + 1)).view(B, K + 1)[:, 1:]
    return boxes, area


@functools.lru_cache(maxsize=1)
def _noise_bank() -> torch.Tensor:
    """A fixed stream of standard-normal numbers; scenes slice it at random offsets.

    Why: drawing fresh Gaussian noise per pixel costs more than the rest of a scene; slices of a
    fixed 4M-value stream are as random for a CNN and keep scenes a pure function of the seed.
    """
    return torch.randn(1 << 22, generator=torch.Generator().manual_seed(20181231))


def _noise(g: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    B, L = shape[0], math.prod(shape[1:])
    bank = _noise_bank()
    offsets = torch.randint(0, bank.numel() - L, (B,), generator=g).tolist()
    return torch.stack([bank[o : o + L] for o in offsets]).view(shape)


def _backgrounds(kind: torch.Tensor, S: int, g: torch.Generator) -> torch.Tensor:
    """(B, 3, S, S) backgrounds of the given kinds (indices into BACKGROUNDS)."""
    B = kind.shape[0]
    tex = _textures()
    T, H, W = tex.shape
    # Photo textures: random crop, scale (stride 1 or 2), flips, then a jittered tint.
    # Why: larger scenes cannot take a 2x-scaled crop of a 512-pixel photo.
    stride = torch.randint(1, 3, (B,), generator=g).clamp(max=max(1, (H - 1) // (S - 1)))
    span = stride * (S - 1)
    y0 = (torch.rand((B,), generator=g) * (H - span)).long()
    x0 = (torch.rand((B,), generator=g) * (W - span)).long()
    ar = torch.arange(S)
    flip = torch.rand((B, 2), generator=g) < 0.5
    ry = torch.where(flip[:, :1], S - 1 - ar, ar)
    rx = torch.where(flip[:, 1:], S - 1 - ar, ar)
    yy = y0[:, None] + stride[:, None] * ry
    xx = x0[:, None] + stride[:, None] * rx
    which = kind.clamp(max=T - 1)
    flat = (which * (H * W))[:, None, None] + (yy * W)[:, :, None] + xx[:, None, :]
    grey = tex.view(-1).take(flat)  # (B, S, S), zero-mean

    # Water: two crossing wave trains (computed only where needed).
    ang = _uniform(g, (B, 2, 1, 1), 0, math.pi)
    freq = _uniform(g, (B, 2, 1, 1), 0.15, 0.45)
    ph = _uniform(g, (B, 2, 1, 1), 0, 2 * math.pi)
    water = (kind == 3).nonzero()[:, 0]
    if len(water):
        gy = torch.arange(S, dtype=torch.float32).view(1, 1, S, 1)
        gx = torch.arange(S, dtype=torch.float32).view(1, 1, 1, S)
        d = torch.cos(ang[water]) * gx + torch.sin(ang[water]) * gy
        grey[water] = 0.8 * torch.sin(freq[water] * d + ph[water]).sum(dim=1)

    tint = _TINTS[kind.clamp(max=len(_TINTS) - 1)] + 0.06 * torch.randn((B, 3), generator=g)
    contrast = _uniform(g, (B, 1, 1, 1), 0.25, 0.5)
    bright = _uniform(g, (B, 1, 1, 1), 0.8, 1.15)
    image = (tint[:, :, None, None] * bright) * (1 + contrast * grey[:, None])

    # Noise: smooth random colour fields plus fine grain.
    coarse = torch.rand((B, 3, 4, 4), generator=g)
    noise = (kind == 4).nonzero()[:, 0]
    if len(noise):
        smooth = F.interpolate(coarse[noise], size=(S, S), mode="bilinear", align_corners=False)
        image[noise] = 0.15 + 0.7 * smooth + 0.08 * _noise(g, (len(noise), 1, S, S))
    return image
