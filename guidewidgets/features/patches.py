"""Maximally activating patches: for each channel of a layer, the k dataset positions where it
fires most, and the input patches (receptive fields) they see.

The search walks the dataset in batches and keeps a running top-k per channel, so its memory is
(channels x (k + batch positions)) whatever the dataset size. Ties are broken by dataset order
(stable sorts), so the batched search returns exactly what one pass over the whole set returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..checks import check_int
from ..explain.targets import check_input
from ._common import Data, Progress, batches, check_channels, data_len, forward_to, locked_eval, model_device
from .receptive import Box, ReceptiveField, box_of, receptive_field
from .space import check_data

__all__ = ["TopPatches", "top_patches", "crop"]


@dataclass
class TopPatches:
    """Result of :func:`top_patches`. Row r is ``channels[r]``, best first:

    - ``values`` (R, k): the activations; ``images`` (R, k): dataset indices;
    - ``positions`` (R, k, 2): (row, col) on the layer's map;
    - ``boxes`` (R, k, 4): ``[x0, y0, x1, y1]`` of each position's receptive field in the image
      (unclipped for an analytic field, so every patch has the same size; use :func:`crop`).

    Fewer than k candidates (a tiny dataset) leave rows padded with ``values = -inf`` and ``images = -1``.
    """

    layer: str
    channels: list[int]
    values: torch.Tensor
    images: torch.Tensor
    positions: torch.Tensor
    boxes: torch.Tensor
    field: ReceptiveField | None

    def row(self, channel: int) -> int:
        """Row of ``channel`` in the tensors."""
        if channel not in self.channels:
            raise ValueError(f"channel {channel} was not searched; searched: {self.channels[:8]}...")
        return self.channels.index(channel)

    def patches(self, data: Data, channel: int) -> list[torch.Tensor]:
        """The (3, rh, rw) input patches of ``channel``'s top positions, best first (zero outside the image)."""
        r = self.row(channel)
        out = []
        for idx, box in zip(self.images[r].tolist(), self.boxes[r].tolist()):
            if idx < 0:
                continue
            item = data[idx]
            image = item["image"] if isinstance(item, dict) else item
            out.append(crop(image, tuple(box)))  # type: ignore[arg-type]
        return out


def crop(image: torch.Tensor, box: Box) -> torch.Tensor:
    """``image[:, y0:y1, x0:x1]`` of a (C, H, W) image, zero where the box leaves the image."""
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"crop takes one image (C, H, W), got {shape}")
    if image.is_floating_point() and not bool(torch.isfinite(image).all()):
        raise ValueError("image holds NaN or inf values; replace them, e.g. torch.nan_to_num(image)")
    if isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 4:
        raise ValueError(f"box must be [x0, y0, x1, y1], got {box!r}")
    x0, y0, x1, y1 = (check_int(v, "a box coordinate") for v in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box {[x0, y0, x1, y1]} is inverted: a box is [x0, y0, x1, y1] with x1 >= x0 and y1 >= y0")
    c, H, W = image.shape
    out = torch.zeros((c, y1 - y0, x1 - x0), dtype=image.dtype)
    sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, H), min(x1, W)
    if sy1 > sy0 and sx1 > sx0:
        out[:, sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[:, sy0:sy1, sx0:sx1]
    return out


def _merge(
    best_v: torch.Tensor, best_i: torch.Tensor, cand_v: torch.Tensor, cand_i: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top k of kept and new candidates per row. Kept ones come first (earlier in the dataset),
    so a stable sort keeps the earlier of equal values: the same order one pass over all gives."""
    v = torch.cat([best_v, cand_v], 1)
    i = torch.cat([best_i, cand_i], 1)
    order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
    return v.gather(1, order), i.gather(1, order)


def top_patches(
    model: nn.Module,
    layer: str | nn.Module,
    data: Data,
    channels: int | Sequence[int] | None = None,
    k: int = 9,
    batch_size: int = 64,
    per_image: bool = True,
    progress: Progress | None = None,
) -> TopPatches:
    """The ``k`` positions over ``data`` where each of ``channels`` (default: all) of ``layer`` fires most.

    ``per_image=True`` keeps at most one position per image (its strongest), as the lecture's
    figures do; ``False`` lets one image give several. ``progress(done, total)`` is called after
    each batch. ``data`` is a ShapeScenes, a (N, 3, H, W) tensor, or a sequence of (3, H, W)
    images or dicts with an ``"image"``.
    """
    k, batch_size = check_int(k, "k", 1), check_int(batch_size, "batch_size", 1)
    check_data(data)
    n = data_len(data)
    device = model_device(model)
    chans: list[int] | None = None
    best_v = best_i = torch.empty(0)
    hw = (0, 0)
    example = torch.empty(0)
    with locked_eval(model), torch.no_grad():
        for start, x, _y in batches(data, batch_size):
            # Why check: a NaN pixel would become a NaN "top" activation and reorder the ranking.
            a = forward_to(model, layer, check_input(model, x.to(device))).float()
            if chans is None:
                chans = check_channels(channels, a.shape[1])
                best_v = torch.full((len(chans), 0), float("-inf"))
                best_i = torch.zeros((len(chans), 0), dtype=torch.long)
                hw = (int(a.shape[2]), int(a.shape[3]))
                # Why an image, not its size: the receptive field's probe needs the model's channels.
                example = x[:1]
            a = a[:, chans].cpu()
            B = a.shape[0]
            flat = a.permute(1, 0, 2, 3).reshape(len(chans), B, -1)  # (R, B, h*w)
            if per_image:
                v, pos = flat.max(2)  # first maximum of each image
                idx = (start + torch.arange(B)) * (hw[0] * hw[1]) + pos
            else:
                v = flat.reshape(len(chans), -1)
                idx = start * hw[0] * hw[1] + torch.arange(v.shape[1]).expand_as(v)
            best_v, best_i = _merge(best_v, best_i, v, idx, k)
            if progress is not None:
                progress(min(start + B, n), n)
    assert chans is not None
    if best_v.shape[1] < k:  # fewer candidates than k: pad so every row has k entries
        pad = k - best_v.shape[1]
        best_v = torch.cat([best_v, torch.full((len(chans), pad), float("-inf"))], 1)
        best_i = torch.cat([best_i, torch.zeros((len(chans), pad), dtype=torch.long)], 1)
    images = torch.div(best_i, hw[0] * hw[1], rounding_mode="floor")
    cell = best_i % (hw[0] * hw[1])
    positions = torch.stack([cell // hw[1], cell % hw[1]], -1)
    missing = torch.isinf(best_v)
    images[missing] = -1
    field = receptive_field(model, layer, example)
    boxes = torch.zeros((*best_v.shape, 4), dtype=torch.long)
    cache: dict[tuple[int, int], Box] = {}
    for r in range(best_v.shape[0]):
        for q in range(best_v.shape[1]):
            if missing[r, q]:
                continue
            p = (int(positions[r, q, 0]), int(positions[r, q, 1]))
            if p not in cache:
                cache[p] = field.box(*p) if field is not None else box_of(model, layer, p, example, method="gradient")
            boxes[r, q] = torch.tensor(cache[p])
    name = layer if isinstance(layer, str) else type(layer).__name__
    return TopPatches(name, chans, best_v, images, positions, boxes, field)
