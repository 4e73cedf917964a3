"""The two small CNNs trained on ShapeScenes: a CAM-ready classifier and an FCN-style segmenter.

Both take (B, 3, H, W) images in [0, 1] and normalise inside, and carry the attributes every
model in guidewidgets has: ``classes``, ``task``, ``default_explain_layer`` and
``default_guide_layer`` (dotted module names).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .scenes import CLASSES, MASK_CLASSES

__all__ = ["ShapeClassifier", "ShapeSegmenter"]

# Channel statistics of ShapeScenes images (measured on 2,048 scenes); rounding is harmless.
_MEAN = (0.45, 0.44, 0.41)
_STD = (0.25, 0.21, 0.25)


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Normalize(nn.Module):
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _tracing() -> bool:
    # torch.fx (incremental occlusion traces the model) passes proxies, not tensors: nothing to check.
    trace = torch.fx._symbolic_trace
    return getattr(trace, "is_fx_symbolic_tracing", trace.is_fx_tracing)()


def _check_input(x: torch.Tensor) -> None:
    if _tracing():
        return
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a (B, 3, H, W) float tensor in [0, 1], got {shape}; add a batch dim with x[None]")
    if not x.is_floating_point():
        raise TypeError(f"expected a float tensor in [0, 1], got {x.dtype}; use x.float() / 255 for uint8 images")


def _encoder(out: int, dilation: int = 1) -> nn.Sequential:
    """The blocks both shapes models start with (96 px -> 12 x 12), the fifth with ``out`` channels.

    Built in block order, so a seeded model gets the weights the recipes have always given it.
    """
    return nn.Sequential(
        OrderedDict(
            block1=_conv(3, 16, stride=2),  # 48
            block2=_conv(16, 32, stride=2),  # 24
            block3=_conv(32, 64),
            block4=_conv(64, 64, stride=2),  # 12
            block5=_conv(64, out, dilation=dilation),
        )
    )


class _ShapesNet(nn.Module):
    """What both shapes models share: their class names, the input normalisation, ``meta`` (set by
    :func:`guidewidgets.zoo.load`) and the layers that explanation and guiding default to."""

    task: str
    classes: list[str]
    meta: dict
    default_explain_layer: str
    default_guide_layer: str

    def __init__(self, classes: list[str]) -> None:
        super().__init__()
        self.classes = list(classes)
        self.normalize = _Normalize()


class ShapeClassifier(_ShapesNet):
    """Five conv blocks (96 px -> 12 x 12 x 128, receptive field 39 px), global average pool, one linear layer.

    The GAP + linear head is what CAM needs: ``fc.weight[c] @ features(x)`` is class c's map.
    (A dilated last block, receptive field 55 px, classified as well but put CAM's peak beside the
    objects, in the gaps between a star's points, far more often; hence the plain one.)
    """

    task = "classification"
    default_explain_layer = default_guide_layer = "features"

    def __init__(self, num_classes: int = len(CLASSES)) -> None:
        super().__init__(CLASSES)
        self.features = _encoder(128)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x)
        return self.fc(self.pool(self.features(self.normalize(x))).flatten(1))


class ShapeSegmenter(_ShapesNet):
    """Fully convolutional, FCN-style: encoder (96 px -> 12 x 12), a 32-channel bottleneck, a
    transposed-convolution decoder to class scores at half the input size, and a bilinear x2
    upsampling to the input size (as FCN-8s ends with a bilinear upsampling), without skip
    connections.

    The bottleneck is where Guide Me's guiding block goes (``default_guide_layer``): everything
    after it (the tail) is two small transposed convolutions, so optimising a guide there takes
    milliseconds per step on a CPU. (A decoder to full resolution made only 1-px outline
    mistakes, which a hint cannot fix; the coarser scores make region-sized ones, as FCN-8s
    does on VOC.) The input side must be a multiple of 8.
    """

    task = "segmentation"
    default_explain_layer = default_guide_layer = "bottleneck"

    def __init__(self, num_classes: int = len(MASK_CLASSES)) -> None:
        super().__init__(MASK_CLASSES)
        self.encoder = _encoder(64, dilation=2)  # block5 dilated: wider context at 12 x 12
        self.bottleneck = nn.Sequential(nn.Conv2d(64, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.decoder = nn.Sequential(
            OrderedDict(
                up1=_up(32, 32),  # 24
                up2=nn.ConvTranspose2d(32, num_classes, 4, stride=2, padding=1),  # 48
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x)
        if not _tracing() and (x.shape[-1] % 8 or x.shape[-2] % 8):
            raise ValueError(
                f"image height and width must be multiples of 8, got {tuple(x.shape[-2:])}; resize or crop it"
            )
        scores = self.decoder(self.bottleneck(self.encoder(self.normalize(x))))
        return F.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


ShapesModel = ShapeClassifier | ShapeSegmenter
