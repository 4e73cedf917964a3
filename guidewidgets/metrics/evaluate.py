"""One call that scores explanation methods on a labelled dataset and returns a tidy table."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import explain as _explain
from ..checks import check_int, check_number
from ..hooks import eval_mode
from ..localize.boxes import (
    EmptyMapError,
    box_iou,
    box_mask,
    boxes_from_maps,
    check_threshold,
    mask_iou,
)
from ..localize.grabcut import grabcut_from_map
from .faithfulness import deletion, insertion, road
from .pointing import energy_pointing, pointing_game
from .sanity import randomized_copy, spearman

__all__ = ["METRICS", "evaluate"]

#: Metric name -> (higher is better, what the dataset must give, one-line description).
METRICS: dict[str, tuple[bool, str | None, str]] = {
    "pointing-game": (True, "mask", "share of maps whose maximum is on the object (Zhang et al. 2016)"),
    "energy-pointing": (True, "boxes", "share of positive map energy inside the object's box (Score-CAM)"),
    "corloc": (True, "boxes", "share of 20 %-threshold largest-component boxes with IoU >= 0.5"),
    "box-iou": (True, "boxes", "mean IoU of the map's box with the object's box"),
    "grabcut-iou": (True, "mask", "mask IoU of GrabCut seeded by the map (>= 50 % of max fg, < 20 % bg)"),
    "deletion": (False, None, "area under the probability curve as top pixels go black (RISE)"),
    "insertion": (True, None, "area under the probability curve as top pixels return to a blurred copy (RISE)"),
    "road-morf": (False, None, "probability after removing the most relevant pixels, imputed (ROAD)"),
    "road-lerf": (True, None, "probability after removing the least relevant pixels, imputed (ROAD)"),
    "sanity": (False, None, "Spearman correlation with the map of a fully randomised copy (Adebayo et al.)"),
}


def _items(dataset: Any, n: int | None) -> list[dict]:
    try:
        total = len(dataset)
    except TypeError:
        raise TypeError("dataset must be indexable with a length (e.g. zoo.ShapeScenes or a list of dicts)") from None
    count = total if n is None else min(check_int(n, "n (images to score)", 1), total)
    if count == 0:
        raise ValueError("the dataset is empty; evaluate needs at least one image")
    items = [dataset[i] for i in range(count)]
    for it in items:
        if not isinstance(it, dict) or "image" not in it or "label" not in it:
            raise TypeError(
                "dataset items must be dicts with 'image' (3, H, W) and 'label' (int), as zoo.ShapeScenes gives"
            )
    return items


def _grabcut_iou(image: torch.Tensor, m: torch.Tensor, truth: torch.Tensor) -> float:
    try:
        return mask_iou(grabcut_from_map(image, m), truth)
    except EmptyMapError:
        return 0.0  # Why: a blank map segments nothing; score it, do not stop the run


def evaluate(
    model: nn.Module,
    dataset: Any,
    methods: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    n: int | None = None,
    batch_size: int = 8,
    tolerance: float | None = None,
    threshold: float = 0.2,
    steps: int = 32,
    road_fractions: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9),
    method_options: dict[str, dict] | None = None,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    maps: Mapping[str, Any] | None = None,
) -> Any:
    """Score ``methods`` (names from ``explain.methods()``; default all) with ``metrics`` (default
    all of :data:`METRICS`) on the first ``n`` items of ``dataset``, explaining each image's true
    label. Returns a pandas DataFrame with one row per method and metric: ``method``, ``metric``,
    ``value`` (mean over images), ``higher_is_better``, ``n``, ``seconds_per_image`` (the method's
    time to make a map) and ``metric_seconds_per_image``.

    Items are dicts like ShapeScenes': ``image``, ``label``, and ``mask`` (pointing game) /
    ``boxes`` + ``box_labels`` (energy pointing, CorLoc, box IoU) where a metric needs them.
    With ``methods=None``, methods that refuse the model (ValueError on the first batch, e.g.
    attention rollout on a CNN) are left out and listed in ``table.attrs["skipped"]``.
    ``maps``: precomputed maps per method name, each indexable as (N, H, W) in dataset order (a
    tensor, a numpy or zarr array, e.g. ``explain_dataset(...).maps``); those methods are scored
    on them instead of being run (their ``seconds_per_image`` is then 0).
    """
    import pandas as pd

    names = list(_explain.methods()) if methods is None else [_explain.method_info(m).name for m in methods]
    chosen = list(METRICS) if metrics is None else list(metrics)
    for m in chosen:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}; choose from {', '.join(METRICS)}")
    batch_size, seed = check_int(batch_size, "batch_size", 1), check_int(seed, "seed", 0)
    # Checked before any map is made: a bad setting should not cost a whole batch of explanations.
    check_int(steps, "steps", 1)
    check_threshold(threshold)
    if tolerance is not None:
        check_number(tolerance, "tolerance (pixels)", 0.0)
    if method_options is not None and not isinstance(method_options, Mapping):
        raise TypeError(f"method_options must map method names to option dicts, got {type(method_options).__name__}")
    if maps is not None and not isinstance(maps, Mapping):
        raise TypeError(f"maps must map method names to (N, H, W) maps, got {type(maps).__name__}")
    items = _items(dataset, n)
    for m in chosen:
        need = METRICS[m][1]
        if need is not None and any(need not in it for it in items):
            raise ValueError(
                f"metric {m!r} needs {need!r} in every dataset item (object {need} of the explained class); "
                f"this dataset has none: drop {m!r} from metrics or use a dataset with {need}, e.g. zoo.ShapeScenes"
            )
    options = method_options or {}
    device = next(model.parameters()).device
    randomized = randomized_copy(model, None, seed) if "sanity" in chosen else None

    skipped: dict[str, str] = {}
    sums: dict[tuple[str, str], list[float]] = {(me, mt): [] for me in names for mt in chosen}
    map_time: dict[str, float] = dict.fromkeys(names, 0.0)
    metric_time: dict[tuple[str, str], float] = dict.fromkeys(sums, 0.0)
    total_steps = len(names) * math.ceil(len(items) / batch_size)
    done = 0
    for s in range(0, len(items), batch_size):
        batch = items[s : s + batch_size]
        x = torch.stack([it["image"] for it in batch]).to(device)
        labels = torch.tensor([int(it["label"]) for it in batch], device=device)
        size = (int(x.shape[2]), int(x.shape[3]))
        masks = (
            torch.stack([torch.as_tensor(it["mask"]) == it["label"] + 1 for it in batch])
            if any(METRICS[m][1] == "mask" for m in chosen)
            else None
        )
        true_boxes: list[torch.Tensor] = []
        regions = None
        if any(METRICS[m][1] == "boxes" for m in chosen):
            for it in batch:
                b = torch.as_tensor(it["boxes"]).reshape(-1, 4)
                keep = torch.as_tensor(it.get("box_labels", torch.full((len(b),), it["label"]))) == it["label"]
                if not keep.any():
                    raise ValueError("an item has no box of its label; box metrics need the explained object's box")
                true_boxes.append(b[keep])
            regions = torch.stack([torch.stack([box_mask(b, size) for b in tb]).any(0) for tb in true_boxes])
        if s == 0:
            with torch.no_grad(), eval_mode(model):
                model(x[:1])  # Why: warm-up, so the first method's time is not the allocator's
        for name in list(names):
            t0 = time.perf_counter()
            try:
                if maps is not None and name in maps:
                    given = maps[name][s : s + len(batch)]
                    emap = torch.as_tensor(np.asarray(given)) if not isinstance(given, torch.Tensor) else given
                    emap = emap.to(device=device, dtype=x.dtype)
                else:
                    emap = _explain.explain(model, x, name, labels, **options.get(name, {})).detach()
            except ValueError as e:
                # Why: with methods=None, methods that do not apply to this model (attention
                # rollout on a CNN) are left out, not fatal; a named method's error stands.
                if methods is not None or s > 0:
                    raise
                names.remove(name)
                skipped[name] = str(e)
                done += math.ceil(len(items) / batch_size)
                continue
            map_time[name] += time.perf_counter() - t0
            pred_boxes = None
            for mt in chosen:
                t0 = time.perf_counter()
                if mt == "pointing-game":
                    assert masks is not None
                    v = pointing_game(emap, masks, tolerance, on_empty="miss").double()
                elif mt == "energy-pointing":
                    assert regions is not None
                    v = energy_pointing(emap, regions).double()
                elif mt in ("corloc", "box-iou"):
                    if pred_boxes is None:
                        pred_boxes = boxes_from_maps(emap.cpu(), threshold, on_empty="zero")
                    iou = torch.stack([box_iou(p[None], tb).max() for p, tb in zip(pred_boxes, true_boxes)])
                    v = (iou >= 0.5).double() if mt == "corloc" else iou
                elif mt == "grabcut-iou":
                    assert masks is not None
                    v = torch.tensor([_grabcut_iou(img, one, k) for img, one, k in zip(x.cpu(), emap.cpu(), masks)])
                elif mt == "deletion":
                    v = deletion(model, x, emap, labels, steps=steps)
                elif mt == "insertion":
                    v = insertion(model, x, emap, labels, steps=steps)
                elif mt in ("road-morf", "road-lerf"):
                    v = road(model, x, emap, labels, order=mt[5:], fractions=road_fractions, seed=seed)[0]
                else:  # sanity
                    assert randomized is not None
                    rnd = _explain.explain(randomized, x, name, labels, **options.get(name, {}))
                    # Why NaN: a flat map has no rank correlation; NaN is left out of the mean (see n).
                    v = spearman(emap, rnd, on_constant="nan")
                metric_time[(name, mt)] += time.perf_counter() - t0
                sums[(name, mt)].extend(float(a) for a in v.cpu())
            done += 1
            if progress is not None:
                progress(done / total_steps)
    rows = []
    for (me, mt), vals in sums.items():
        if me in skipped:
            continue
        finite = [v for v in vals if not math.isnan(v)]
        rows.append(
            {
                "method": me,
                "metric": mt,
                "value": sum(finite) / len(finite) if finite else float("nan"),
                "higher_is_better": METRICS[mt][0],
                "n": len(finite),
                "seconds_per_image": map_time[me] / len(items),
                "metric_seconds_per_image": metric_time[(me, mt)] / len(items),
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["skipped"] = skipped
    return table
