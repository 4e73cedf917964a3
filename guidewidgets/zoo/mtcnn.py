"""MTCNN face detection with real weights: our own P-Net / R-Net / O-Net on the weights that the
``facenet-pytorch`` wheel ships as data files.

MTCNN (Zhang et al. 2016, "Joint face detection and alignment using multitask cascaded
convolutional networks") is classification + localization in three stages:

1. **P-Net**, fully convolutional: on every level of an image pyramid it scores each 12 x 12 window
   (stride 2) face / no-face and regresses a box correction; windows above a threshold become
   proposals, thinned by non-maximum suppression (NMS) per scale and across scales.
2. **R-Net** re-scores each proposal cropped to 24 x 24 and corrects its box again.
3. **O-Net** does the same at 48 x 48 and adds five landmarks (eyes, nose, mouth corners).

Only the weight files are used (``facenet_pytorch/data/{pnet,rnet,onet}.pt``, found without
importing the package, whose pins would downgrade torch); the modules and the pipeline here are
written from the paper. Install the weights with ``pip install --no-deps facenet-pytorch==2.6.0``.

Every net takes images (B, 3, H, W) in [0, 1] (normalised inside as (255 x - 127.5) / 128, the
training convention) and returns ``(face logits, box regression[, landmarks])``; wrap one in
:class:`FaceClassifier` to explain its face / no-face score with any registered method.

>>> mtcnn = load_mtcnn()
>>> img = photo("astronaut", tensor=True)
>>> faces = mtcnn.detect(img)  # {"boxes", "scores", "landmarks"}
>>> crops = mtcnn.face_crops(img, faces["boxes"])  # (N, 3, 48, 48), what O-Net saw
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms, roi_align

from .adapters import WeightsUnavailableError

__all__ = [
    "INSTALL_HINT",
    "PNet",
    "RNet",
    "ONet",
    "MTCNN",
    "FaceClassifier",
    "weights_dir",
    "load_mtcnn",
    "pnet_output_size",
]

INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0"
#: P-Net's window (px) and stride on each pyramid level.
CELL, STRIDE = 12, 2


def weights_dir() -> Path:
    """The folder holding ``pnet.pt``, ``rnet.pt`` and ``onet.pt`` (inside the installed
    facenet-pytorch package, located without importing it); WeightsUnavailableError if absent."""
    spec = importlib.util.find_spec("facenet_pytorch")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        d = Path(loc) / "data"
        if all((d / f"{n}.pt").is_file() for n in ("pnet", "rnet", "onet")):
            return d
    raise WeightsUnavailableError(
        "the MTCNN weights (pnet.pt, rnet.pt, onet.pt) ship in the facenet-pytorch wheel, which is not "
        f"installed; install its data without its pinned dependencies: `{INSTALL_HINT}`"
    )


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x * 255.0 - 127.5) * 0.0078125


def _flatten_transposed(x: torch.Tensor) -> torch.Tensor:
    # Why (W, H, C) order: the nets were trained in MATLAB (column-major) and the dense weights
    # expect the feature map flattened width-first. Checked on the astronaut: flattened (C, H, W)
    # the cascade reports 42 "faces" at >= 0.71, most on her suit; this order, one.
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


# One conv stage per row: (in, out, kernel, pool (kernel, stride) or None). The attribute names
# (conv1, prelu1, pool1, ...) are the keys of the shipped state dicts, so they are made from the row.
_Stage = tuple[int, int, int, tuple[int, int] | None]


def _add_stages(net: nn.Module, stages: tuple[_Stage, ...]) -> None:
    for i, (cin, cout, k, pool) in enumerate(stages, 1):
        net.add_module(f"conv{i}", nn.Conv2d(cin, cout, k))
        net.add_module(f"prelu{i}", nn.PReLU(cout))
        if pool is not None:
            net.add_module(f"pool{i}", nn.MaxPool2d(*pool, ceil_mode=True))


def _run_stages(net: nn.Module, x: torch.Tensor, count: int) -> torch.Tensor:
    h = _normalise(x)
    for i in range(1, count + 1):
        h = getattr(net, f"prelu{i}")(getattr(net, f"conv{i}")(h))
        pool = getattr(net, f"pool{i}", None)
        h = h if pool is None else pool(h)
    return h


class PNet(nn.Module):
    """Proposal net, fully convolutional: (B, 3, H, W) -> face logits (B, 2, h, w) and box
    corrections (B, 4, h, w), one per 12 x 12 window at stride 2 (see :func:`pnet_output_size`)."""

    _STAGES: tuple[_Stage, ...] = ((3, 10, 3, (2, 2)), (10, 16, 3, None), (16, 32, 3, None))

    def __init__(self) -> None:
        super().__init__()
        _add_stages(self, self._STAGES)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = _run_stages(self, x, len(self._STAGES))
        return self.conv4_1(h), self.conv4_2(h)


class _CropNet(nn.Module):
    """R-Net and O-Net: conv stages on a fixed-size crop, one dense layer with PReLU, then one
    linear head per output. Layer n after the stages is ``dense{n}`` / ``prelu{n}``, its heads
    ``dense{n+1}_1``, ``dense{n+1}_2`` ..., the names of the shipped state dicts."""

    size: int
    _STAGES: tuple[_Stage, ...]
    _DENSE: tuple[int, int]  # (flattened features, width of the dense layer)
    _HEADS: tuple[int, ...]  # outputs of each head

    def __init__(self) -> None:
        super().__init__()
        _add_stages(self, self._STAGES)
        n = len(self._STAGES) + 1
        self.add_module(f"dense{n}", nn.Linear(*self._DENSE))
        self.add_module(f"prelu{n}", nn.PReLU(self._DENSE[1]))
        for i, out in enumerate(self._HEADS, 1):
            self.add_module(f"dense{n + 1}_{i}", nn.Linear(self._DENSE[1], out))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n = len(self._STAGES) + 1
        h = _flatten_transposed(_run_stages(self, x, n - 1))
        h = getattr(self, f"prelu{n}")(getattr(self, f"dense{n}")(h))
        return tuple(getattr(self, f"dense{n + 1}_{i}")(h) for i in range(1, len(self._HEADS) + 1))


class RNet(_CropNet):
    """Refinement net: 24 x 24 crops (B, 3, 24, 24) -> face logits (B, 2), box corrections (B, 4)."""

    size = 24
    _STAGES = ((3, 28, 3, (3, 2)), (28, 48, 3, (3, 2)), (48, 64, 2, None))
    _DENSE, _HEADS = (576, 128), (2, 4)


class ONet(_CropNet):
    """Output net: 48 x 48 crops -> face logits (B, 2), box corrections (B, 4) and landmarks
    (B, 10): five x then five y, as fractions of the crop (eyes, nose, mouth corners)."""

    size = 48
    _STAGES = ((3, 32, 3, (3, 2)), (32, 64, 3, (3, 2)), (64, 64, 3, (2, 2)), (64, 128, 2, None))
    _DENSE, _HEADS = (1152, 256), (2, 4, 10)


def pnet_output_size(n: int) -> int:
    """P-Net's output grid along a side of ``n`` >= 12 input pixels: conv 3 (n - 2), max-pool 2
    with ceil (ceil((n - 2) / 2)), two more conv 3 (- 4)."""
    if n < CELL:
        raise ValueError(f"P-Net needs at least {CELL} px per side, got {n}")
    return math.ceil((n - 2) / 2) - 4


class FaceClassifier(nn.Module):
    """One MTCNN net as a plain face / no-face classifier (logits (B, 2) or (B, 2, h, w) for
    P-Net), so the explanation methods can explain its face score: class 1 is "face"."""

    classes = ["no face", "face"]

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.task = "segmentation" if isinstance(net, PNet) else "classification"
        # Why conv3: the last map with spatial detail (O-Net 8 x 8 on a 48 px crop, R-Net 9 x 9).
        self.default_explain_layer = "net.conv3"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[0]


def _square(boxes: torch.Tensor) -> torch.Tensor:
    # Why: R-Net and O-Net see square crops; the longer side keeps the whole face.
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    cx, cy = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    return torch.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], 1)


def _regress(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    # Box corrections are offsets of each corner in units of the box's width / height.
    wh = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + reg * wh


class MTCNN(nn.Module):
    """The three-stage cascade. :meth:`detect` runs the whole pipeline on one image."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()

    def _proposals(self, x: torch.Tensor, min_size: float, factor: float, threshold: float) -> torch.Tensor:
        """P-Net on the image pyramid: (N, 5) corrected boxes + score after NMS per scale (0.5) and overall (0.7)."""
        h, w = x.shape[-2:]
        # Why 12 / min_size: the smallest face of interest must fill P-Net's 12 px window.
        scale = CELL / min_size
        found = []
        while min(h, w) * scale >= CELL:
            size = (math.ceil(h * scale), math.ceil(w * scale))
            level = F.interpolate(x, size=size, mode="area")
            logits, reg = self.pnet(level)
            prob = logits.softmax(1)[0, 1]
            ys, xs = torch.nonzero(prob > threshold, as_tuple=True)
            if len(ys):
                corner = torch.stack([xs, ys, xs, ys], 1).float() * STRIDE
                boxes = (corner + torch.tensor([0.0, 0.0, CELL, CELL])) / scale
                score = prob[ys, xs]
                keep = nms(boxes, score, 0.5)
                found.append(torch.cat([boxes[keep], score[keep, None], reg[0, :, ys[keep], xs[keep]].T], 1))
            scale *= factor
        if not found:
            return torch.zeros(0, 5)
        allb = torch.cat(found)
        allb = allb[nms(allb[:, :4], allb[:, 4], 0.7)]
        # Why regress only now: the windows are suppressed on the pyramid's grid, then corrected.
        return torch.cat([_regress(allb[:, :4], allb[:, 5:]), allb[:, 4:5]], 1)

    def _crops(self, x: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
        # Why roi_align: batched crop + resize; pixels outside the image read as 0 (black), as the
        # original pads; adaptive sampling averages like an area resize when shrinking.
        rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
        return roi_align(x, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)

    @staticmethod
    def _image(image: torch.Tensor, who: str) -> torch.Tensor:
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"{who}() takes one RGB image tensor (3, H, W) in [0, 1]; e.g. zoo.photo('astronaut', tensor=True)"
            )
        return image.detach().float().cpu().clamp(0, 1)[None]

    @staticmethod
    def _check(min_size: float, factor: float) -> None:
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        if min_size < CELL:
            raise ValueError(f"min_size must be at least {CELL} px (P-Net's window), got {min_size}")

    @torch.no_grad()
    def propose(
        self, image: torch.Tensor, min_size: float = 20.0, factor: float = 0.709, threshold: float = 0.6
    ) -> torch.Tensor:
        """The first stage alone: P-Net's proposals in one image (3, H, W) in [0, 1] as (N, 5) rows
        x0, y0, x1, y1 (corrected by P-Net's regression), face probability."""
        x = self._image(image, "propose")
        self._check(min_size, factor)
        return self._proposals(x, min_size, factor, threshold)

    @torch.no_grad()
    def face_crops(self, image: torch.Tensor, boxes: torch.Tensor, size: int = 48) -> torch.Tensor:
        """Square crops (N, 3, size, size) of one image (3, H, W) around ``boxes`` (N, 4), as R-Net
        (24 px) and O-Net (48 px) see them: the longer side kept, black outside the image."""
        x = self._image(image, "face_crops")
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be (N, 4) rows x0, y0, x1, y1, got {tuple(boxes.shape)}")
        return self._crops(x, _square(boxes.detach().float().cpu()), int(size))

    @torch.no_grad()
    def detect(
        self,
        image: torch.Tensor,
        min_size: float = 20.0,
        factor: float = 0.709,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
    ) -> dict[str, torch.Tensor]:
        """Faces in one image (3, H, W) in [0, 1]: ``boxes`` (N, 4) x0, y0, x1, y1 in pixels,
        ``scores`` (N,) O-Net face probabilities, ``landmarks`` (N, 5, 2) (x, y) of the left eye,
        right eye, nose, left and right mouth corner; sorted by score.

        ``min_size``: the smallest face side (px) searched; ``factor``: the pyramid's scale step;
        ``thresholds``: face probability each stage needs (the paper's defaults)."""
        x = self._image(image, "detect")
        self._check(min_size, factor)
        empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "landmarks": torch.zeros(0, 5, 2)}
        # No train/eval switch: the three nets have no BatchNorm or Dropout, so the mode changes nothing.
        cand = self._proposals(x, min_size, factor, thresholds[0])
        if not len(cand):
            return empty
        boxes = _square(cand[:, :4])
        logits, reg = self.rnet(self._crops(x, boxes, RNet.size))
        prob = logits.softmax(1)[:, 1]
        keep = prob > thresholds[1]
        boxes, prob, reg = boxes[keep], prob[keep], reg[keep]
        keep = nms(boxes, prob, 0.7)
        boxes = _square(_regress(boxes[keep], reg[keep]))
        if not len(boxes):
            return empty
        logits, reg, marks = self.onet(self._crops(x, boxes, ONet.size))
        prob = logits.softmax(1)[:, 1]
        keep = prob > thresholds[2]
        boxes, prob, reg, marks = boxes[keep], prob[keep], reg[keep], marks[keep]
        wh = boxes[:, 2:] - boxes[:, :2]
        points = torch.stack([marks[:, :5], marks[:, 5:]], 2) * wh[:, None] + boxes[:, None, :2]
        boxes = _regress(boxes, reg)
        keep = nms(boxes, prob, 0.7)
        return {"boxes": boxes[keep], "scores": prob[keep], "landmarks": points[keep]}


def load_mtcnn() -> MTCNN:
    """The MTCNN cascade with the real weights, in eval mode (every tensor loaded strictly)."""
    d = weights_dir()
    model = MTCNN()
    for name, net in (("pnet", model.pnet), ("rnet", model.rnet), ("onet", model.onet)):
        state = torch.load(d / f"{name}.pt", map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    return model.eval()
