"""GAIN's segmentation table: attention maps as seeds for weakly supervised segmentation.

The paper (Li et al., CVPR 2018, Table 2) feeds GAIN's attention into a weakly supervised
segmenter on PASCAL VOC: mIoU (val / test) GAIN 55.3 / 56.8, GAIN_ext 58.3 / 59.6 with 200
pixel-labelled images and 60.5 / 62.1 with 1464. Here each column's classifier of
:func:`guidewidgets.gain.reproduce.run` (plain Grad-CAM, GAIN, GAIN_ext with 9 / 23 / 78 pixel
labels) turns the training scenes into pseudo-masks through the existing WSSS path
(:func:`guidewidgets.localize.wsss.masks_from_cams`: the image-level class's map, min-max
normalised, foreground where it reaches ``threshold`` of its maximum); one ShapeSegmenter per
column is trained on them (:func:`~guidewidgets.localize.wsss.train_on_labels`, same scenes,
steps and seed) and scored by mIoU on held-out unbiased scenes; a segmenter trained on the true
masks is the upper bound. The pseudo-masks' own mIoU against the truth is cheap and reported too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..localize.wsss import labels_miou, masks_from_cams, train_on_labels
from ..zoo.scenes import CLASSES
from ..zoo.train import evaluate
from .design import Design

__all__ = ["PAPER_MIOU", "attention_masks", "segmentation_table", "format_segmentation"]

#: The paper's Table 2 (mIoU %, PASCAL VOC val / test).
PAPER_MIOU: dict[str, tuple[float, float]] = {
    "GAIN": (55.3, 56.8),
    "GAIN_ext, 200 pixel-labelled images": (58.3, 59.6),
    "GAIN_ext, 1464 pixel-labelled images": (60.5, 62.1),
}


def attention_masks(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, threshold: float = 0.3, batch: int = 50
) -> torch.Tensor:
    """(N, H, W) int64 pseudo-masks (0 = background, c + 1 = class c) from ``model``'s attention.

    Args:
        model: a ShapeClassifier whose ``features`` Grad-CAM is the attention.
        images: (N, 3, H, W) uint8 scenes. labels: (N,) image-level classes.
        threshold: foreground where the map reaches this fraction of its maximum.

    Returns:
        The masks of :func:`~guidewidgets.localize.wsss.masks_from_cams` on the class's map.
    """
    from .reproduce import _maps

    k = len(CLASSES)
    out = []
    for s in range(0, len(images), batch):
        x, y = images[s : s + batch].float() / 255, labels[s : s + batch]
        maps = _maps(model, x, y).detach()
        cams = torch.zeros(len(x), k, *maps.shape[-2:])
        cams[torch.arange(len(x)), y] = maps
        present = torch.nn.functional.one_hot(y, k).bool()
        out.append(masks_from_cams(cams, present, threshold))
    return torch.cat(out)


def segmentation_table(
    result: dict[str, Any],
    *,
    train: int = 300,
    test: int = 300,
    epochs: int = 3,
    threshold: float = 0.3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Train one segmenter per column of ``result`` (from ``reproduce.run(..., keep_models=True)``)
    on its attention's pseudo-masks, and one on the true masks.

    Args:
        result: a run with ``models`` and ``design``. train: training scenes used (the first
            ``train`` of the run's biased training set). test: held-out unbiased scenes (the run's
            test seed). epochs, seed: the segmenter's. threshold: see :func:`attention_masks`.

    Returns:
        ``{column: {"miou", "label_miou", "seconds"}}`` (fractions), the true masks as "true masks".
    """
    from .reproduce import TRAIN_SEED

    if "models" not in result:
        raise ValueError("the run kept no models; call reproduce.run(..., keep_models=True)")
    design: Design = result["design"]
    scenes = design.scenes(train, TRAIN_SEED, biased=True)
    held_out = design.scenes(test, result["test_seed"], biased=False)
    b = scenes.batch()
    truth = b["masks"].long()
    sources: dict[str, torch.Tensor] = {
        name: attention_masks(model, b["images"], b["labels"], threshold) for name, model in result["models"].items()
    }
    sources["true masks"] = truth
    rows: dict[str, dict[str, float]] = {}
    for name, labels in sources.items():
        t = time.time()
        model = train_on_labels(scenes, labels, epochs=epochs, seed=seed)
        miou = evaluate(model, held_out)["miou"]
        rows[name] = {"miou": miou, "label_miou": labels_miou(labels, truth), "seconds": time.time() - t}
        if log:
            log(f"segmenter on {name}: mIoU {100 * miou:.1f} (pseudo-masks {100 * rows[name]['label_miou']:.1f})")
    return rows


def format_segmentation(tables: list[dict[str, dict[str, float]]], seeds: list[int] | None = None) -> str:
    """The paper's Table 2 beside ours: mIoU (%) of the segmenters (mean ± sd over training seeds
    when several) and of their pseudo-masks."""
    if not tables:
        raise ValueError("give at least one segmentation table")
    lines = ["Weakly supervised segmentation (paper, Table 2; PASCAL VOC val / test mIoU)"]
    lines += [f"  {name:<40}{v:>6.1f} / {t:.1f}" for name, (v, t) in PAPER_MIOU.items()]
    which = f" over training seeds {', '.join(map(str, seeds))}" if seeds else ""
    lines += ["", f"Ours (ShapeScenes, held-out unbiased scenes; mIoU %{which})"]
    lines.append(f"  {'pseudo-masks from':<24}{'segmenter mIoU':>16}{'pseudo-mask mIoU':>20}")
    for name in tables[0]:
        cells = []
        for key in ("miou", "label_miou"):
            v = torch.tensor([100 * t[name][key] for t in tables], dtype=torch.float64)
            sd = f" ± {float(v.std()):.1f}" if len(v) > 1 else ""
            cells.append(f"{float(v.mean()):.1f}{sd}")
        lines.append(f"  {name.replace(' (plain)', ''):<24}{cells[0]:>16}{cells[1]:>20}")
    return "\n".join(lines)
