"""Property-based fuzzing of ``metrics`` and ``localize`` (hypothesis; ``features``:
tests/features/test_fuzz.py, shared strategies: tests/fuzz_strategies.py): over maps, masks,
label maps, boxes, images and settings, valid and wild (NaN, inf, constant, empty, wrong
shape or dtype, bools and floats where ints belong, out-of-range classes), every public call
either returns a finite result of the right shape or raises a ValueError or TypeError with a
message, and leaves the tiny models exactly as they were (no hook, same state_dict, training and
requires_grad flags, no .grad).

Fixed example count and derandomised, so CI runs the same examples each time (about 12 s on a
shared 2-core machine). Run with ``derandomize=False`` and a larger count to search further.
Run with ``-s`` to see the counts (examples per function, results and errors by kind).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from guidewidgets import localize, metrics
from guidewidgets.localize import wsss

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import strategies as st  # noqa: E402

from tests.fuzz_strategies import (  # noqa: E402
    MODELS,
    NAN,
    WILD_NUMBERS,
    Case,
    box,
    finite,
    fuzz_tests,
    go_wild,
    in_unit,
    integer,
    mask,
    model_and_images,
    number,
    rand,
    sometimes,
    target,
    tensor,
)


def case_pointing(draw) -> Case:
    b, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 9))
    m, k = tensor(draw, (b, h, w)), mask(draw, (b, h, w))
    tol = number(draw, st.one_of(st.none(), st.floats(0, 20)))
    empty = sometimes(draw, st.sampled_from(["raise", "miss"]), st.just("zero"))
    if draw(st.booleans()):
        return lambda: metrics.pointing_game(m, k, tol, on_empty=empty), lambda r: finite(r, (b,))
    return lambda: metrics.energy_pointing(m, k), lambda r: in_unit(r, (b,))


def case_spearman(draw) -> Case:
    b, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    a, c = tensor(draw, (b, h, w)), tensor(draw, (b, h, w))
    absolute = draw(st.booleans())

    def check(r):
        finite(r, (b,))
        assert bool((r.abs() <= 1 + 1e-9).all())

    return lambda: metrics.spearman(a, c, absolute), check


def case_order_auc(draw) -> Case:
    b, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    if draw(st.booleans()):
        m = tensor(draw, (b, h, w))

        def check(r):
            bb, hh, ww = m.shape  # as given: a wild width is still a valid batch of maps
            finite(r, (bb, hh * ww))
            assert bool((r.sort(1).values == torch.arange(hh * ww)).all()), "not a ranking"

        return lambda: metrics.relevance_order(m), check
    n = draw(st.integers(1, 5))
    curves = tensor(draw, (b, n))
    return lambda: metrics.auc(curves), lambda r: finite(r, (b,))


def case_perturbation(draw) -> Case:
    name, x, b, h, w = model_and_images(draw)
    m, t = tensor(draw, (b, h, w)), target(draw, b)
    steps, bs = integer(draw, st.integers(1, 4)), integer(draw, st.integers(1, 40))
    fn = draw(st.sampled_from(["deletion", "insertion", "curves", "road"]))
    model = MODELS[name]
    if fn == "curves":
        mode = sometimes(draw, st.sampled_from(["deletion", "insertion"]), st.just("erase"))
        sigma = number(draw, st.one_of(st.none(), st.floats(0.3, 4)))
        return (
            lambda: metrics.perturbation_curves(model, x, m, t, mode, steps, sigma, bs),
            lambda r: in_unit(r, (b, steps + 1)),
        )
    if fn == "road":
        fr = sometimes(
            draw, st.lists(st.floats(0.05, 0.95), min_size=1, max_size=2), st.sampled_from([[], [0.0], [NAN], ["0.5"]])
        )
        order = sometimes(draw, st.sampled_from(["morf", "lerf"]), st.just("top"))
        noise = number(draw, st.sampled_from([0.0, 0.01]))

        def check(r):
            in_unit(r[0], (b,))
            in_unit(r[1], (b, len(fr)))

        return lambda: metrics.road(model, x, m, t, order, fr, noise, bs), check
    f = metrics.deletion if fn == "deletion" else metrics.insertion
    return lambda: f(model, x, m, t, steps=steps, batch_size=bs), lambda r: in_unit(r, (b,))


def case_imputation(draw) -> Case:
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    image, removed = tensor(draw, (3, h, w), kind="image"), mask(draw, (h, w))
    noise = number(draw, st.sampled_from([0.0, 0.01]))
    return lambda: metrics.noisy_linear_imputation(image, removed, noise), lambda r: finite(r, tuple(image.shape))


def case_map_to_box(draw) -> Case:
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    thr = number(draw, st.floats(0.05, 0.95), [*WILD_NUMBERS, 1.0, 1.5])
    largest = draw(st.booleans())
    if draw(st.booleans()):
        m = tensor(draw, (h, w))

        def check(r):
            bx, region = r
            hh, ww = np.shape(m)[-2:]  # a (1, H, W) map is accepted as one map
            finite(bx, (4,))
            assert 0 <= bx[0] < bx[2] <= ww and 0 <= bx[1] < bx[3] <= hh, bx
            assert region.shape == (hh, ww) and region.dtype == torch.bool and region.any()

        return lambda: localize.map_to_box(m, thr, largest), check
    b = draw(st.integers(1, 3))
    ms = tensor(draw, (b, h, w))
    on_empty = sometimes(draw, st.sampled_from(["raise", "zero"]), st.just("miss"))
    return lambda: localize.boxes_from_maps(ms, thr, largest, on_empty), lambda r: finite(r, (b, 4))


def case_boxes(draw) -> Case:
    fn = draw(st.sampled_from(["iou", "mask", "and_iou", "corloc"]))
    if fn == "iou":
        a, c = box(draw), box(draw)
        return lambda: localize.box_iou(a, c), lambda r: in_unit(r, (1, 1))
    if fn == "mask":
        bx = box(draw)
        size = sometimes(
            draw, st.tuples(st.integers(1, 12), st.integers(1, 12)), st.sampled_from([(0, 4), (4,), (2.5, 4)])
        )

        def check(r):
            assert r.dtype == torch.bool and tuple(r.shape) == tuple(size)

        return lambda: localize.box_mask(bx, size), check
    if fn == "and_iou":
        m = tensor(draw, (draw(st.integers(1, 8)), draw(st.integers(1, 8))))
        truth = draw(st.one_of(st.none(), st.just(box(draw))))
        thr = number(draw, st.floats(0.05, 0.95))

        def check(r):
            bx, iou = r
            assert bx is None or bx.shape == (4,)
            assert (iou is None) == (truth is None) and (iou is None or 0 <= iou <= 1)

        return lambda: localize.box_and_iou(m, thr, truth), check
    b = draw(st.integers(0, 3))
    pred = [box(draw) for _ in range(b)] if b else torch.zeros(0, 4)
    truth_sets = [
        [box(draw) for _ in range(draw(st.integers(0, 2)))] for _ in range(b + (draw(st.integers(1, 8)) == 1))
    ]
    iou = number(draw, st.floats(0.1, 1.0))

    def check_corloc(r):
        score, best = r
        assert 0 <= score <= 1 and not math.isnan(score)
        in_unit(best, (b,))

    return lambda: localize.corloc(torch.as_tensor(pred) if b else pred, truth_sets, iou), check_corloc


def case_masks(draw) -> Case:
    h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    if draw(st.booleans()):
        p, q = mask(draw, (h, w)), mask(draw, (h, w))
        return lambda: localize.mask_iou(p, q), lambda r: in_unit(torch.tensor(r))
    k = mask(draw, (h, w))

    def check(r):
        assert r.shape == np.shape(k) and r.dtype == bool

    return lambda: localize.largest_component(k), check


def case_grabcut(draw) -> Case:
    h, w = draw(st.integers(2, 12)), draw(st.integers(2, 12))
    image, m = tensor(draw, (3, h, w), kind="image"), tensor(draw, (h, w))
    fg, bg = number(draw, st.floats(0.3, 0.9)), number(draw, st.floats(0.05, 0.3))
    its = integer(draw, st.integers(1, 2))

    def check(r):
        assert r.shape == image.shape[1:] and r.dtype == torch.bool  # map and image may both be off

    return lambda: localize.grabcut_from_map(image, m, fg, bg, its), check


def case_wsss(draw) -> Case:
    b, h, w, k = draw(st.integers(1, 2)), draw(st.integers(2, 8)), draw(st.integers(2, 8)), 6
    fn = draw(st.sampled_from(["masks", "miou", "scribbles"]))
    if fn == "masks":
        cams, present = tensor(draw, (b, k, h, w)), mask(draw, (b, k))
        thr = number(draw, st.floats(0.1, 0.9))
        grabcut = draw(st.integers(1, 4)) == 1
        images = tensor(draw, (b, 3, h, w), kind="image") if grabcut else None

        def check(r):
            finite(r, (cams.shape[0], *cams.shape[2:]))
            assert int(r.min()) >= 0 and int(r.max()) <= k

        return lambda: wsss.masks_from_cams(cams, present, thr, images, grabcut), check
    labels = sometimes(
        draw, st.just((rand(draw, (b, h, w)) * 7).long()), st.sampled_from(["float", "nine", "ignored", "shape"])
    )
    truth = (rand(draw, (b, h, w)) * 7).long()
    if isinstance(labels, str):
        labels = {
            "float": truth.float(),
            "nine": truth + 3,
            "ignored": torch.full_like(truth, wsss.IGNORE),
            "shape": truth[..., :-1],
        }[labels]
    if fn == "miou":
        return lambda: wsss.labels_miou(labels, truth), lambda r: in_unit(torch.tensor(r))

    def check_scribbles(r):
        finite(r, (h, w))

    return lambda: wsss.scribbles(labels[0].numpy(), truth[0].numpy()), check_scribbles


def case_segmentation(draw) -> Case:
    """The one home of segmentation and box scores: confusion, IoU per class, mIoU, box IoU."""
    fn = draw(st.sampled_from(["confusion", "iou", "miou", "box_iou"]))
    if fn == "box_iou":
        n, m = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        a = [box(draw) for _ in range(n)] if draw(st.booleans()) else box(draw)
        c = [box(draw) for _ in range(m)]
        return lambda: metrics.box_iou(a, c), lambda r: in_unit(r, (n if isinstance(a[0], list) else 1, m))
    k = integer(draw, st.integers(1, 5))
    shape = (draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    kk = k if isinstance(k, int) and not isinstance(k, bool) and k > 0 else 3
    pred = torch.randint(0, kk, shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    truth = pred.clone() if draw(st.booleans()) else (pred + 1) % kk
    if go_wild(draw, 3):
        truth = draw(st.sampled_from([truth.float(), truth[:1], truth + kk, truth.numpy(), "mask"]))
    elif draw(st.booleans()):
        truth[0, 0] = 255  # an ignored pixel
    if fn == "confusion":

        def check_conf(r):
            finite(r, (kk, kk))
            assert int(r.sum()) == int((torch.as_tensor(truth) != 255).sum())

        return lambda: metrics.confusion(pred, truth, k), check_conf
    if fn == "iou":
        return lambda: metrics.iou_per_class(pred, truth, k), lambda r: in_unit(r[~r.isnan()])
    return lambda: metrics.miou(pred, truth, k), lambda r: math.isnan(r) or in_unit(torch.tensor(r))


CASES: dict[str, Any] = {
    "pointing": case_pointing,
    "spearman": case_spearman,
    "order/auc": case_order_auc,
    "perturbation": case_perturbation,
    "imputation": case_imputation,
    "map_to_box": case_map_to_box,
    "boxes": case_boxes,
    "masks": case_masks,
    "grabcut": case_grabcut,
    "wsss": case_wsss,
    "segmentation": case_segmentation,
}
# The fixture that prints the counts, the fuzz test, and the check that every case ran (after it).
(
    report_counts,
    test_scores_and_boxes_are_finite_or_a_clear_error_and_leave_the_model_alone,
    test_counts_are_plausible,
) = fuzz_tests(CASES, "metrics/localize", 1400)
