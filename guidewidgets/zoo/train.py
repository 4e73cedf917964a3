"""Training recipes for the shipped models; they regenerate the weights deterministically on a CPU.

    python -m guidewidgets.zoo.train classifier      # -> guidewidgets/zoo/weights/shapes-classifier.pt
    python -m guidewidgets.zoo.train segmenter       # -> guidewidgets/zoo/weights/shapes-segmenter.pt
    python -m guidewidgets.zoo.train segmenter --out my.pt --epochs 2

Every epoch sees freshly generated scenes (seed ``TRAIN_SEED + epoch``), so there is no fixed
training set to overfit; the test scenes come from ``TEST_SEED``, which training never uses. The
run prints accuracy (classifier) or per-class IoU and mIoU (segmenter) and a confusion matrix.
The same command with the same ``--threads`` gives the same weights.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .models import ShapeClassifier, ShapeSegmenter, ShapesModel
from .registry import FORMAT, weights_path
from .scenes import ShapeScenes
from .training import printer, step, torch_threads

__all__ = ["RECIPES", "TRAIN_SEED", "TEST_SEED", "evaluate", "train", "format_report", "main"]

TRAIN_SEED = 1_000
TEST_SEED = 777


def _recipe(model: str, task: str, epochs: int, test: int, batch: int) -> dict:
    # Why one maker: both recipes share the training-set size and the optimiser settings.
    return dict(model=model, task=task, epochs=epochs, train=4_000, test=test, batch=batch, lr=4e-3, weight_decay=1e-4)


#: Hyper-parameters of each recipe; the shipped weights come from exactly these.
RECIPES: dict[str, dict] = {
    "classifier": _recipe("shapes-classifier", "classification", epochs=16, test=1_000, batch=32),
    "segmenter": _recipe("shapes-segmenter", "segmentation", epochs=6, test=500, batch=16),
}


def _images(batch: dict) -> torch.Tensor:
    return batch["images"].float().div_(255)


@torch.no_grad()
def evaluate(model: ShapesModel, scenes: ShapeScenes, batch_size: int = 100) -> dict:
    """Score ``model`` on ``scenes``.

    Classification: ``accuracy`` and ``confusion`` (rows: truth, columns: prediction) over
    ``classes``. Segmentation: pixel ``confusion`` over the mask classes, ``iou`` per class (NaN
    for a class in neither truth nor prediction), ``miou`` (mean over the classes present,
    background included, as on PASCAL VOC) and ``pixel_accuracy``, all from
    :mod:`guidewidgets.metrics.segmentation`. Numbers are fractions in [0, 1].
    """
    # Why here, not at the top: zoo sits below metrics (whose package imports explain), so importing
    # zoo stays light and free of cycles; the scores are the package's one definition of them.
    from ..metrics.segmentation import accuracy_from_confusion, confusion, iou_from_confusion, miou_from_confusion

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        seg = getattr(model, "task", "classification") == "segmentation"
        k = len(model.classes)
        conf = torch.zeros(k, k, dtype=torch.long)
        for start in range(0, len(scenes), batch_size):
            b = scenes.batch(start, start + batch_size)
            out = model(_images(b).to(device)).argmax(1).cpu()
            conf += confusion(out, b["masks"] if seg else b["labels"], k)
    finally:
        model.train(was_training)
    result = {"classes": list(model.classes), "confusion": conf, "n": len(scenes)}
    if seg:
        iou = iou_from_confusion(conf)
        result.update(iou=iou.tolist(), miou=miou_from_confusion(conf), pixel_accuracy=accuracy_from_confusion(conf))
    else:
        result.update(accuracy=accuracy_from_confusion(conf))
    return result


def format_report(result: dict) -> str:
    """The numbers of :func:`evaluate` as a text table (percent)."""
    names = result["classes"]
    w = max(len(n) for n in names) + 1
    lines = []
    if "miou" in result:
        lines.append(
            f"scenes: {result['n']}  mIoU: {100 * result['miou']:.1f}  pixel accuracy: {100 * result['pixel_accuracy']:.1f}"
        )
        lines.append("per-class IoU: " + ", ".join(f"{n} {100 * v:.1f}" for n, v in zip(names, result["iou"])))
        lines.append("confusion matrix (rows: truth, columns: prediction, % of the row's pixels):")
    else:
        lines.append(f"scenes: {result['n']}  accuracy: {100 * result['accuracy']:.1f}")
        lines.append("confusion matrix (rows: truth, columns: prediction, counts):")
    conf = result["confusion"]
    lines.append(" " * w + "".join(f"{n[:7]:>8}" for n in names))
    for n, row in zip(names, conf):
        if "miou" in result:
            cells = "".join(f"{100 * v / max(int(row.sum()), 1):8.1f}" for v in row.tolist())
        else:
            cells = "".join(f"{v:8d}" for v in row.tolist())
        lines.append(f"{n:<{w}}" + cells)
    return "\n".join(lines)


def train(
    recipe: str, *, epochs: int | None = None, threads: int = 1, log=None, **overrides
) -> tuple[ShapesModel, dict]:
    """Train the model of ``recipe`` ("classifier" or "segmenter") from scratch; returns it (eval
    mode) and its test-set :func:`evaluate` result. Deterministic for a given thread count."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown recipe {recipe!r}; use one of {list(RECIPES)}")
    cfg = {**RECIPES[recipe], **overrides}
    log = printer(log)
    if epochs is not None:
        cfg["epochs"] = int(epochs)
    with torch_threads(threads):
        torch.manual_seed(0)
        model = ShapeClassifier() if cfg["task"] == "classification" else ShapeSegmenter()
        steps_per_epoch = -(-cfg["train"] // cfg["batch"])
        opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg["lr"], total_steps=cfg["epochs"] * steps_per_epoch, pct_start=0.2
        )
        t0 = time.time()
        model.train()
        for epoch in range(cfg["epochs"]):
            scenes = ShapeScenes(cfg["train"], seed=TRAIN_SEED + epoch, task=cfg["task"])
            total, count = 0.0, 0
            for start in range(0, cfg["train"], cfg["batch"]):
                b = scenes.batch(start, start + cfg["batch"])
                out = model(_images(b))
                target = b["labels"] if cfg["task"] == "classification" else b["masks"].long()
                loss = F.cross_entropy(out, target)
                step(opt, loss, sched)
                total += float(loss.detach()) * len(target)
                count += len(target)
            log(f"epoch {epoch + 1}/{cfg['epochs']}: loss {total / count:.4f}  ({time.time() - t0:.0f} s)")
    model.eval()
    seconds = time.time() - t0
    result = evaluate(model, ShapeScenes(cfg["test"], seed=TEST_SEED, task=cfg["task"]))
    result["train_seconds"] = seconds
    result["recipe"] = cfg
    return model, result


def save(model: ShapesModel, name: str, path: str | Path, result: dict) -> None:
    """Write ``model``'s weights with the metadata ``guidewidgets.zoo.load`` checks."""
    metrics = {
        k: v for k, v in result.items() if k in ("accuracy", "miou", "iou", "pixel_accuracy", "n", "train_seconds")
    }
    blob = {
        "format": FORMAT,
        "model": name,
        "classes": list(model.classes),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "meta": {"recipe": {k: v for k, v in result["recipe"].items()}, "test_seed": TEST_SEED, "metrics": metrics},
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m guidewidgets.zoo.train", description=__doc__.split("\n\n")[0])
    p.add_argument("recipe", choices=list(RECIPES))
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    p.add_argument("--train", type=int, default=None, help="scenes per epoch")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the weights depend on it; default 1)")
    p.add_argument("--batch", type=int, default=None, help="override the recipe's batch size")
    p.add_argument("--lr", type=float, default=None, help="override the recipe's peak learning rate")
    p.add_argument("--out", type=Path, default=None, help="where to write the weights (default: the package's file)")
    args = p.parse_args(argv)
    over = {k: v for k, v in (("train", args.train), ("batch", args.batch), ("lr", args.lr)) if v is not None}
    name = RECIPES[args.recipe]["model"]
    model, result = train(args.recipe, epochs=args.epochs, threads=args.threads, **over)
    print(format_report(result))
    print(f"training time: {result['train_seconds']:.0f} s")
    out = args.out or weights_path(name)
    save(model, name, out, result)
    print(f"weights written to {out} ({Path(out).stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
