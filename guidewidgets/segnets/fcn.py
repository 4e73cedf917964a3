"""Sliding-window classification vs a fully convolutional network, the down/up path, semantic vs instance.

Sliding window: classify the centre pixel of a window cut around every pixel, one forward per
pixel, nothing shared between overlapping windows. A fully convolutional network computes all
pixels in one forward (the convolutions are shared across positions), downsampling to keep it
cheap and upsampling back to the input size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import FeatureMap, eval_mode, feature_maps, model_lock, model_output

__all__ = ["sliding_window_labels", "fcn_labels", "path_shapes", "semantic_from_instances", "same_class_groups"]


def _check_image(image: torch.Tensor) -> None:
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be one (C, H, W) tensor, got {shape}; use x[0] for a batch")


def fcn_labels(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Per-pixel labels (H, W) from one forward of a segmenter."""
    _check_image(image)
    with model_lock(model), eval_mode(model), torch.no_grad():
        return model_output(model(image[None]))[0].argmax(0)


def sliding_window_labels(
    model: nn.Module, image: torch.Tensor, *, window: int = 32, stride: int = 4, batch: int = 256
) -> tuple[torch.Tensor, int]:
    """Label of every ``stride``-th pixel from its own ``window x window`` crop (reflect-padded at
    the border): ``model`` is run on the crop and the crop's centre pixel is read. Returns
    (labels (H, W), nearest-upsampled from the stride grid; the number of forwards, one per crop)."""
    _check_image(image)
    if window < 2 or window % 2 or stride < 1:
        raise ValueError(f"window must be even and >= 2, stride >= 1; got window={window}, stride={stride}")
    H, W = image.shape[-2:]
    half = window // 2
    padded = F.pad(image[None], (half, half, half, half), mode="reflect")[0]
    ys = list(range(stride // 2, H, stride))
    xs = list(range(stride // 2, W, stride))
    centres = [(y, x) for y in ys for x in xs]
    out = []
    with model_lock(model), eval_mode(model), torch.no_grad():
        for s in range(0, len(centres), batch):
            crops = torch.stack([padded[:, y : y + window, x : x + window] for y, x in centres[s : s + batch]])
            out.append(model_output(model(crops))[:, :, half, half].argmax(1))
    grid = torch.cat(out).view(len(ys), len(xs))
    # Why no offset: centre stride//2 + i*stride is the middle of cell [i*stride, (i+1)*stride).
    labels = grid.repeat_interleave(stride, 0).repeat_interleave(stride, 1)
    return labels[:H, :W], len(centres)


def path_shapes(model: nn.Module, x: torch.Tensor, depth: int = 2) -> list[FeatureMap]:
    """The spatial feature maps along the model (``hooks.feature_maps``), only modules at most
    ``depth`` names deep. A block whose output is its parent's output is listed under the
    parent's name (the segmenter's block5 as ``encoder``, up2 as ``decoder``)."""
    return [f for f in feature_maps(model, x) if f.name.count(".") < depth]


def semantic_from_instances(instances: torch.Tensor, box_labels: torch.Tensor) -> torch.Tensor:
    """Semantic mask (0 = background, class + 1) from an instance map (0 = background, i + 1 =
    object i) and each object's class: forgetting *which* object, keeping *what*."""
    if instances.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise TypeError(f"instances must be an integer map, got {instances.dtype}")
    if int(instances.max()) > box_labels.numel():
        raise ValueError(f"instance ids go up to {int(instances.max())} but only {box_labels.numel()} box_labels given")
    lut = torch.cat([torch.zeros(1, dtype=torch.long), box_labels.long() + 1])
    return lut[instances.long()]


def same_class_groups(box_labels: torch.Tensor) -> dict[int, int]:
    """{class: number of objects} for classes with two or more objects in a scene: the objects a
    semantic mask paints with one colour and only an instance map tells apart."""
    counts = torch.bincount(box_labels.long())
    return {int(c): int(n) for c, n in enumerate(counts.tolist()) if n >= 2}
