"""Spatial transformer networks (Jaderberg et al., 2015) on distorted ShapeScenes.

A spatial transformer has three parts:

1. a *localisation net* that reads the image ``U`` and predicts an affine ``theta`` (2 x 3);
2. a *grid generator*: every output pixel ``(x_t, y_t)`` (normalised to [-1, 1]) is mapped to the
   input point ``(x_s, y_s) = theta @ (x_t, y_t, 1)``, which gives the sampling grid;
3. a *bilinear sampler* that reads ``U`` at those points (``F.affine_grid`` / ``F.grid_sample``).

All three are differentiable, so the localisation net learns from the classifier's loss alone.

Convention (``align_corners=False`` everywhere): -1 and +1 are the outer *edges* of the image and
pixel ``i`` of ``n`` has its centre at ``(2 i + 1) / n - 1``. With ``theta`` the identity and an
output as large as the input, every grid point lies exactly on an input pixel centre, so the
sampler returns the input (up to float rounding); ``align_corners=True`` would do the same at equal
size but would map corner pixel centres to +-1 and so change the geometry whenever the output size
differs from the input size (the STN samples a 48 px view from a 96 px image).

The world: :class:`DistortedScenes` puts the one object of a ShapeScenes classification scene,
rotated, shrunk and moved (:func:`distort`), onto a textured background with clutter (fragments
of other objects). :class:`STNClassifier` localises, samples a 48 x 48 view and classifies it;
:class:`PlainClassifier` is the same classifier trunk run on the whole 96 px image (same feature
grid) plus one more block, so it has more weights (98k) than the STN (77k). Both are trained by ``python -m guidewidgets.attend.train_stn``.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..zoo.models import _conv, _Normalize
from ..zoo.scenes import CLASSES, ShapeScenes, _backgrounds
from ..zoo.weights_io import load_state, read_blob

__all__ = [
    "SIZE",
    "OUT",
    "ALIGN_CORNERS",
    "MODELS",
    "distortion_theta",
    "distort",
    "sample",
    "DistortedScenes",
    "LocalisationNet",
    "STNClassifier",
    "PlainClassifier",
    "load",
    "weights_path",
]

#: Side of the (distorted) input images in pixels; the models accept exactly this.
SIZE = 96
#: Side of the STN's rectified output in pixels.
OUT = 48
#: One convention for every grid in this module (see the module docstring).
ALIGN_CORNERS = False
#: Tag written into the weights files.
FORMAT = "guidewidgets.attend.stn/1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Shipped model names -> weights file stem.
MODELS = {"stn": "stn-classifier", "plain": "plain-classifier"}

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
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"index scenes with an int (use .batch(start, stop) for many), got {type(i).__name__}")
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"scene {i} out of range for {self.n} scenes")
        c, j = divmod(int(i), self.chunk)
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


# --- the models ----------------------------------------------------------------------------------


def _check_input(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a (B, 3, {SIZE}, {SIZE}) float tensor in [0, 1], got {type(x).__name__}")
    if x.dim() != 4 or tuple(x.shape[1:]) != (3, SIZE, SIZE):
        hint = "add a batch dim with x[None]" if x.dim() == 3 else f"resize it to {SIZE} x {SIZE}"
        raise ValueError(
            f"the STN models take (B, 3, {SIZE}, {SIZE}) images (their localisation net has a fixed input "
            f"size), got {tuple(x.shape)}; {hint}"
        )
    if not x.is_floating_point():
        raise TypeError(f"expected a float tensor in [0, 1], got {x.dtype}; use x.float() / 255 for uint8 images")
    return x


def _trunk(first_stride: int, extra: bool = False) -> nn.Sequential:
    """The classifier trunk both models share: 4 conv blocks to a 12 x 12 x 64 grid (5 with ``extra``)."""
    blocks: OrderedDict[str, nn.Module] = OrderedDict(
        block1=_conv(3, 16, stride=first_stride),
        block2=_conv(16, 32, stride=2),
        block3=_conv(32, 64, stride=2),
        block4=_conv(64, 64),
    )
    if extra:
        blocks["block5"] = _conv(64, 64)
    return nn.Sequential(blocks)


class LocalisationNet(nn.Module):
    """Reads the image at half resolution and predicts ``theta`` (B, 2, 3), initialised to the identity.

    Where to look (``theta``'s translation) is a *spatial soft-argmax*: a 1 x 1 conv scores each
    cell of a 12 x 12 feature grid, a softmax over the cells gives weights ``p``, and the
    translation is the ``p``-weighted mean of the cell centres. The linear part is a similarity,
    ``[[a, -b], [b, a]]`` (zoom ``sqrt(a^2 + b^2)``, rotation ``atan2(b, a)``), from two linear
    layers on the features pooled with the same weights ``p``.

    Why not one fully connected layer for all six numbers (the paper's general affine form):
    trained for minutes here, it learnt one fixed central zoom for every image and never
    followed the object (correlation of its translation with the object's position about 0.05);
    with the soft-argmax but a free 2 x 2 part it followed the object (0.9) but learnt the same
    strong shear for every image, which changes aspect ratios, the one cue between circle and
    ellipse. A similarity cannot do that.

    At the start the scores are 0 (uniform ``p``, translation 0) and the head has zero weights
    and ``(a, b) = (1, 0)`` as bias, so an untrained STN passes the whole image through.
    """

    coords: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.AvgPool2d(2),  # 48
            _conv(3, 16, stride=2),  # 24
            _conv(16, 32, stride=2),  # 12
            _conv(32, 32),
        )
        self.where = nn.Conv2d(32, 1, 1)
        self.head = nn.Sequential(nn.Linear(32, 32), nn.ReLU(inplace=True), nn.Linear(32, 2))
        n = SIZE // 8
        centres = (2 * torch.arange(n, dtype=torch.float32) + 1) / n - 1  # cell centres, align_corners=False
        gy, gx = torch.meshgrid(centres, centres, indexing="ij")
        self.register_buffer("coords", torch.stack([gx, gy], -1).view(n * n, 2))
        assert self.where.bias is not None
        nn.init.zeros_(self.where.weight)
        nn.init.zeros_(self.where.bias)
        last = self.head[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor([1.0, 0.0]))

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, 32, 12, 12) and the soft-argmax weights ``p`` (B, 144) over their cells."""
        f = self.features(x)
        return f, self.where(f).flatten(1).softmax(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f, p = self.attention(x)
        shift = p @ self.coords  # (B, 2)
        pooled = (f.flatten(2) * p[:, None]).sum(-1)  # the features where the net looks
        a, b = self.head(pooled).unbind(1)
        linear = torch.stack([torch.stack([a, -b], 1), torch.stack([b, a], 1)], 1)  # (B, 2, 2)
        return torch.cat([linear, shift[..., None]], dim=2)


class STNClassifier(nn.Module):
    """Localisation net -> ``theta`` -> sampling grid -> 48 x 48 rectified view -> classifier trunk.

    ``forward`` returns class scores; :meth:`transform` returns ``(theta, grid, output)``. The
    input must be (B, 3, 96, 96) float in [0, 1].
    """

    task = "classification"
    default_explain_layer = "trunk"

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.classes = list(CLASSES)
        self.meta: dict = {}
        self.localisation = LocalisationNet()
        self.normalize = _Normalize()
        self.trunk = _trunk(first_stride=1)  # 48 -> 48, 24, 12, 12
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def transform(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``theta`` (B, 2, 3), the sampling ``grid`` (B, 48, 48, 2) in normalised input coordinates,
        and the rectified ``output`` (B, 3, 48, 48) in [0, 1]."""
        x = _check_input(x)
        theta = self.localisation(self.normalize(x))
        grid = F.affine_grid(theta, [x.shape[0], 3, OUT, OUT], align_corners=ALIGN_CORNERS)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=ALIGN_CORNERS)
        return theta, grid, out

    def classify(self, view: torch.Tensor) -> torch.Tensor:
        """Class scores of rectified views (B, 3, 48, 48)."""
        return self.fc(self.pool(self.trunk(self.normalize(view))).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.transform(x)[2])


class PlainClassifier(nn.Module):
    """The same trunk on the whole 96 px image (first block strided, so the same 12 x 12 grid).

    One more conv block (64 -> 64) stands in for the localisation net, so the baseline is not the
    smaller model: 98k weights against the STN's 77k.
    """

    task = "classification"
    default_explain_layer = "trunk"

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.classes = list(CLASSES)
        self.meta: dict = {}
        self.normalize = _Normalize()
        self.trunk = _trunk(first_stride=2, extra=True)  # 96 -> 48, 24, 12, 12, 12
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _check_input(x)
        return self.fc(self.pool(self.trunk(self.normalize(x))).flatten(1))


_BUILDERS: dict[str, type[STNClassifier] | type[PlainClassifier]] = {"stn": STNClassifier, "plain": PlainClassifier}


def weights_path(name: str) -> Path:
    """Where the shipped weights of ``name`` (``"stn"`` or ``"plain"``) live."""
    if name not in MODELS:
        raise ValueError(f"unknown STN model {name!r}; use one of {list(MODELS)}")
    return WEIGHTS_DIR / f"{MODELS[name]}.pt"


def load(name: str = "stn", *, weights: str | os.PathLike[str] | None = None) -> STNClassifier | PlainClassifier:
    """The shipped ``"stn"`` or ``"plain"`` classifier (eval mode, CPU); ``weights`` overrides the file."""
    path = Path(weights) if weights is not None else weights_path(name)
    regen = "regenerate it with `python -m guidewidgets.attend.train_stn` or reinstall guidewidgets"
    if name not in MODELS:
        raise ValueError(f"unknown STN model {name!r}; use one of {list(MODELS)}")
    what = f"the STN model {name!r}"
    blob = read_blob(path, what, regen, accept=lambda b: b.get("format") == FORMAT and b.get("model") == name)
    model = _BUILDERS[name]()
    load_state(model, blob["state_dict"], path, what, regen)
    model.meta = dict(blob.get("meta", {}))
    return model.eval()
