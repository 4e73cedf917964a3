"""Property-based fuzzing of ``metrics``, ``localize`` and ``features`` (hypothesis): over maps,
masks, boxes, images, embeddings and settings, valid and wild (NaN, inf, constant, empty, wrong
shape or dtype, bools and floats where ints belong, out-of-range classes), every public call
either returns a finite result of the right shape or raises a ValueError or TypeError with a
message, and leaves the tiny models exactly as they were (no hook, same state_dict, training and
requires_grad flags, no .grad).

Fixed example count and derandomised, so CI runs the same examples each time (about 12 s on a
shared 2-core machine). Run with ``derandomize=False`` and a larger count to search further.
Run with ``-s`` to see the counts (examples per function, results and errors by kind).
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from guidewidgets import features, localize, metrics
from guidewidgets.localize import wsss

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = 2000
COUNTS: collections.Counter[str] = collections.Counter()
NAN, INF = float("nan"), float("inf")
# Values that are wrong where a number is expected, each for its own reason.
WILD_NUMBERS = [NAN, INF, -INF, -1, 0, True, "1", None, [1]]
# (No huge count: a million steps or patches is a slow request, not a wrong one.)
# Messages of Python, numpy or torch internals: a ValueError that says one of these names no fix.
FOREIGN = re.compile(
    r"out of bounds|Dimension out of range|could not convert|range\(\) arg|values to unpack|zero-size array"
    r"|must match the size|Expected reduction dim|object is not (iterable|subscriptable)|unsupported operand"
)
WILD_INTS = [0, -1, 2.5, True, NAN, "2", None]


class Net(nn.Module):
    """A tiny classifier: conv-BN-ReLU(inplace)-conv, global average pool, 3 classes."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Conv2d(4, 4, 3, padding=1)
        )
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean((2, 3)))


def build_models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    models: dict[str, nn.Module] = {"rgb": Net(3), "grey": Net(1).eval(), "seg": nn.Conv2d(3, 2, 1).eval()}
    models["rgb"].train()  # one model in training mode: it must stay so, with unchanged statistics
    models["grey"].features[0].weight.requires_grad_(False)  # a frozen layer stays frozen
    return models


MODELS = build_models()


def snapshot(model: nn.Module) -> tuple:
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(n, m.training) for n, m in model.named_modules()],
        [(n, p.requires_grad, p.grad is None) for n, p in model.named_parameters()],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()),
    )


def assert_unchanged(before: tuple, after: tuple) -> None:
    sd0, train0, params0, hooks0 = before
    sd1, train1, params1, hooks1 = after
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0), "state_dict changed"
    assert train0 == train1, "training flags changed"
    assert params0 == params1, "requires_grad flags changed or .grad written"
    assert hooks1 == hooks0 == 0, "hooks left on the model"


# --- values, mostly good, sometimes wild ---------------------------------------------------------------


# Wild values one example may still draw: at most two, so most calls have one thing wrong (its own
# refusal is seen) and many have none (their results are checked).
BUDGET = [0]


def go_wild(draw, one_in: int) -> bool:
    """True once in ``one_in`` draws while the example's budget of wild values lasts."""
    if BUDGET[0] > 0 and draw(st.integers(1, one_in)) == one_in:
        BUDGET[0] -= 1
        return True
    return False


def sometimes(draw, normal, wild, one_in: int = 6):
    """``normal`` most of the time; a value from ``wild`` once in ``one_in`` draws (within the budget)."""
    return draw(wild) if go_wild(draw, one_in) else draw(normal)


def number(draw, normal, wild=WILD_NUMBERS, one_in: int = 6):
    return sometimes(draw, normal, st.sampled_from(wild), one_in)


def integer(draw, normal, wild=WILD_INTS, one_in: int = 6):
    return sometimes(draw, normal, st.sampled_from(wild), one_in)


def rand(draw, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))


def tensor(draw, shape: tuple[int, ...], kind: str = "map") -> Any:
    """A map (or image) of ``shape``: usually random, else constant, holding NaN/inf, another dtype,
    another shape, empty, numpy, a list or no tensor at all."""
    wild = draw(st.integers(1, 13)) if go_wild(draw, 3) else 0
    t = rand(draw, shape)
    if kind == "map" and draw(st.booleans()):
        t = t - 0.3  # signed maps: some pixels negative
    if wild == 1:
        t = torch.full(shape, draw(st.sampled_from([0.0, 0.5, -1.0])))
    elif wild == 2 and t.numel():
        t.view(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.sampled_from([NAN, INF, -INF]))
    elif wild == 3:
        t = (t * 10).long()
    elif wild == 4:
        t = t > 0.5
    elif wild == 5:
        t = t.double()
    elif wild == 6 and len(shape) > 1:
        t = t[..., :-1] if shape[-1] > 1 else t[..., None]  # another width
    elif wild == 7:
        t = t[None]
    elif wild == 8 and len(shape) > 1:
        t = t[0]
    elif wild == 9:
        t = t[..., :0]
    elif wild == 10:
        return t.numpy()
    elif wild == 11:
        return t.tolist()
    elif wild == 12:
        return draw(st.sampled_from([None, "map", 3.0]))
    elif wild == 13:
        t = torch.complex(t, t)
    return t


def mask(draw, shape: tuple[int, ...]) -> Any:
    m = rand(draw, shape) > 0.6
    wild = draw(st.integers(1, 7)) if go_wild(draw, 4) else 0
    if wild == 1:
        return m.float()  # 0/1 floats: allowed
    if wild == 2:
        return rand(draw, shape)  # a map passed as a mask
    if wild == 3:
        return torch.zeros(shape, dtype=torch.bool)  # empty
    if wild == 4 and len(shape) > 1:
        return m[..., :-1] if shape[-1] > 1 else m[..., None]
    if wild == 5:
        f = m.float()
        f.view(-1)[0] = NAN
        return f
    if wild == 6:
        return m.numpy()
    if wild == 7:
        return "mask"
    return m


def box(draw, size: int = 12) -> Any:
    """``[x0, y0, x1, y1]``: valid (possibly empty or outside the image), or inverted, NaN, short."""
    x0, y0 = draw(st.integers(-2, size)), draw(st.integers(-2, size))
    b: list[Any] = [x0, y0, x0 + draw(st.integers(0, size)), y0 + draw(st.integers(0, size))]
    wild = draw(st.integers(1, 6)) if go_wild(draw, 5) else 0
    if wild == 1:
        b[0], b[2] = b[2] + 1, b[0]  # inverted
    elif wild == 2:
        b[draw(st.integers(0, 3))] = draw(st.sampled_from([NAN, INF]))
    elif wild == 3:
        b = b[:3]
    elif wild == 4:
        b[0] = b[0] + 0.5
    elif wild == 5:
        return "box"
    elif wild == 6:
        return [b, b[:2]]
    return b


def target(draw, b: int, classes: int = 3) -> Any:
    return sometimes(
        draw,
        st.one_of(
            st.none(), st.integers(0, classes - 1), st.lists(st.integers(0, classes - 1), min_size=b, max_size=b)
        ),
        st.one_of(
            st.integers(-2, classes + 5),
            st.lists(st.integers(0, classes - 1), min_size=0, max_size=4),
            st.sampled_from(["cat", 1.5, True, torch.tensor([0.5]), lambda out: out[:, 0]]),
        ),
    )


def model_and_images(draw) -> tuple[str, Any, int, int, int]:
    name = sometimes(draw, st.just("rgb"), st.sampled_from(["grey", "seg"]))
    c = {"grey": 1}.get(name, 3)
    b, h, w = draw(st.integers(1, 3)), draw(st.integers(3, 10)), draw(st.integers(3, 10))
    x = tensor(draw, (b, c, h, w), kind="image")
    if isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == c and go_wild(draw, 8):
        x = x.expand(-1, 3, -1, -1).contiguous() if c == 1 else x[:, :1]  # the wrong channel count
    return name, x, b, h, w


# --- one case per public function: (call, check of the result) ------------------------------------------


Case = tuple[Callable[[], Any], Callable[[Any], None]]


def finite(t: torch.Tensor, shape: tuple[int, ...] | None = None) -> None:
    assert isinstance(t, torch.Tensor), type(t)
    if shape is not None:
        assert tuple(t.shape) == shape, (tuple(t.shape), shape)
    if t.is_floating_point():
        assert torch.isfinite(t).all(), "non-finite result"


def in_unit(t: torch.Tensor, shape: tuple[int, ...] | None = None) -> None:
    finite(t, shape)
    assert bool(((t >= -1e-9) & (t <= 1 + 1e-9)).all()), "result outside [0, 1]"


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
        return lambda: localize.box_iou(a, c), lambda r: in_unit(r, ())
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


CASES: dict[str, Callable[[Any], Case]] = {
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
    "activation_maps": case_activation_maps,
    "space": case_space,
    "dataset": case_dataset,
    "crop/tile": case_crop_tile,
    "maximize": case_maximize,
}


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    total = COUNTS["examples"]
    per = ", ".join(f"{k} {v}" for k, v in sorted(COUNTS.items()) if k != "examples")
    print(f"\nfuzz metrics/localize/features: {total} examples; {per}")


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.data())
def test_scores_boxes_and_features_are_finite_or_a_clear_error_and_leave_the_model_alone(data):
    name = data.draw(st.sampled_from(sorted(CASES)))
    BUDGET[0] = data.draw(st.sampled_from([0, 1, 1, 2]))
    call, check = data.draw(st.composite(lambda draw: CASES[name](draw))())
    before = {k: snapshot(m) for k, m in MODELS.items()}
    COUNTS["examples"] += 1
    try:
        result = call()
    except (ValueError, TypeError) as e:
        assert str(e).strip(), f"{type(e).__name__} without a message"
        assert not FOREIGN.search(str(e)), f"an internal message, not ours: {e}"
        COUNTS[f"{name}: error"] += 1
    else:
        check(result)
        COUNTS[f"{name}: ok"] += 1
    finally:
        for k, m in MODELS.items():
            assert_unchanged(before[k], snapshot(m))


def test_counts_are_plausible():
    """Runs after the fuzz test (file order): every function was tried and most of them succeeded sometimes."""
    if COUNTS["examples"] == 0:
        pytest.skip("run together with the fuzz test")
    for name in CASES:
        assert COUNTS[f"{name}: ok"] + COUNTS[f"{name}: error"] > 0, f"{name} never tried"
        assert COUNTS[f"{name}: ok"] > 0, f"{name} never succeeded: the fuzz only sees errors"
