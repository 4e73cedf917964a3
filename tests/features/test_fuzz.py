"""Property-based fuzzing of ``features`` (hypothesis; shared strategies: tests/fuzz_strategies.py):
over images, embeddings, layers and settings, valid and wild (NaN, inf, constant, empty, wrong
shape or dtype, bools and floats where ints belong), every public call either returns a finite
result of the right shape or raises a ValueError or TypeError with a message, and leaves the tiny
models exactly as they were (no hook, same state_dict, training and requires_grad flags, no .grad).

Fixed example count and derandomised, so CI runs the same examples each time. Run with ``-s`` to
see the counts (examples per function, results and errors by kind).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from guidewidgets import features

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import strategies as st  # noqa: E402

from tests.fuzz_strategies import (  # noqa: E402
    MODELS,
    Case,
    box,
    finite,
    fuzz_tests,
    in_unit,
    integer,
    model_and_images,
    number,
    sometimes,
    tensor,
)


def case_activation_maps(draw) -> Case:
    name, x, *_ = model_and_images(draw)
    model = MODELS[name]
    layer = sometimes(draw, st.just("features.2" if name != "seg" else ""), st.sampled_from(["fc", "nope", "features"]))
    image = x[0] if isinstance(x, torch.Tensor) and x.dim() == 4 and draw(st.booleans()) else x
    sort = sometimes(draw, st.sampled_from(["mean", "max", None, "none"]), st.just("median"))

    def check(r):
        maps, order = r
        finite(maps)
        assert maps.dim() == 3 and sorted(order.tolist()) == list(range(len(maps)))

    return lambda: features.activation_maps(model, layer, image, sort), check


def case_space(draw) -> Case:
    n, d = draw(st.integers(1, 8)), draw(st.integers(1, 4))
    v = tensor(draw, (n, d))
    fn = draw(st.sampled_from(["neighbours", "rate", "project"]))
    if fn == "neighbours":
        q = sometimes(
            draw,
            st.one_of(st.integers(0, n - 1), st.lists(st.integers(0, n - 1), max_size=3)),
            st.sampled_from([-1, n, 1.5, True, [0.5], torch.tensor([0.0]), "0"]),
        )
        k = integer(draw, st.integers(1, max(1, n - 1)))
        nq = 1 if isinstance(q, int) else len(q) if isinstance(q, list) else 0
        return lambda: features.neighbours(v, q, k), lambda r: finite(r, (nq, k))
    if fn == "rate":
        labels = torch.arange(n) % 2 if isinstance(v, torch.Tensor) else torch.zeros(0)
        e = features.Embeddings(v, labels, "x") if isinstance(v, torch.Tensor) else v
        k = integer(draw, st.integers(1, max(1, n - 1)))
        queries = sometimes(draw, st.none(), st.sampled_from([torch.zeros(0, dtype=torch.long), [0], [n]]))
        return lambda: features.same_class_rate(e, k, queries), lambda r: in_unit(torch.tensor(r))
    method = sometimes(draw, st.just("pca"), st.sampled_from(["tsne", "umap"]), one_in=8)
    perplexity = number(draw, st.floats(1, 30))

    def check(r):
        assert isinstance(r, np.ndarray) and r.shape == (n, 2) and np.isfinite(r).all()

    return lambda: features.project(v, method, 0, perplexity), check


def case_dataset(draw) -> Case:
    name, x, b, *_ = model_and_images(draw)
    model = MODELS[name]
    layer = sometimes(draw, st.just("features.0"), st.sampled_from(["fc", "nope"]))
    bs = integer(draw, st.integers(1, 3))
    fn = draw(st.sampled_from(["embed", "pixels", "top"]))
    if fn == "embed":
        pool = sometimes(draw, st.sampled_from(["avg", "max"]), st.just("sum"))
        return lambda: features.embed(model, x, layer, pool, bs), lambda r: finite(r.vectors, (b, 4))
    if fn == "pixels":
        return lambda: features.pixels(x, bs), lambda r: finite(r.vectors)
    k = integer(draw, st.integers(1, 4))
    channels = sometimes(draw, st.one_of(st.none(), st.integers(0, 3)), st.sampled_from([4, -1, 1.5, [], True]))

    def check(r):
        rows = 4 if channels is None else 1
        assert r.values.shape == r.images.shape == (rows, k) and r.boxes.shape == (rows, k, 4)
        found = r.images >= 0
        assert not torch.isnan(r.values).any() and torch.isfinite(r.values[found]).all()

    return lambda: features.top_patches(model, layer, x, channels, k, bs), check


def case_crop_tile(draw) -> Case:
    fn = draw(st.sampled_from(["crop", "tile", "normalize"]))
    if fn == "crop":
        image = tensor(draw, (3, 8, 8), kind="image")
        bx = box(draw, 8)

        def check(r):
            x0, y0, x1, y1 = (int(v) for v in bx)
            finite(r, (3, y1 - y0, x1 - x0))

        return lambda: features.crop(image, bx), check
    n, c = draw(st.integers(1, 5)), draw(st.sampled_from([1, 3]))
    tiles = tensor(draw, (n, c, 3, 3))
    if fn == "normalize":
        return lambda: features.normalize_each(tiles), lambda r: in_unit(r, tuple(np.shape(tiles)))
    cols = sometimes(draw, st.one_of(st.none(), st.integers(1, 6)), st.sampled_from([0, -1, 2.5, True]))
    pad = integer(draw, st.integers(0, 2))

    def check_tile(r):
        finite(r)
        assert r.dim() == 3 and r.shape[0] == c

    return lambda: features.tile(tiles, cols, pad), check_tile


def case_maximize(draw) -> Case:
    name = sometimes(draw, st.just("rgb"), st.sampled_from(["grey", "seg"]))
    model = MODELS[name]
    kind = sometimes(draw, st.sampled_from(["class", "channel", "neuron"]), st.just("layer"))
    layer = None if kind == "class" else sometimes(draw, st.just("features.0"), st.sampled_from([None, "fc", "x"]))
    targets = sometimes(
        draw,
        st.one_of(st.integers(0, 1), st.lists(st.integers(0, 1), min_size=1, max_size=2)),
        st.sampled_from([5, -1, [], 1.5, "a"]),
    )
    size = sometimes(
        draw, st.tuples(st.integers(2, 8), st.integers(2, 8)), st.sampled_from([(0, 4), (4,), (2.5, 4), 8])
    )
    position = sometimes(draw, st.none(), st.sampled_from([(0, 0), (1, 1), (9, 0), (1.5, 0), (-1, 0)]))
    kw = dict(
        steps=integer(draw, st.integers(1, 2)),
        lr=number(draw, st.sampled_from([0.05, 0.5])),
        l2=number(draw, st.sampled_from([0.0, 1e-3])),
        tv=number(draw, st.sampled_from([0.0, 1e-3])),
        blur=number(draw, st.sampled_from([0.0, 0.5, 1e-200])),
        blur_every=integer(draw, st.integers(1, 2)),
        jitter=integer(draw, st.integers(0, 2)),
        param=sometimes(draw, st.sampled_from(["pixel", "fourier"]), st.just("wavelet")),
        decorrelate=draw(st.booleans()),
    )

    def check(r):
        in_unit(r.images)
        assert r.images.shape[0] == len(r.targets) and r.images.shape[1] == (1 if name == "grey" else 3)
        finite(r.history, (kw["steps"], len(r.targets)))
        finite(r.final, (len(r.targets),))

    return lambda: features.maximize(model, targets, kind, layer, position, size, **kw), check  # type: ignore[arg-type]


CASES: dict[str, Any] = {
    "activation_maps": case_activation_maps,
    "space": case_space,
    "dataset": case_dataset,
    "crop/tile": case_crop_tile,
    "maximize": case_maximize,
}
# The fixture that prints the counts, the fuzz test, and the check that every case ran (after it).
report_counts, test_features_are_finite_or_a_clear_error_and_leave_the_model_alone, test_counts_are_plausible = (
    fuzz_tests(CASES, "features", 700)
)
