"""One call that scores explanation methods on a labelled dataset and returns a tidy table."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .. import explain as _explain
from ..checks import check_int, check_number
from ..hooks import eval_mode
from ..localize.boxes import EmptyMapError, box_mask, boxes_from_maps, check_threshold, mask_iou
from ..localize.grabcut import grabcut_from_map
from .boxes import box_iou
from .faithfulness import deletion, insertion, road
from .pointing import energy_pointing, pointing_game
from .sanity import randomized_copy, spearman

__all__ = ["METRICS", "MetricInfo", "evaluate"]


@dataclass
class _Batch:
    """What every metric of one batch may read: the images, their labels and truths, the settings,
    and a memo of work shared by metrics on the same map (its boxes)."""

    model: nn.Module
    x: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None
    regions: torch.Tensor | None
    true_boxes: list[torch.Tensor]
    settings: dict[str, Any]
    method: str = ""
    memo: dict[str, Any] = field(default_factory=dict)


class MetricInfo(NamedTuple):
    """One metric: (higher is better, what the dataset must give, one-line description, scorer).
    The scorer maps a batch and its (B, H, W) maps to one value per image (B,)."""

    higher_is_better: bool
    needs: str | None
    description: str
    score: Callable[[_Batch, torch.Tensor], torch.Tensor]


def _pointing(b: _Batch, emap: torch.Tensor) -> torch.Tensor:
    assert b.masks is not None
    return pointing_game(emap, b.masks, b.settings["tolerance"], on_empty="miss").double()


def _energy(b: _Batch, emap: torch.Tensor) -> torch.Tensor:
    assert b.regions is not None
    return energy_pointing(emap, b.regions).double()


def _box_ious(b: _Batch, emap: torch.Tensor) -> torch.Tensor:
    if "box_ious" not in b.memo:  # Why memo: corloc and box-iou share one map's boxes
        pred = boxes_from_maps(emap.cpu(), b.settings["threshold"], on_empty="zero")
        b.memo["box_ious"] = torch.stack([box_iou(p, tb).max() for p, tb in zip(pred, b.true_boxes)])
    return b.memo["box_ious"]


def _grabcut_iou(image: torch.Tensor, m: torch.Tensor, truth: torch.Tensor) -> float:
    try:
        return mask_iou(grabcut_from_map(image, m), truth)
    except EmptyMapError:
        return 0.0  # Why: a blank map segments nothing; score it, do not stop the run


def _grabcut(b: _Batch, emap: torch.Tensor) -> torch.Tensor:
    assert b.masks is not None
    return torch.tensor([_grabcut_iou(img, one, k) for img, one, k in zip(b.x.cpu(), emap.cpu(), b.masks)])


def _road(order: str) -> Callable[[_Batch, torch.Tensor], torch.Tensor]:
    def score(b: _Batch, emap: torch.Tensor) -> torch.Tensor:
        st = b.settings
        return road(b.model, b.x, emap, b.labels, order=order, fractions=st["road_fractions"], seed=st["seed"])[0]

    return score


def _sanity(b: _Batch, emap: torch.Tensor) -> torch.Tensor:
    st = b.settings
    rnd = _explain.explain(st["randomized"], b.x, b.method, b.labels, **st["options"].get(b.method, {}))
    # Why NaN: a flat map has no rank correlation; NaN is left out of the mean (see n).
    return spearman(emap, rnd, on_constant="nan")


#: Metric name -> :class:`MetricInfo` (higher is better, what the dataset must give, description,
#: scorer); ``METRICS[name][0]`` is still "higher is better". Register a metric by adding it here.
METRICS: dict[str, MetricInfo] = {
    "pointing-game": MetricInfo(
        True, "mask", "share of maps whose maximum is on the object (Zhang et al. 2016)", _pointing
    ),
    "energy-pointing": MetricInfo(
        True, "boxes", "share of positive map energy inside the object's box (Score-CAM)", _energy
    ),
    "corloc": MetricInfo(
        True,
        "boxes",
        "share of 20 %-threshold largest-component boxes with IoU >= 0.5",
        lambda b, m: (_box_ious(b, m) >= 0.5).double(),
    ),
    "box-iou": MetricInfo(True, "boxes", "mean IoU of the map's box with the object's box", _box_ious),
    "grabcut-iou": MetricInfo(
        True, "mask", "mask IoU of GrabCut seeded by the map (>= 50 % of max fg, < 20 % bg)", _grabcut
    ),
    "deletion": MetricInfo(
        False,
        None,
        "area under the probability curve as top pixels go black (RISE)",
        lambda b, m: deletion(b.model, b.x, m, b.labels, steps=b.settings["steps"]),
    ),
    "insertion": MetricInfo(
        True,
        None,
        "area under the probability curve as top pixels return to a blurred copy (RISE)",
        lambda b, m: insertion(b.model, b.x, m, b.labels, steps=b.settings["steps"]),
    ),
    "road-morf": MetricInfo(
        False, None, "probability after removing the most relevant pixels, imputed (ROAD)", _road("morf")
    ),
    "road-lerf": MetricInfo(
        True, None, "probability after removing the least relevant pixels, imputed (ROAD)", _road("lerf")
    ),
    "sanity": MetricInfo(
        False, None, "Spearman correlation with the map of a fully randomised copy (Adebayo et al.)", _sanity
    ),
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


def _check_settings(
    chosen: list[str],
    batch_size: int,
    seed: int,
    steps: int,
    threshold: float,
    tolerance: float | None,
    method_options: object,
    maps: object,
) -> None:
    for m in chosen:
        if m not in METRICS:
            raise ValueError(f"unknown metric {m!r}; choose from {', '.join(METRICS)}")
    check_int(batch_size, "batch_size", 1)
    check_int(seed, "seed", 0)
    # Checked before any map is made: a bad setting should not cost a whole batch of explanations.
    check_int(steps, "steps", 1)
    check_threshold(threshold)
    if tolerance is not None:
        check_number(tolerance, "tolerance (pixels)", 0.0)
    if method_options is not None and not isinstance(method_options, Mapping):
        raise TypeError(f"method_options must map method names to option dicts, got {type(method_options).__name__}")
    if maps is not None and not isinstance(maps, Mapping):
        raise TypeError(f"maps must map method names to (N, H, W) maps, got {type(maps).__name__}")


def _check_needs(chosen: list[str], items: list[dict]) -> None:
    for m in chosen:
        need = METRICS[m].needs
        if need is not None and any(need not in it for it in items):
            raise ValueError(
                f"metric {m!r} needs {need!r} in every dataset item (object {need} of the explained class); "
                f"this dataset has none: drop {m!r} from metrics or use a dataset with {need}, e.g. zoo.ShapeScenes"
            )


def _make_batch(model: nn.Module, batch: list[dict], chosen: list[str], settings: dict[str, Any]) -> _Batch:
    device = next(model.parameters()).device
    x = torch.stack([it["image"] for it in batch]).to(device)
    labels = torch.tensor([int(it["label"]) for it in batch], device=device)
    size = (int(x.shape[2]), int(x.shape[3]))
    needs = {METRICS[m].needs for m in chosen}
    masks = torch.stack([torch.as_tensor(it["mask"]) == it["label"] + 1 for it in batch]) if "mask" in needs else None
    true_boxes: list[torch.Tensor] = []
    regions = None
    if "boxes" in needs:
        for it in batch:
            b = torch.as_tensor(it["boxes"]).reshape(-1, 4)
            keep = torch.as_tensor(it.get("box_labels", torch.full((len(b),), it["label"]))) == it["label"]
            if not keep.any():
                raise ValueError("an item has no box of its label; box metrics need the explained object's box")
            true_boxes.append(b[keep])
        regions = torch.stack([torch.stack([box_mask(b, size) for b in tb]).any(0) for tb in true_boxes])
    return _Batch(model, x, labels, masks, regions, true_boxes, settings)


def _method_map(b: _Batch, name: str, start: int, maps: Mapping[str, Any] | None) -> torch.Tensor:
    if maps is not None and name in maps:
        given = maps[name][start : start + len(b.x)]
        emap = torch.as_tensor(np.asarray(given)) if not isinstance(given, torch.Tensor) else given
        return emap.to(device=b.x.device, dtype=b.x.dtype)
    return _explain.explain(b.model, b.x, name, b.labels, **b.settings["options"].get(name, {})).detach()


def _table(
    sums: dict[tuple[str, str], list[float]],
    skipped: dict[str, str],
    map_time: dict[str, float],
    metric_time: dict[tuple[str, str], float],
    n: int,
) -> Any:
    import pandas as pd

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
                "higher_is_better": METRICS[mt].higher_is_better,
                "n": len(finite),
                "seconds_per_image": map_time[me] / n,
                "metric_seconds_per_image": metric_time[(me, mt)] / n,
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["skipped"] = skipped
    return table


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
    names = list(_explain.methods()) if methods is None else [_explain.method_info(m).name for m in methods]
    chosen = list(METRICS) if metrics is None else list(metrics)
    _check_settings(chosen, batch_size, seed, steps, threshold, tolerance, method_options, maps)
    items = _items(dataset, n)
    _check_needs(chosen, items)
    settings: dict[str, Any] = dict(tolerance=tolerance, threshold=threshold, steps=steps, seed=seed)
    settings.update(road_fractions=road_fractions, options=method_options or {}, randomized=None)
    if "sanity" in chosen:
        settings["randomized"] = randomized_copy(model, None, seed)
    skipped: dict[str, str] = {}
    sums: dict[tuple[str, str], list[float]] = {(me, mt): [] for me in names for mt in chosen}
    map_time: dict[str, float] = dict.fromkeys(names, 0.0)
    metric_time: dict[tuple[str, str], float] = dict.fromkeys(sums, 0.0)
    per_method = math.ceil(len(items) / batch_size)
    total_steps, done = len(names) * per_method, 0
    for s in range(0, len(items), batch_size):
        b = _make_batch(model, items[s : s + batch_size], chosen, settings)
        if s == 0:
            with torch.no_grad(), eval_mode(model):
                model(b.x[:1])  # Why: warm-up, so the first method's time is not the allocator's
        for name in list(names):
            t0 = time.perf_counter()
            try:
                emap = _method_map(b, name, s, maps)
            except ValueError as e:
                # Why: with methods=None, methods that do not apply to this model (attention
                # rollout on a CNN) are left out, not fatal; a named method's error stands.
                if methods is not None or s > 0:
                    raise
                names.remove(name)
                skipped[name] = str(e)
                done += per_method
                continue
            map_time[name] += time.perf_counter() - t0
            b.method, b.memo = name, {}
            for mt in chosen:
                t0 = time.perf_counter()
                v = METRICS[mt].score(b, emap)
                metric_time[(name, mt)] += time.perf_counter() - t0
                sums[(name, mt)].extend(float(a) for a in v.cpu())
            done += 1
            if progress is not None:
                progress(done / total_steps)
    return _table(sums, skipped, map_time, metric_time, len(items))
