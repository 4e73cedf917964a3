"""Guide refuses bad input with a sentence instead of coercing it (issue 24): options, images,
hint coordinates and classes, strokes, exclude masks, snapshots of another guide, diverging steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from guidewidgets.guide import Guide, GuideState
from tests.guide_models import assert_untouched, image_fixture, snapshot, tiny_fixture  # noqa: F401  (pytest fixtures)


@pytest.mark.parametrize(
    "option,value,error,match",
    [
        ("lr", float("nan"), ValueError, "lr must be a finite number > 0"),
        ("lr", float("inf"), ValueError, "lr must be a finite number > 0"),
        ("lr", 0, ValueError, "lr must be a finite number > 0"),
        ("lr", -0.1, ValueError, "lr must be a finite number > 0"),
        ("lr", True, TypeError, "lr must be"),
        ("lr", "0.1", TypeError, "lr must be"),
        ("keep", float("nan"), ValueError, "keep must be a finite number >= 0"),
        ("keep", -1.0, ValueError, "keep must be a finite number >= 0"),
        ("penalty", float("inf"), ValueError, "penalty must be a finite number >= 0"),
        ("penalty", float("nan"), ValueError, "penalty must be"),
        ("margin", float("nan"), ValueError, "margin must be a finite number >= 0"),
        ("margin", float("-inf"), ValueError, "margin must be"),
        ("bias_weight", -2.0, ValueError, "bias_weight must be"),
        ("steps", 2.5, TypeError, "steps must be an int"),
        ("steps", -1, ValueError, ">= 0"),
        ("spatial", "no", TypeError, "spatial must be True or False"),
        ("fast", 1, TypeError, "fast must be True or False"),
    ],
)
def test_bad_options_are_refused_with_a_sentence(tiny, image, option, value, error, match):
    snap = snapshot(tiny)
    with pytest.raises(error, match=match):
        Guide(tiny, image, **{option: value})
    assert_untouched(tiny, snap)


def test_valid_option_edges_still_work(tiny, image):
    with Guide(tiny, image, keep=0, penalty=0.0, margin=0, steps=np.int64(3), lr=np.float32(0.05)) as g:
        g.add_hint(3, 3, 1)
        assert g.run() <= 3 and g.max_steps == 3


def test_images_the_model_cannot_take_are_refused(tiny, image):
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        Guide(tiny, torch.rand(0, 40, 48))  # no channels
    with pytest.raises(ValueError, match="no pixels"):
        Guide(tiny, torch.rand(3, 0, 48))  # failed inside torch's min() before
    grey = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    with pytest.raises(ValueError, match=r"first conv takes 1 channel.*mean\(0, keepdim=True\)"):
        Guide(grey, image)  # a conv error inside torch before
    with Guide(grey, image.mean(0, keepdim=True), layer="1") as g:  # the model's own channel count
        g.add_hint(1, 1, 2)
        g.run(2)
        assert torch.isfinite(g.logits()).all() and g.logits().shape == (1, 3, 40, 48)
    with pytest.raises(ValueError, match=r"drop the alpha channel"):
        Guide(tiny, torch.rand(4, 40, 48))


def test_a_model_with_nan_output_or_one_class_is_refused(image):
    nan = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 1)).eval()
    with torch.no_grad():
        nan[1].bias[0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        Guide(nan, image, layer="0")
    one = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 1, 1)).eval()
    with pytest.raises(ValueError, match="K >= 2"):
        Guide(one, image, layer="0")


@pytest.mark.parametrize(
    "args,error,match",
    [
        ((2.5, 3, 1), TypeError, "y coordinate must be a whole number"),
        ((True, 3, 1), TypeError, "y coordinate must be a whole number"),
        (("3", 3, 1), TypeError, "y coordinate must be a whole number"),
        ((3, 4.0, 1), TypeError, "x coordinate must be a whole number"),
        ((3, torch.tensor(4.0), 1), TypeError, "x coordinate"),
        ((3, 3, 1.5), TypeError, r"class must be an int index \(0..3\) or a class name"),
        ((3, 3, True), TypeError, "class must be an int index"),
        ((3, 3, torch.tensor(1.0)), TypeError, "class must be an int index"),
        ((3, 3, None), TypeError, "class must be an int index"),
        ((3, 3, 1, "no"), TypeError, "negative must be True or False"),
    ],
)
def test_add_hint_refuses_non_integers_instead_of_truncating(tiny, image, args, error, match):
    with Guide(tiny, image) as g:
        with pytest.raises(error, match=match):
            g.add_hint(*args)
        assert g.hints == [] and g.targets.count == 0


def test_add_hint_takes_python_numpy_and_torch_integers_and_names(tiny, image):
    with Guide(tiny, image) as g:
        assert g.add_hint(np.int64(3), torch.tensor(4), np.int32(1)).points == ((3, 4),)
        assert g.add_hint(3, 4, "class2").cls == 2
        assert g.add_hint(torch.tensor(5, dtype=torch.int32), 6, np.uint8(3), negative=np.bool_(True)).negative
        assert all(isinstance(v, int) for h in g.hints for p in h.points for v in p)


@pytest.mark.parametrize(
    "points,kwargs,error,match",
    [
        ((3, 4), {}, ValueError, r"for one point \[\(3, 4\)\]"),  # a single pair (crashed with 'int' not iterable)
        ([(3.5, 4)], {}, TypeError, "stroke point's y coordinate must be a whole number"),
        ([(3, 4, 5)], {}, ValueError, r"\(y, x\) pairs"),
        ([], {}, ValueError, "at least one"),
        ("ab", {}, TypeError, r"\(y, x\) pairs"),
        (torch.tensor([3, 4]), {}, ValueError, r"\(y, x\) pairs"),
        ([(3, 4)], {"radius": 1.5}, TypeError, "radius must be a whole number"),
        ([(3, 4)], {"radius": True}, TypeError, "radius must be a whole number"),
        ([(3, 4)], {"radius": -1}, ValueError, "radius must be >= 0"),
    ],
)
def test_add_stroke_refuses_bad_points_and_radius(tiny, image, points, kwargs, error, match):
    with Guide(tiny, image) as g:
        with pytest.raises(error, match=match):
            g.add_stroke(points, 1, **kwargs)
        assert g.hints == []


def test_add_stroke_takes_arrays_of_integer_points(tiny, image):
    with Guide(tiny, image) as g:
        a = g.add_stroke(np.array([[3, 4], [3, 9]]), 1, radius=np.int64(0))
        b = g.add_stroke(torch.tensor([[3, 4], [3, 9]]), 1, radius=0)
        assert a.points == b.points == ((3, 4), (3, 9)) and torch.equal(a.pixels, b.pixels)


def test_ask_refuses_exclude_masks_of_another_shape_or_dtype(tiny, image):
    with Guide(tiny, image) as g:
        with pytest.raises(ValueError, match=r"\(40, 48\), got shape \(2, 40, 48\)"):
            g.ask(torch.zeros(2, 40, 48, dtype=torch.bool))  # a torch view error before
        with pytest.raises(TypeError, match="exclude == 1"):
            g.ask(torch.zeros(40, 48))  # silently cast to bool before
        with pytest.raises(TypeError, match="torch.from_numpy"):
            g.ask(np.zeros((40, 48), bool))
        with pytest.raises(TypeError, match="callback"):
            g.run(2, callback=3)  # type: ignore[arg-type]


def test_restore_refuses_a_snapshot_of_another_guide_without_changing_anything(tiny, image):
    with Guide(tiny, image) as g:
        g.add_hint(39, 47, 3)
        g.run(2)
        other_state = g.snapshot()
    with Guide(tiny, image[:, :37, :45]) as small:  # the same block shape, a smaller image
        assert small.block.shape == g.block.shape
        small.add_hint(1, 1, 1)
        small.run(2)
        before = small.snapshot()
        with pytest.raises(ValueError, match="another guide"):
            small.restore(other_state)  # an IndexError after changing the block, before
        half = GuideState({**other_state.params, "gamma_s": torch.zeros(3)}, (), ())
        with pytest.raises(ValueError, match="another guide"):
            small.restore(half)  # alpha and beta were already overwritten before
        with pytest.raises(TypeError, match="snapshot"):
            small.restore({"alpha": 1})  # type: ignore[arg-type]
        assert all(torch.equal(before.params[k], v) for k, v in small.params.items())
        assert small.hints == list(before.hints)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "lbfgs"])
def test_a_diverging_step_is_refused_and_the_block_put_back(tiny, image, optimizer):
    with pytest.raises(ValueError, match="lr=1e.38 is too large"):
        Guide(tiny, image, optimizer=optimizer, lr=1e38)  # a RuntimeError inside Adam's step before
    lr = {"sgd": 1e20, "adam": 1e37, "lbfgs": 1e30}[optimizer]
    with Guide(tiny, image, optimizer=optimizer, lr=lr, margin=1e30) as g:  # NaN logits before
        g.add_hint(3, 3, (int(g.prediction()[3, 3]) + 1) % 4)
        g.add_hint(30, 30, (int(g.prediction()[30, 30]) + 1) % 4, negative=True)
        with pytest.raises(ValueError, match="smaller lr"):
            g.run(20)
        assert all(torch.isfinite(v).all() for v in g.params.values())
        assert torch.isfinite(g.logits()).all()
        assert torch.isfinite(tiny(image[None])).all()  # other forwards see the finite block too
