"""Reading a dataset for :func:`~guidewidgets.explain.dataset.explain_dataset`: its items, batches
(through a DataLoader's workers when it has some), item hashes, and one batch's maps."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..hooks import eval_mode, model_lock, model_output
from .registry import explain
from .targets import Target, callable_name

TargetSpec = str | int | Callable[[torch.Tensor], torch.Tensor]


def _target_key(target: TargetSpec) -> str | int:
    if isinstance(target, bool):
        raise TypeError("target must be 'label', 'pred', an int class index or a callable(output) -> (B,) scores")
    if isinstance(target, str):
        if target not in ("label", "pred"):
            raise ValueError(
                f"target {target!r} is not understood; use 'label' (the dataset's labels), 'pred' (the "
                "model's predicted class), an int class index or a callable(output) -> (B,) scores"
            )
        return target
    if isinstance(target, (int, np.integer)):
        return int(target)
    if callable(target):
        # Why the name only: a callable cannot be compared; its name catches the common mix-up.
        return "callable:" + callable_name(target)
    raise TypeError(
        f"target must be 'label', 'pred', an int class index or a callable(output) -> (B,) scores, got "
        f"{type(target).__name__}"
    )


def _source(dataset: Any) -> Any:
    """The map-style dataset to index (a DataLoader's own dataset)."""
    if isinstance(dataset, torch.utils.data.DataLoader):
        dataset = dataset.dataset
    if isinstance(dataset, torch.utils.data.IterableDataset):
        raise TypeError(
            "explain_dataset needs a map-style dataset (with __len__ and __getitem__): chunks are read by "
            "index so that ranks can split them and a resumed run can skip finished ones; wrap the "
            "iterable's items in a list or a map-style Dataset"
        )
    if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"dataset must be indexable with a length (a torch Dataset, zoo.ShapeScenes, a list of "
            f"(image, label) pairs or a DataLoader over one), got {type(dataset).__name__}"
        )
    return dataset


def _item(item: Any, i: int) -> tuple[torch.Tensor, int | None]:
    """(image (C, H, W), label or None) from a dict with 'image'/'label', an (image, label, ...)
    pair, or a bare image."""
    label: Any = None
    if isinstance(item, dict):
        if "image" not in item:
            raise TypeError(f"dataset item {i} is a dict without 'image'; items need 'image' (C, H, W) and 'label'")
        image, label = item["image"], item.get("label")
    elif isinstance(item, (tuple, list)):
        if not item:
            raise TypeError(f"dataset item {i} is empty; items must be (image, label) pairs or dicts")
        image, label = item[0], (item[1] if len(item) > 1 else None)
    else:
        image = item
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"dataset item {i}'s image is a {type(image).__name__}, not a tensor; add "
            "torchvision.transforms.ToTensor() to the dataset's transform"
        )
    if image.dim() != 3:
        raise ValueError(f"dataset item {i}'s image has shape {tuple(image.shape)}; each image must be (C, H, W)")
    if isinstance(label, torch.Tensor):
        label = int(label) if label.numel() == 1 else None
    return image, (int(label) if label is not None else None)


def _fingerprint(item: Any, i: int) -> int:
    """A 64-bit hash of dataset item ``i``'s image (shape, dtype, bytes) and label."""
    image, label = _item(item, i)
    h = hashlib.sha256(f"{tuple(image.shape)} {image.dtype} {label}".encode())
    h.update(image.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return int.from_bytes(h.digest()[:8], "little", signed=True)


def _as_list(items: list) -> list:
    return items


def _reader(
    dataset: Any, source: Any, plan: Sequence[Sequence[int]]
) -> Generator[tuple[Sequence[int], list], None, None]:
    """(indices, items) for each planned batch; through a DataLoader with the given loader's
    workers when it has some (so that decoding overlaps the model), else read here."""
    workers = dataset.num_workers if isinstance(dataset, torch.utils.data.DataLoader) else 0
    if workers > 0:
        loader = torch.utils.data.DataLoader(
            source,
            batch_sampler=[list(r) for r in plan],
            num_workers=workers,
            collate_fn=_as_list,
            multiprocessing_context=dataset.multiprocessing_context,
            worker_init_fn=dataset.worker_init_fn,
        )
        yield from zip(plan, loader)
    else:
        for r in plan:
            yield r, [source[i] for i in r]


def _explain_batch(
    model: nn.Module,
    items: list,
    idx: Sequence[int],
    name: str,
    target: TargetSpec,
    layer: str | nn.Module | None,
    opts: dict[str, Any],
    device: torch.device,
    shape: tuple[int, int, int],
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor, float]:
    """Maps (B, H, W) as float32 numpy, the classes explained (B,), the clean scores (B,) and the
    seconds the method took."""
    images, labels = [], []
    for i, item in zip(idx, items):
        image, label = _item(item, i)
        if tuple(image.shape) != shape:
            raise ValueError(
                f"dataset item {i}'s image is {tuple(image.shape)} but item 0's is {shape}; every image must "
                "have one size (resize in the dataset's transform)"
            )
        images.append(image)
        labels.append(label)
    x = torch.stack(images).to(device)
    p = next(model.parameters(), None)
    if p is not None and p.is_floating_point() and x.is_floating_point():
        x = x.to(p.dtype)
    b = len(idx)
    with model_lock(model), eval_mode(model), torch.no_grad():
        out = model_output(model(x))
    if callable(target) and not isinstance(target, str):
        t = Target(target, b)
        classes = torch.full((b,), -1, dtype=torch.long)
        explained: Any = target
    else:
        if target == "label":
            if any(v is None for v in labels):
                raise ValueError(
                    "target='label' needs a label in every dataset item (a dict with 'label' or an (image, "
                    "label) pair); use target='pred' to explain the predicted class"
                )
            t = Target(torch.tensor(labels), b)
        elif target == "pred":
            t = Target(None, b)
        else:
            t = Target(int(target), b)  # type: ignore[arg-type]
        t = t.fix(out)
        assert t.fixed is not None
        explained = t.fixed
        classes = t.fixed.detach().cpu()
    score = t.scores(out).detach().float().cpu()
    t0 = time.perf_counter()
    maps = explain(model, x, name, explained, layer, **opts).detach()
    dt = time.perf_counter() - t0
    return maps.float().cpu().numpy(), classes, score, dt
