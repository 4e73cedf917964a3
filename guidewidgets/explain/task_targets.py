"""Targets beyond a class index: a class inside a region of a segmentation output, multi-label
(sigmoid) classes, and one box of a torchvision detector.

The first two are callables ``target(output) -> (B,) scores`` that every method accepts. A
detector returns a list of dicts, not logits, so :class:`DetectorBoxScore` wraps it as a model
whose output is the matched box's score (B, 1): explain that model (with ``target=0``).

>>> t = segmentation_target(2, box=(10, 20, 50, 60))            # class 2 inside a box
>>> maps = explain.explain(segmenter, x, "grad-cam", target=t)
>>> det = DetectorBoxScore(fasterrcnn, box=dets[0]["boxes"][0], label=dets[0]["labels"][0])
>>> maps = explain.explain(det, x, "grad-cam")                   # layer: the backbone's last map
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .. import hooks
from ..metrics.boxes import box_iou  # re-exported: the package's one box IoU, pairwise (N, M)

__all__ = ["segmentation_target", "RegionTarget", "multilabel_target", "DetectorBoxScore", "detections", "box_iou"]

Box = Sequence[float] | torch.Tensor


def _box(box: Box, what: str = "box") -> torch.Tensor:
    try:
        b = torch.as_tensor(box, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{what} must be four numbers (x0, y0, x1, y1) in pixels, got {type(box).__name__}") from None
    if b.numel() != 4 or not torch.isfinite(b).all():
        raise ValueError(f"{what} must be four finite numbers (x0, y0, x1, y1) in pixels, got {box!r}")
    if not (b[2] > b[0] and b[3] > b[1]):
        raise ValueError(f"{what} {b.tolist()} is empty: it needs x1 > x0 and y1 > y0 (corners, not width/height)")
    return b


def _check_inside(b: torch.Tensor, h: int, w: int, what: str = "box") -> None:
    x0, y0, x1, y1 = b.tolist()
    if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
        raise ValueError(
            f"{what} {[round(v, 2) for v in (x0, y0, x1, y1)]} lies (partly) outside the {h}x{w} image; "
            f"corners must satisfy 0 <= x0 < x1 <= {w} and 0 <= y0 < y1 <= {h} (pixels, exclusive ends)"
        )


class RegionTarget:
    """Score of class ``cls`` summed over a region of a dense output (B, K, h, w).

    The region is a ``mask`` (H, W) or (B, H, W) (bool or weights) or a ``box`` (x0, y0, x1, y1)
    with exclusive ends, both in the image's pixels; ``size`` is the image's (H, W) when the
    output's resolution differs from it (otherwise the output's size is taken as the image's).
    A mask of another size than the output is resized by area averaging.
    """

    def __init__(
        self, cls: int, mask: torch.Tensor | None = None, box: Box | None = None, size: tuple[int, int] | None = None
    ) -> None:
        if not isinstance(cls, numbers.Integral) or isinstance(cls, bool) or cls < 0:
            raise TypeError(f"cls must be a class index (int >= 0), got {cls!r}")
        if (mask is None) == (box is None):
            raise ValueError("give exactly one region: mask=(H, W) tensor or box=(x0, y0, x1, y1)")
        self.cls: int = int(cls)
        self.size: tuple[int, int] | None = size
        self.box: torch.Tensor | None = _box(box) if box is not None else None
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dim() not in (2, 3):
                raise TypeError("mask must be a (H, W) or (B, H, W) tensor (bool or float weights)")
            if size is None:
                self.size = (int(mask.shape[-2]), int(mask.shape[-1]))
        self.mask: torch.Tensor | None = mask
        if self.box is not None and size is not None:
            _check_inside(self.box, *size)

    def region(self, out: torch.Tensor) -> torch.Tensor:
        """The region as weights (1 or B, h, w) on the output's grid and device."""
        h, w = out.shape[-2:]
        size = self.size or (h, w)
        if self.box is not None:
            _check_inside(self.box, *size)
            # the box's fraction of each output cell (area of overlap), so boxes need not align
            x0, y0, x1, y1 = self.box.tolist()
            sy, sx = size[0] / h, size[1] / w
            ys = torch.arange(h, device=out.device, dtype=out.dtype)
            xs = torch.arange(w, device=out.device, dtype=out.dtype)
            cover_y = ((ys + 1) * sy).clamp(max=y1) - (ys * sy).clamp(min=y0)
            cover_x = ((xs + 1) * sx).clamp(max=x1) - (xs * sx).clamp(min=x0)
            m = (cover_y.clamp(min=0) / sy)[:, None] * (cover_x.clamp(min=0) / sx)[None, :]
            return m[None]
        assert self.mask is not None  # one of box and mask is set (checked in __init__)
        mask = self.mask.to(device=out.device, dtype=out.dtype)
        mask = mask[None] if mask.dim() == 2 else mask
        if tuple(mask.shape[-2:]) != (h, w):
            mask = F.adaptive_avg_pool2d(mask[:, None], (h, w))[:, 0]
        return mask

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"a segmentation target needs a dense output (B, K, H, W), but the model returns {shape}; "
                "for a classifier use an int class target"
            )
        if not 0 <= self.cls < out.shape[1]:
            raise ValueError(f"class {self.cls} is out of range: the model has {out.shape[1]} classes")
        m = self.region(out)
        if m.shape[0] not in (1, out.shape[0]):
            raise ValueError(f"mask holds {m.shape[0]} regions but the batch has {out.shape[0]} images")
        return (out[:, self.cls] * m).sum((1, 2))


def segmentation_target(
    cls: int, mask: torch.Tensor | None = None, box: Box | None = None, size: tuple[int, int] | None = None
) -> RegionTarget:
    """Target "class ``cls`` inside this mask / box" for a segmentation model (see :class:`RegionTarget`)."""
    return RegionTarget(cls, mask=mask, box=box, size=size)


def multilabel_target(classes: int | Sequence[int]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Sum of the sigmoid probabilities of ``classes`` (for multi-label classifiers trained with
    a sigmoid per class): ``target(out) = sum_c sigmoid(out[:, c])``."""
    cls: list[int] = [classes] if isinstance(classes, int) else list(classes)
    if not cls or not all(isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 0 for c in cls):
        raise TypeError(f"classes must be a class index or a non-empty sequence of them, got {classes!r}")
    idx = [int(c) for c in cls]

    def target(out: torch.Tensor) -> torch.Tensor:
        if out.dim() != 2:
            raise ValueError(f"a multi-label target needs (B, K) logits, got shape {tuple(out.shape)}")
        if max(idx) >= out.shape[1]:
            raise ValueError(f"class {max(idx)} is out of range: the model has {out.shape[1]} classes")
        return torch.sigmoid(out[:, idx]).sum(1)

    return target


def _check_detections(out: object, model: nn.Module) -> list[Mapping[str, torch.Tensor]]:
    ok = isinstance(out, (list, tuple)) and all(isinstance(d, Mapping) and "boxes" in d and "scores" in d for d in out)
    if not ok:
        what = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise TypeError(
            f"{type(model).__name__} returns {what}, not detections: a detection target needs a torchvision "
            "detector (Faster R-CNN, RetinaNet, FCOS, ...) that returns [{'boxes', 'labels', 'scores'}] per image. "
            "For a classifier use an int class target; for a segmenter, segmentation_target"
        )
    return list(cast(Sequence[Mapping[str, torch.Tensor]], out))


def detections(detector: nn.Module, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    """The detector's detections for each image of ``x`` (B, 3, H, W), in eval mode without
    gradients: the boxes a user picks from."""
    with hooks.model_lock(detector), hooks.eval_mode(detector), torch.no_grad():
        out = _check_detections(detector(x), detector)
    return [{k: v.detach() for k, v in d.items()} for d in out]


class DetectorBoxScore(nn.Module):
    """A torchvision detector seen as a model with one output: the score of the detection that
    matches ``box`` (x0, y0, x1, y1, image pixels; one for all images or (B, 4)) best by IoU,
    among those of ``label`` (any label if None), or 0 when none reaches ``min_iou``.

    Explain it like a classifier with ``target=0``. Its ``default_explain_layer`` is the deepest
    backbone map. The detector itself is not modified (it is held, not copied); detection models
    resize images internally, so maps are at that resolution, upsampled to the input's.
    """

    def __init__(
        self,
        detector: nn.Module,
        box: Box,
        label: int | torch.Tensor | None = None,
        min_iou: float = 0.5,
        add_iou: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(detector, nn.Module):
            raise TypeError(f"detector must be a torch.nn.Module, got {type(detector).__name__}")
        boxes = torch.as_tensor(box, dtype=torch.float32) if not isinstance(box, torch.Tensor) else box.float()
        boxes = boxes.reshape(-1, 4) if boxes.numel() % 4 == 0 and boxes.numel() > 0 else boxes
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"box must be (x0, y0, x1, y1) or a (B, 4) tensor of them, got shape {tuple(boxes.shape)}")
        for i, b in enumerate(boxes):
            _box(b, f"box {i}" if len(boxes) > 1 else "box")
        if not 0 <= min_iou <= 1:
            raise ValueError(f"min_iou must lie in [0, 1], got {min_iou!r}")
        self.detector = detector
        self.boxes: torch.Tensor = boxes.detach().clone()
        self.label = None if label is None else int(label)
        self.min_iou = float(min_iou)
        self.add_iou = bool(add_iou)

    @property
    def default_explain_layer(self) -> str | None:
        body = getattr(getattr(self.detector, "backbone", None), "body", None)
        returned = getattr(body, "return_layers", None)
        if isinstance(returned, Mapping) and returned:
            return "detector.backbone.body." + list(returned)[-1]
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        boxes = self.boxes.to(device=x.device, dtype=x.dtype)
        if len(boxes) not in (1, n) and n % len(boxes):
            raise ValueError(f"{len(boxes)} boxes for a batch of {n} images: give one box, or one per image")
        for b in boxes:
            _check_inside(b, h, w)
        out = _check_detections(self.detector(x), self.detector)
        scores = []
        for i, d in enumerate(out):
            want = boxes[i % len(boxes)][None]
            keep = torch.ones(len(d["boxes"]), dtype=torch.bool, device=x.device)
            if self.label is not None and "labels" in d:
                keep = d["labels"] == self.label
            anchor = d["scores"].sum() * 0  # zero, but on the graph when anything is
            if not keep.any():
                scores.append(anchor)
                continue
            ious = box_iou(want, d["boxes"])[0]
            ious = torch.where(keep, ious, torch.full_like(ious, -1.0))
            j = int(ious.detach().argmax())
            best = float(ious[j].detach())
            if best < self.min_iou or math.isnan(best):
                scores.append(anchor)
                continue
            s = d["scores"][j]
            scores.append(s + ious[j] if self.add_iou else s)
        return torch.stack(scores)[:, None]
