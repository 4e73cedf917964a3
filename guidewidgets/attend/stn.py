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

import os
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..zoo.models import _conv, _Normalize
from ..zoo.scenes import CLASSES
from ..zoo.weights_io import load_state, read_blob
from .distorted import (  # noqa: F401 - re-exported: the data set's home was this module
    ALIGN_CORNERS,
    ANGLE,
    CLUTTER,
    FRAGMENT,
    SCALE,
    SHIFT,
    SIZE,
    DistortedScenes,
    _object_centre,
    _rotation,
    distort,
    distortion_theta,
    sample,
)

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

#: Side of the STN's rectified output in pixels.
OUT = 48
#: Tag written into the weights files.
FORMAT = "guidewidgets.attend.stn/1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: Shipped model names -> weights file stem.
MODELS = {"stn": "stn-classifier", "plain": "plain-classifier"}


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


class _TrunkClassifier(nn.Module):
    """What both models share: the classes, ``normalize``, the trunk, global average pooling, ``fc``.

    ``before`` are modules registered (and so initialised from the global seed) ahead of the rest,
    which keeps the training recipe's random initialisation what it was.
    """

    task = "classification"
    default_explain_layer = "trunk"

    def __init__(self, num_classes: int, first_stride: int, extra: bool = False, **before: nn.Module) -> None:
        super().__init__()
        self.classes = list(CLASSES)
        self.meta: dict = {}
        for name, module in before.items():
            self.add_module(name, module)
        self.normalize = _Normalize()
        self.trunk = _trunk(first_stride, extra)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def classify(self, view: torch.Tensor) -> torch.Tensor:
        """Class scores of the trunk's input images (normalised here)."""
        return self.fc(self.pool(self.trunk(self.normalize(view))).flatten(1))


class STNClassifier(_TrunkClassifier):
    """Localisation net -> ``theta`` -> sampling grid -> 48 x 48 rectified view -> classifier trunk.

    ``forward`` returns class scores; :meth:`transform` returns ``(theta, grid, output)``. The
    input must be (B, 3, 96, 96) float in [0, 1].
    """

    localisation: LocalisationNet

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__(num_classes, first_stride=1, localisation=LocalisationNet())  # 48 -> 48, 24, 12, 12

    def transform(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``theta`` (B, 2, 3), the sampling ``grid`` (B, 48, 48, 2) in normalised input coordinates,
        and the rectified ``output`` (B, 3, 48, 48) in [0, 1]."""
        x = _check_input(x)
        theta = self.localisation(self.normalize(x))
        grid = F.affine_grid(theta, [x.shape[0], 3, OUT, OUT], align_corners=ALIGN_CORNERS)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=ALIGN_CORNERS)
        return theta, grid, out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.transform(x)[2])


class PlainClassifier(_TrunkClassifier):
    """The same trunk on the whole 96 px image (first block strided, so the same 12 x 12 grid).

    One more conv block (64 -> 64) stands in for the localisation net, so the baseline is not the
    smaller model: 98k weights against the STN's 77k.
    """

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__(num_classes, first_stride=2, extra=True)  # 96 -> 48, 24, 12, 12, 12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(_check_input(x))


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
