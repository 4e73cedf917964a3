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

The segmenter's budget matters: at the default (300 scenes, 3 epochs) the true-mask segmenter of
the ``premise-form`` world reaches 12.0 mIoU on dev scenes (seed 200), too short to rank label
sources; at 600 scenes it reaches 30.2 / 41.6 / 51.1 / 54.0 after 8 / 16 / 32 / 64 epochs, so the
stored table uses 600 x 32 (``--train 600 --epochs 32``, within 3 points of 64 epochs at half the
cost). ``python -m guidewidgets.gain.segment`` runs the table on columns stored by
``python -m guidewidgets.gain.reproduce --models DIR``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..localize.wsss import labels_miou, masks_from_cams, train_on_labels
from ..zoo.scenes import CLASSES
from ..zoo.train import evaluate
from .design import Design

__all__ = ["PAPER_MIOU", "attention_masks", "segmentation_table", "format_segmentation", "main"]

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
    truth: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Train one segmenter per column of ``result`` (from ``reproduce.run(..., keep_models=True)``)
    on its attention's pseudo-masks, and one on the true masks.

    Args:
        result: a run with ``models`` and ``design``. train: training scenes used (the first
            ``train`` of the run's biased training set). test: held-out unbiased scenes (the run's
            test seed). epochs, seed: the segmenter's. threshold: see :func:`attention_masks`.
        truth: also train the segmenter on the true masks (the upper bound; the same for every
            training seed of the classifiers, so one is enough).

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
    true_masks = b["masks"].long()
    sources: dict[str, torch.Tensor] = {
        name: attention_masks(model, b["images"], b["labels"], threshold) for name, model in result["models"].items()
    }
    if truth:
        sources["true masks"] = true_masks
    rows: dict[str, dict[str, float]] = {}
    for name, labels in sources.items():
        t = time.time()
        model = train_on_labels(scenes, labels, epochs=epochs, seed=seed)
        miou = evaluate(model, held_out)["miou"]
        rows[name] = {"miou": miou, "label_miou": labels_miou(labels, true_masks), "seconds": time.time() - t}
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


def main(argv: Sequence[str] | None = None) -> int:
    """The segmentation table from columns stored by ``reproduce --models``; with ``--into``, the
    rows are written into that ``reproduce --save`` file's runs of the same training seeds."""
    from .reproduce import load_models

    ap = argparse.ArgumentParser(prog="python -m guidewidgets.gain.segment", description=main.__doc__)
    ap.add_argument("runs", nargs="+", help="seed-S folders written by python -m guidewidgets.gain.reproduce --models")
    ap.add_argument("--train", type=int, default=300, help="biased training scenes the segmenters learn from")
    ap.add_argument("--test", type=int, default=300, help="held-out unbiased scenes they are scored on")
    ap.add_argument("--epochs", type=int, default=3, help="segmenter epochs")
    ap.add_argument("--threshold", type=float, default=0.3, help="pseudo-mask threshold (fraction of the map's max)")
    ap.add_argument("--truth", choices=("first", "all", "none"), default="first", help="which runs train on true masks")
    ap.add_argument(
        "--into",
        default=None,
        help="a reproduce --save JSON file to add the rows to (read, changed, rewritten: run the commands "
        "that share one file one after the other, or give each its own copy)",
    )
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (results depend on it; default 1)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tables: dict[int, dict[str, dict[str, float]]] = {}
    for i, folder in enumerate(args.runs):
        run = load_models(folder)
        truth = args.truth == "all" or (args.truth == "first" and i == 0)
        tables[run["seed"]] = segmentation_table(run, train=args.train, test=args.test, epochs=args.epochs,
                                                 threshold=args.threshold, truth=truth, log=print)  # fmt: skip
    first = next(iter(tables.values()))
    for rows in tables.values():  # Why: one upper bound serves every seed (same scenes, same segmenter seed)
        rows.update({k: v for k, v in first.items() if k not in rows})
    print(format_segmentation(list(tables.values()), list(tables)))
    if args.into:
        stored = json.loads(Path(args.into).read_text())
        for r in stored:
            if r["seed"] in tables:
                r["segmentation"] = tables[r["seed"]]
        Path(args.into).write_text(json.dumps(stored))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
