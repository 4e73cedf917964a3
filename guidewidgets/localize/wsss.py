"""Weakly supervised semantic segmentation: train the embedded segmenter on cheap labels.

The visualisation lecture ends with segmenters trained from CAM pseudo-labels, and prices each kind
of annotation: an image label 1 s per class present, a point 2.4 s, a box 10 s, a scribble 17 s and a
full mask 78 s per object. Here every kind we can simulate on ShapeScenes trains the same ShapeSegmenter (same
scenes, steps and seed), and each is scored by mIoU on held-out scenes:

- ``"image"``: pseudo-masks from the classifier's CAM of the image-level classes (the classes
  present): a pixel is foreground where a present class's CAM is ``>= threshold`` times its
  maximum, labelled with that class (the highest relative CAM wins), the rest background;
  ``"image+grabcut"``: the same, each class's region refined by GrabCut
  (:func:`guidewidgets.localize.grabcut_from_map`) seeded from its CAM.
- ``"point"``: one positive click per object (the pixel of its mask deepest inside it, as an
  annotator clicks the middle), a disc of :data:`POINT_RADIUS` px labelled with its class; as many
  background pixels, drawn at random from where no present class's CAM reaches ``threshold`` of
  its maximum (the image labels a click implies). The rest is ignored by the loss.
- ``"scribble"``: one stroke per object along the skeleton of its true mask (scikit-image's
  ``skeletonize``, thickened to :data:`SCRIBBLE_WIDTH` px inside the mask), labelled with its class,
  and one background stroke along the skeleton of the true background; the rest is ignored.
- ``"box"``: each object's true box filled with its class (smaller boxes drawn on top).
- ``"full"``: the true masks, the upper bound.

    python -m guidewidgets.localize.wsss --plot wsss.png   # ~7 min on one quiet CPU thread
    python -m guidewidgets.localize.wsss --quick           # CI size, ~25 s
    python -m guidewidgets.localize.wsss --kinds scribble  # one kind (~5 min on a loaded CPU)

Measured (800 training scenes, 12 epochs = 600 steps, 300 held-out scenes, threshold 0.3): image
labels 30.6, + GrabCut 29.5, points 32.7, scribbles 47.3, boxes 45.7, full masks 54.7 mIoU (the shipped
segmenter, 1,500 steps on fresh scenes: 64.5 on its own test seed). With 5 epochs the full-mask
model was still behind the box one (25.5 vs 40.3): compare kinds only at a budget where the
full-mask upper bound has converged.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..explain import cam_all_classes
from ..metrics.segmentation import miou
from ..zoo.models import ShapeSegmenter
from ..zoo.scenes import MASK_CLASSES, ShapeScenes
from ..zoo.train import RECIPES, TRAIN_SEED, evaluate
from .boxes import EmptyMapError, check_int, check_number, check_threshold
from .grabcut import _check_image, grabcut_from_map
from .wsss_report import format_table, plot_cost_accuracy

__all__ = [
    "ANNOTATION_SECONDS",
    "ANNOTATION_UNIT",
    "annotation_seconds",
    "LABEL_KINDS",
    "IGNORE",
    "POINT_RADIUS",
    "MEASURED_MIOU",
    "SCRIBBLE_WIDTH",
    "HELD_OUT_SEED",
    "masks_from_cams",
    "pseudo_masks",
    "scribbles",
    "make_labels",
    "train_on_labels",
    "compare",
    "labels_miou",
    "format_table",
    "plot_cost_accuracy",
    "main",
]

#: Annotation seconds from the lecture's cost ladder (CVPR 2018 weakly supervised tutorial): image labels
#: per class present, every other kind per object instance.
ANNOTATION_SECONDS: dict[str, float] = {
    "image": 1.0,
    "image+grabcut": 1.0,
    "point": 2.4,
    "box": 10.0,
    "scribble": 17.0,
    "full": 78.0,
}
#: What each kind's seconds are counted per: a class present in the image, or an object instance.
ANNOTATION_UNIT: dict[str, str] = {k: "class" if k.startswith("image") else "object" for k in ANNOTATION_SECONDS}
#: The kinds simulated here, cheapest first.
LABEL_KINDS: tuple[str, ...] = ("image", "image+grabcut", "point", "box", "scribble", "full")
#: Radius (px) of the disc a click labels: the width of a cursor's mark on a 96 px scene.
POINT_RADIUS = 2
#: Width (px) of a simulated scribble stroke (its skeleton dilated by one pixel each side).
SCRIBBLE_WIDTH = 3
#: Label value the loss ignores (pixels a point label says nothing about).
IGNORE = 255
#: Held-out mIoU (%) of a ShapeSegmenter trained on each kind, measured by
#: ``python -m guidewidgets.localize.wsss`` (800 training scenes, 12 epochs, 300 held-out scenes,
#: threshold 0.3, one thread); for notebooks and docs that cannot afford the training.
MEASURED_MIOU: dict[str, float] = {
    "image": 30.6,
    "image+grabcut": 29.5,
    "point": 32.7,
    "scribble": 47.3,
    "box": 45.7,
    "full": 54.7,
}
#: Scenes no recipe uses (training: 1000 + epoch; zoo tests: 777).
HELD_OUT_SEED = 31_001


def _check_classes(classifier: nn.Module) -> None:
    classes = list(getattr(classifier, "classes", []))
    if classes != list(MASK_CLASSES[1:]):
        raise ValueError(
            f"the classifier's classes {classes} do not match the segmenter's object classes "
            f"{list(MASK_CLASSES[1:])}; use zoo.load('shapes-classifier') or a classifier trained on ShapeScenes"
        )


def _check_scenes(scenes: object, segmentation: bool = False) -> None:
    if not isinstance(scenes, ShapeScenes):
        raise TypeError(f"scenes must be a zoo.ShapeScenes, got {type(scenes).__name__}")
    if segmentation and scenes.task != "segmentation":
        raise ValueError("label kinds need segmentation scenes; use ShapeScenes(n, seed, task='segmentation')")


def _check_labels(labels: object, what: str, ignore: bool = True) -> torch.Tensor:
    """An integer tensor of mask classes (0 .. 6, and :data:`IGNORE` where ``ignore``), else an error
    naming the classes: an out-of-range value would crash the loss or the confusion matrix."""
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        kind = labels.dtype if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise TypeError(f"{what} must be an integer tensor of mask classes, got {kind}; e.g. labels.long()")
    k = len(MASK_CLASSES)
    bad = (labels < 0) | (labels >= k)
    if ignore:
        bad &= labels != IGNORE
    if bool(bad.any()):
        raise ValueError(
            f"{what} hold {int(labels[bad][0])}, not a mask class: use 0 (background) to {k - 1}"
            + (f", or {IGNORE} for pixels the loss ignores" if ignore else "")
        )
    return labels.long()


def masks_from_cams(
    cams: torch.Tensor,
    present: torch.Tensor,
    threshold: float = 0.3,
    images: torch.Tensor | None = None,
    grabcut: bool = False,
) -> torch.Tensor:
    """(B, H, W) int64 pseudo-masks (0 = background, c + 1 = class c) from per-class maps.

    ``cams`` (B, K, H, W): one map per classifier class; ``present`` (B, K) bool: the image-level
    labels. A pixel is class c's when c is present and its map there is ``>= threshold`` times the
    map's maximum (the largest such fraction wins); everything else is background. With
    ``grabcut=True`` (needs ``images`` (B, 3, H, W) in [0, 1]) each present class's region is
    refined by GrabCut seeded from its map (``fg=threshold``, ``bg=threshold / 2``).
    """
    t = check_threshold(threshold)
    if not isinstance(cams, torch.Tensor) or not isinstance(present, torch.Tensor):
        raise TypeError("cams and present must be torch tensors, (B, K, H, W) maps and (B, K) bool labels")
    if cams.dim() != 4 or present.shape != cams.shape[:2]:
        raise ValueError(
            f"cams must be (B, K, H, W) and present (B, K), got {tuple(cams.shape)} and {tuple(present.shape)}"
        )
    if cams.shape[2] * cams.shape[3] == 0:
        raise ValueError(f"cams are empty, shape {tuple(cams.shape)}: each map needs at least one pixel")
    if not cams.is_floating_point() or not bool(torch.isfinite(cams).all()):
        raise ValueError("cams must be finite float maps; replace NaN or inf values, e.g. torch.nan_to_num(cams)")
    if present.dtype != torch.bool and not bool(((present == 0) | (present == 1)).all()):
        raise ValueError(
            "present must be bool (or 0/1) image-level labels, one per class; threshold scores first, e.g. probs > 0.5"
        )
    if grabcut:
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] != cams.shape[0]:
            raise ValueError("grabcut=True needs images (B, 3, H, W) of the maps' size; pass images=")
        if images.shape[-2:] != cams.shape[-2:]:
            raise ValueError(
                f"images {tuple(images.shape)} and cams {tuple(cams.shape)} differ in size; upsample the cams "
                "(F.interpolate(cams, images.shape[-2:], mode='bilinear'))"
            )
        for image in images:  # refused here, not hidden below as a class that GrabCut could not cut
            _check_image(image)
    c = cams.detach().float().cpu().clamp(min=0)
    top = c.flatten(2).amax(2)[..., None, None]
    rel = torch.where(top > 0, c / top.clamp(min=1e-12), torch.zeros_like(c))
    rel = rel * present.cpu().bool()[..., None, None]
    on = rel >= t
    if grabcut:
        assert images is not None
        for b in range(c.shape[0]):
            for k in torch.nonzero(present[b]).flatten().tolist():
                # Why catch: an empty map or one-sided seeds keep the thresholded region.
                with contextlib.suppress(EmptyMapError):
                    on[b, k] = grabcut_from_map(images[b], c[b, k], fg=t, bg=t / 2)
    score = torch.where(on, rel, torch.full_like(rel, -1.0))
    best, cls = score.max(1)
    return torch.where(best >= 0, cls + 1, torch.zeros_like(cls))


def _present(batch: dict, scenes: ShapeScenes, start: int, k: int) -> torch.Tensor:
    out = torch.zeros(batch["images"].shape[0], k, dtype=torch.bool)
    for i in range(out.shape[0]):
        out[i, scenes[start + i]["box_labels"]] = True
    return out


def pseudo_masks(
    classifier: nn.Module,
    scenes: ShapeScenes,
    threshold: float = 0.3,
    grabcut: bool = False,
    batch_size: int = 100,
) -> torch.Tensor:
    """(N, H, W) int64 CAM pseudo-masks of ``scenes`` from ``classifier`` and each scene's image-level
    labels (the classes of its objects); see :func:`masks_from_cams`."""
    _check_classes(classifier)
    _check_scenes(scenes)
    check_threshold(threshold)
    batch_size = check_int(batch_size, "batch_size", 1)
    k = len(MASK_CLASSES) - 1
    parts = []
    for start in range(0, len(scenes), batch_size):
        b = scenes.batch(start, start + batch_size)
        x = b["images"].float() / 255
        parts.append(
            masks_from_cams(cam_all_classes(classifier, x), _present(b, scenes, start, k), threshold, x, grabcut)
        )
    return torch.cat(parts) if parts else torch.zeros(0, scenes.size, scenes.size, dtype=torch.long)


def _click(instance: np.ndarray) -> tuple[int, int]:
    # Why the distance-transform peak: an annotator clicks well inside the object, not on its rim.
    d = ndimage.distance_transform_edt(np.pad(instance, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(d)), d.shape)
    return int(y), int(x)


def scribbles(mask: np.ndarray | torch.Tensor, instances: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(H, W) int64 scribble labels simulated from one scene's true ``mask`` (class ids, 0 =
    background) and ``instances`` (0 = background, j + 1 = object j): each object's stroke is the
    skeleton of its mask, the background's the skeleton of the background, each thickened to
    :data:`SCRIBBLE_WIDTH` px but kept inside its own region; :data:`IGNORE` elsewhere."""
    from skimage.morphology import skeletonize

    m, inst = np.asarray(mask), np.asarray(instances)
    if m.shape != inst.shape or m.ndim != 2:
        raise ValueError(f"mask and instances must be (H, W) of one size, got {m.shape} and {inst.shape}")
    for name, a in (("mask", m), ("instances", inst)):
        if a.dtype.kind not in "iu" or (a.size and a.min() < 0):
            raise ValueError(f"{name} must hold non-negative integer ids (0 = background), got dtype {a.dtype}")
    out = np.full(m.shape, IGNORE, dtype=np.int64)
    thick = np.ones((SCRIBBLE_WIDTH, SCRIBBLE_WIDTH), dtype=bool)
    # Why the background last and only on unlabelled pixels: an object's stroke must survive.
    regions = [(inst == j, None) for j in np.unique(inst) if j != 0] + [(inst == 0, 0)]
    for region, value in regions:
        if not region.any():
            continue
        stroke = ndimage.binary_dilation(skeletonize(region), thick) & region & (out == IGNORE)
        if value is None:
            # An instance's class: the true mask's (majority) value on it.
            value = int(np.bincount(m[region].ravel()).argmax())
        out[stroke] = value
    return torch.from_numpy(out)


def make_labels(
    kind: str,
    scenes: ShapeScenes,
    classifier: nn.Module | None = None,
    threshold: float = 0.3,
    grabcut: bool = False,
) -> torch.Tensor:
    """(N, H, W) int64 training targets of one ``kind`` in :data:`LABEL_KINDS` for ``scenes``
    (``IGNORE`` where a point or scribble label says nothing). "image" and "point" need ``classifier``."""
    if kind not in LABEL_KINDS:
        raise ValueError(f"unknown label kind {kind!r}; use one of {list(LABEL_KINDS)}")
    _check_scenes(scenes, segmentation=True)
    if kind in ("image", "image+grabcut", "point") and classifier is None:
        raise ValueError(f"{kind!r} labels need the classifier's CAM; pass classifier=zoo.load('shapes-classifier')")
    full = scenes.batch()["masks"].long()
    if kind == "full":
        return full
    if kind == "scribble":
        return torch.stack([scribbles(full[i].numpy(), scenes[i]["instances"].numpy()) for i in range(len(scenes))])
    if kind.startswith("image"):
        assert classifier is not None
        return pseudo_masks(classifier, scenes, threshold, grabcut or kind == "image+grabcut")
    if kind == "box":
        out = torch.zeros_like(full)
        for i in range(len(scenes)):
            boxes, labels = scenes[i]["boxes"], scenes[i]["box_labels"]
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            for j in torch.argsort(area, descending=True).tolist():
                x0, y0, x1, y1 = boxes[j].tolist()
                out[i, y0:y1, x0:x1] = int(labels[j]) + 1
        return out
    assert classifier is not None
    background = pseudo_masks(classifier, scenes, threshold) == 0
    out = torch.full_like(full, IGNORE)
    size = full.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(len(scenes)):
        item = scenes[i]
        inst, labels = item["instances"].numpy(), item["box_labels"]
        for j in range(len(labels)):
            y, x = _click(inst == j + 1)
            out[i][(yy - y) ** 2 + (xx - x) ** 2 <= POINT_RADIUS**2] = int(labels[j]) + 1
        # Why as many background pixels as object pixels: with every CAM-background pixel
        # labelled, ~30 object pixels against ~6,000 background ones train a segmenter that
        # answers "background" everywhere (measured: mIoU 12.5, the background class alone).
        where = torch.nonzero(background[i] & (out[i] == IGNORE))
        g = torch.Generator().manual_seed(i)
        pick = where[torch.randperm(len(where), generator=g)[: int((out[i] != IGNORE).sum())]]
        out[i, pick[:, 0], pick[:, 1]] = 0
    return out


def train_on_labels(
    scenes: ShapeScenes,
    labels: torch.Tensor,
    *,
    epochs: int = 2,
    seed: int = 0,
    threads: int = 1,
    batch: int | None = None,
    lr: float | None = None,
    log: Callable[[str], None] | None = None,
) -> ShapeSegmenter:
    """A ShapeSegmenter trained on ``scenes``' images with ``labels`` (N, H, W) (``IGNORE`` pixels
    skipped) by the segmenter recipe's optimiser (AdamW + one-cycle, its lr, weight decay and
    batch). Returns it in eval mode; the same arguments and thread count give the same weights."""
    _check_scenes(scenes)
    labels = _check_labels(labels, "labels")
    epochs, seed, threads = check_int(epochs, "epochs", 1), check_int(seed, "seed", 0), check_int(threads, "threads", 1)
    if batch is not None:
        check_int(batch, "batch", 1)
    if lr is not None:
        check_number(lr, "lr", 0.0, low_open=True)
    if labels.dim() != 3 or labels.shape[0] != len(scenes) or labels.shape[-1] != scenes.size:
        raise ValueError(
            f"labels must be (N, H, W) = ({len(scenes)}, {scenes.size}, {scenes.size}), got {tuple(labels.shape)}; "
            "make them with make_labels(kind, scenes)"
        )
    cfg = RECIPES["segmenter"]
    bs, peak = int(batch or cfg["batch"]), float(lr or cfg["lr"])
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = ShapeSegmenter()
        steps = max(1, epochs * -(-len(scenes) // bs))
        opt = torch.optim.AdamW(model.parameters(), lr=peak, weight_decay=cfg["weight_decay"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=peak, total_steps=steps, pct_start=0.2)
        images = scenes.batch()["images"]
        order = torch.Generator().manual_seed(seed)
        model.train()
        for epoch in range(epochs):
            perm = torch.randperm(len(scenes), generator=order)
            total = 0.0
            for start in range(0, len(scenes), bs):
                idx = perm[start : start + bs]
                loss = F.cross_entropy(model(images[idx].float() / 255), labels[idx], ignore_index=IGNORE)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            if log:
                log(f"epoch {epoch + 1}/{epochs}: loss {total / len(scenes):.4f}")
    finally:
        torch.set_num_threads(previous)
    return model.eval()


def compare(
    classifier: nn.Module,
    kinds: Sequence[str] = LABEL_KINDS,
    *,
    train: int = 800,
    test: int = 300,
    epochs: int = 12,
    threshold: float = 0.3,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict]:
    """Train one segmenter per label kind on the same ``train`` scenes (seed ``TRAIN_SEED``) and
    score each on ``test`` held-out scenes (seed :data:`HELD_OUT_SEED`). Rows: ``kind``,
    ``seconds_per_image`` (annotation), ``miou``, ``label_miou`` (the training labels' own mIoU
    against the true masks, ignored pixels left out) and ``train_seconds``."""
    _check_classes(classifier)
    if isinstance(kinds, str) or not all(k in LABEL_KINDS for k in kinds) or not kinds:
        raise ValueError(f"kinds must be a non-empty list of label kinds from {list(LABEL_KINDS)}, got {kinds!r}")
    train, test, epochs = check_int(train, "train", 1), check_int(test, "test", 1), check_int(epochs, "epochs", 1)
    check_threshold(threshold)
    scenes = ShapeScenes(train, seed=TRAIN_SEED, task="segmentation")
    held_out = ShapeScenes(test, seed=HELD_OUT_SEED, task="segmentation")
    truth = scenes.batch()["masks"].long()
    rows = []
    for kind in kinds:
        labels = make_labels(kind, scenes, classifier, threshold)
        t0 = time.time()
        model = train_on_labels(scenes, labels, epochs=epochs, seed=seed)
        result = evaluate(model, held_out)
        row = dict(
            kind=kind,
            seconds_per_image=annotation_seconds(kind, scenes),
            miou=result["miou"],
            label_miou=_miou(labels, truth),
            train_seconds=time.time() - t0,
        )
        rows.append(row)
        if log:
            log(f"{kind}: mIoU {100 * row['miou']:.1f} (labels {100 * row['label_miou']:.1f})")
    return rows


def annotation_seconds(kind: str, scenes: ShapeScenes) -> float:
    """Mean annotation seconds per image of ``kind`` on ``scenes``: the ladder's seconds times the
    classes (image labels) or objects (every other kind) each scene holds."""
    objects = [scenes[i]["box_labels"].tolist() for i in range(len(scenes))]
    per = [len(set(o)) if ANNOTATION_UNIT[kind] == "class" else len(o) for o in objects]
    return ANNOTATION_SECONDS[kind] * sum(per) / max(1, len(per))


def labels_miou(labels: torch.Tensor, truth: torch.Tensor) -> float:
    """mIoU (fraction, over the 7 mask classes) of training ``labels`` (N, H, W) against the true masks,
    pixels labelled :data:`IGNORE` left out: how right the labels a kind gives are, not how many."""
    labels, truth = _check_labels(labels, "labels"), _check_labels(truth, "truth", ignore=False)
    if labels.shape != truth.shape:
        raise ValueError(f"labels and truth differ in size: {tuple(labels.shape)} vs {tuple(truth.shape)}")
    if not bool((labels != IGNORE).any()):
        raise ValueError(f"every pixel of labels is {IGNORE} (ignored): there is nothing to score")
    return _miou(labels, truth)


def _miou(pred: torch.Tensor, truth: torch.Tensor, k: int = len(MASK_CLASSES)) -> float:
    # Why move IGNORE to the truth: here the labels (pred) mark the pixels that say nothing.
    return miou(pred, truth.masked_fill(pred == IGNORE, IGNORE), k, ignore_index=IGNORE)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m guidewidgets.localize.wsss", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="CI size: 160 training scenes, 2 epochs, 100 test scenes")
    p.add_argument("--train", type=int, default=800, help="training scenes (default 800)")
    p.add_argument("--test", type=int, default=300, help="held-out scenes (default 300)")
    p.add_argument("--epochs", type=int, default=12, help="epochs over the training scenes (default 12)")
    p.add_argument("--threshold", type=float, default=0.3, help="CAM foreground fraction of the max (default 0.3)")
    p.add_argument(
        "--kinds", nargs="+", default=list(LABEL_KINDS), choices=LABEL_KINDS, help="label kinds (default: all)"
    )
    p.add_argument("--plot", default=None, help="save the cost / accuracy plot to this path")
    args = p.parse_args(argv)
    if args.quick:
        args.train, args.test, args.epochs = 160, 100, 2
    from ..zoo import load

    t0 = time.time()
    rows = compare(
        load("shapes-classifier"),
        args.kinds,
        train=args.train,
        test=args.test,
        epochs=args.epochs,
        threshold=args.threshold,
        log=lambda m: print(m, flush=True),
    )
    print(
        f"\n{args.train} training scenes (seed {TRAIN_SEED}), {args.epochs} epochs, "
        f"{args.test} held-out scenes (seed {HELD_OUT_SEED}), CAM threshold {args.threshold}"
        f"; {time.time() - t0:.0f} s"
    )
    print(format_table(rows))
    if args.plot:
        plot_cost_accuracy(rows, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
