"""What every part of ``features`` shares: running a model up to a layer, and reading a dataset
in batches (ShapeScenes, a tensor of images, or any sequence of images or dicts with "image")."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from .. import hooks

Progress = Callable[[int, int], Any]
Data = torch.Tensor | Sequence[Any]


class _Stop(Exception):
    """Raised by the hook at the chosen layer: the rest of the model need not run."""


def forward_to(model: nn.Module, layer: str | nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer``'s output for input ``x`` as a (B, C, h, w) map, without running the layers after it.

    Differentiable with respect to ``x`` when grad mode is on (unlike ``hooks.capture``, which
    restarts the graph at the layer). Caller holds the model lock and eval mode. A layer whose
    output is no spatial map (a linear layer, a pooled vector) raises ``ValueError``.
    """
    module = hooks.get_layer(model, layer)
    found: list[torch.Tensor] = []

    def hook(_m: nn.Module, _a: Any, out: Any) -> None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"layer {layer!r} returns {type(out).__name__}, not a tensor; pick a feature-map layer")
        reshape = hooks.grid_transform(model, out, tuple(x.shape))
        found.append(reshape(out) if reshape is not None else out)
        raise _Stop

    with hooks.hooked() as h:
        h.forward(module, hook)
        with contextlib.suppress(_Stop):
            model(x)
    if not found:
        raise ValueError(
            f"layer {layer!r} was not run by the model's forward; pick one of hooks.feature_maps(model, x)"
        )
    a = found[0]
    if a.dim() != 4 or a.shape[-1] * a.shape[-2] < 1:
        raise ValueError(
            f"layer {layer!r} has output of shape {tuple(a.shape)}, not a spatial (B, C, h, w) map; "
            "pick a conv layer (hooks.feature_maps(model, x) lists them)"
        )
    return a


@contextlib.contextmanager
def locked_eval(model: nn.Module) -> Iterator[None]:
    """The model's lock held and every module in eval mode (flags restored on exit)."""
    with hooks.model_lock(model), hooks.eval_mode(model):
        yield


def model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def data_len(data: Data) -> int:
    try:
        n = len(data)
    except TypeError:
        raise TypeError(
            f"data must be a (N, 3, H, W) tensor, a ShapeScenes or a sequence of images, got {type(data).__name__}"
        ) from None
    if n == 0:
        raise ValueError("the dataset is empty; pass at least one image")
    return n


def _image_of(item: Any) -> torch.Tensor:
    if isinstance(item, dict):
        item = item.get("image")
    if not isinstance(item, torch.Tensor) or item.dim() != 3:
        raise TypeError("each item must be a (3, H, W) image tensor or a dict with an 'image' tensor")
    return item


def _label_of(item: Any) -> int:
    if isinstance(item, dict) and "label" in item:
        return int(item["label"])
    return -1


def batches(data: Data, batch_size: int, labels: bool = False) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(start, images (B, 3, H, W) float, labels (B,))`` over ``data`` in order; labels are -1 when unknown."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = data_len(data)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        if isinstance(data, torch.Tensor):
            x = data[start:stop]
            if x.dim() != 4:
                raise ValueError(f"a tensor dataset must be (N, 3, H, W), got {tuple(data.shape)}")
            y = torch.full((stop - start,), -1, dtype=torch.long)
        elif hasattr(data, "batch") and callable(data.batch):  # ShapeScenes: rendered in chunks, fast
            b = data.batch(start, stop)
            x, y = b["images"].float() / 255.0, b["labels"].long()
        else:
            items = [data[i] for i in range(start, stop)]
            x = torch.stack([_image_of(it) for it in items])
            y = torch.tensor([_label_of(it) for it in items], dtype=torch.long)
        yield start, x.float() if not x.is_floating_point() else x, y


def check_channels(channels: int | Sequence[int] | None, count: int, what: str = "channel") -> list[int]:
    """``channels`` as a list of valid indices (None: all ``count``); out of range raises ``ValueError``."""
    if channels is None:
        return list(range(count))
    chans = [channels] if isinstance(channels, int) else list(channels)
    chans = [int(c) if hasattr(c, "__index__") and not isinstance(c, bool) else c for c in chans]
    if not chans:
        raise ValueError(f"no {what} given; pass an index from 0 to {count - 1} (or None for all)")
    for c in chans:
        if not isinstance(c, int) or isinstance(c, bool) or not 0 <= c < count:
            raise ValueError(f"{what} {c!r} out of range: this layer has {count} {what}s (0 to {count - 1})")
    return chans
