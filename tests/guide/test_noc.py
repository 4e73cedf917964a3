"""The NoC protocol of interactive segmentation (guidewidgets.guide.noc): the simulated user's click
(inside the deeper error region, at its deepest pixel), NoC per object and its cap, the refiners
(each the identity at zero, the model left as it was) and the errors a student gets for bad input."""

from __future__ import annotations

import io
import math
from contextlib import redirect_stdout

import numpy as np
import pytest
import torch
from scipy import ndimage

from guidewidgets import zoo
from guidewidgets.guide import Guide, noc
from guidewidgets.hooks import eval_mode


@pytest.fixture(scope="module")
def model():
    return zoo.load("shapes-segmenter")


@pytest.fixture(scope="module")
def scenes():
    data = zoo.ShapeScenes(4, seed=noc.TUNING_SEED, task="segmentation")
    return [data[i] for i in range(len(data))]


def random_mask(rng: np.random.Generator, shape=(24, 28)) -> np.ndarray:
    """Blobby random masks (smoothed noise), so regions have interiors and several components."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=rng.uniform(1, 3))
    return noise > rng.uniform(-0.3, 0.3) * noise.std()


def brute_depth(region: np.ndarray) -> np.ndarray:
    """Distance of each region pixel to the nearest pixel outside it, the image border counting as
    outside (computed by brute force, independently of scipy's transform)."""
    h, w = region.shape
    padded = np.pad(region, 1)
    outside = np.argwhere(~padded) - 1  # (y, x) in image coordinates, the border ring included
    depth = np.zeros((h, w))
    for y, x in np.argwhere(region):
        depth[y, x] = np.sqrt(((outside - (y, x)) ** 2).sum(1)).min()
    return depth


def test_click_lies_inside_the_deeper_error_region_at_its_deepest_pixel():
    rng = np.random.default_rng(0)
    seen = {True: 0, False: 0}
    for _ in range(60):
        truth, pred = random_mask(rng), random_mask(rng)
        if not truth.any():
            continue
        click = noc.simulated_click(torch.from_numpy(pred), torch.from_numpy(truth))
        fn, fp = truth & ~pred, pred & ~truth
        if click is None:
            assert not fn.any() and not fp.any()
            continue
        y, x, positive = click
        d_fn, d_fp = brute_depth(fn), brute_depth(fp)
        region, depth = (fn, d_fn) if positive else (fp, d_fp)
        assert region[y, x], "the click lies in the error region it answers"
        assert depth[y, x] == pytest.approx(depth.max()), "at the region's largest distance to its boundary"
        # The deeper region wins (false negatives only when strictly deeper, as f-BRS).
        assert positive == (d_fn.max() > d_fp.max())
        # Deterministic tie-break: the first deepest pixel in raster order.
        deepest = np.argwhere(np.isclose(depth, depth.max()))
        assert (y, x) == tuple(deepest[0])
        seen[positive] += 1
    assert seen[True] and seen[False], seen  # both kinds were exercised


def test_false_negative_is_a_positive_click_and_false_positive_a_negative_one():
    truth = torch.zeros(20, 20, dtype=torch.bool)
    truth[4:13, 4:13] = True
    assert noc.simulated_click(torch.zeros_like(truth), truth) == (8, 8, True)  # missed object: its centre
    pred = truth.clone()
    pred[15:20, 0:20] = True  # a false-positive band along the bottom border
    y, x, positive = noc.simulated_click(pred, truth)
    assert not positive and pred[y, x] and not truth[y, x]
    assert noc.simulated_click(truth, truth) is None  # nothing left to fix


def test_void_and_clicked_pixels_are_never_clicked():
    truth = torch.zeros(16, 16, dtype=torch.bool)
    truth[2:14, 2:14] = True
    pred = torch.zeros_like(truth)
    clicked = torch.zeros_like(truth)
    first = noc.simulated_click(pred, truth)
    clicked[first[0], first[1]] = True
    second = noc.simulated_click(pred, truth, clicked=clicked)
    assert second[:2] != first[:2] and second[2]
    void = torch.zeros_like(truth)
    void[2:14, 2:8] = True
    y, x, _ = noc.simulated_click(pred, truth, void=void)
    assert not void[y, x]


def test_object_mode_makes_other_instances_of_the_class_void_and_label_mode_clicks_the_worst_error():
    truth = torch.zeros(24, 24, dtype=torch.long)
    truth[2:10, 2:10] = 1  # the object (class 1)
    truth[14:22, 14:22] = 1  # another instance of class 1
    obj = torch.zeros(24, 24, dtype=torch.bool)
    obj[2:10, 2:10] = True
    pred = truth.clone()
    # The sibling is predicted class 1 too: right for a semantic network, so no click goes there.
    assert noc.next_click(pred, truth, obj) is None
    pred[2:10, 2:10] = 2  # the object missed entirely
    click = noc.next_click(pred, truth, obj)
    assert click == noc.Click(5, 5, 1, True)
    y, x, cls, positive = noc.next_click(pred, truth)  # label mode: the deepest error over all classes
    assert (cls, positive) in ((1, True), (2, False)) and 2 <= y < 10 and 2 <= x < 10


def test_clicker_records_clicks_and_scores_iou():
    truth = torch.zeros(16, 16, dtype=torch.long)
    truth[3:11, 3:11] = 4
    obj = truth == 4
    clicker = noc.Clicker(truth, obj)
    pred = torch.zeros_like(truth)
    assert clicker.score(pred) == 0.0 and clicker.score(truth) == 1.0
    a, b = clicker.next_click(pred), clicker.next_click(pred)
    assert a.cls == b.cls == 4 and a.positive and (a.y, a.x) != (b.y, b.x)
    assert len(clicker.clicks) == 2 and clicker.clicked[a.y, a.x]
    assert clicker.undo() == b and not clicker.clicked[b.y, b.x] and clicker.next_click(pred) == b
    clicker.reset()
    assert clicker.next_click(pred) == a


def test_noc_per_object_is_capped_and_counts_failures():
    assert noc.clicks_to_reach([0.5, 0.86, 0.91], 0.85) == (1, False)
    assert noc.clicks_to_reach([0.5, 0.86, 0.91], 0.9) == (2, False)
    assert noc.clicks_to_reach([0.95], 0.9) == (0, False)  # already good: no click needed
    assert noc.clicks_to_reach([0.1] * 21, 0.9) == (20, True)  # never: the cap, and a failure
    assert noc.clicks_to_reach([0.1] * 20 + [0.9], 0.9) == (20, False)  # reached at the 20th click
    assert noc.clicks_to_reach([0.1] * 30 + [1.0], 0.9) == (20, True)  # clicks past the cap do not count
    assert noc.clicks_to_reach([0.1] * 30, 0.9, max_clicks=5) == (5, True)


def test_a_refiner_that_never_reaches_the_iou_gives_the_cap_and_a_failure(model, scenes):
    scene = scenes[0]
    # An "object" the plain network never predicts: a square of background called class 1.
    mask = torch.zeros_like(scene["mask"], dtype=torch.bool)
    mask[40:56, 40:56] = True
    truth = scene["mask"].clone()
    truth[mask] = 1
    target = noc.Target(0, scene["image"], truth, mask, 1, False)
    with noc.NoRefinement(model, scene["image"]) as refiner:
        run = noc.play_object(refiner, target, max_clicks=20)
    assert len(run.ious) == 21 and len(set(run.ious)) == 1 and run.ious[0] < 0.85
    ev = noc.Evaluation("none", [run], [target])
    assert ev.nocs(0.85) == [(20, True)] and ev.failures(0.85) == 1 and ev.noc(0.9) == 20


def model_state(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(n, m.training) for n, m in model.named_modules()],
        [(n, p.requires_grad, p.grad is None) for n, p in model.named_parameters()],
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
    )


def same_state(a, b) -> bool:
    return a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0]) and a[1:] == b[1:]


@pytest.mark.parametrize("name", list(noc.REFINERS))
def test_each_refiner_at_zero_is_the_identity_and_leaves_the_model_as_it_was(model, scenes, name):
    scene = scenes[1]
    with torch.no_grad(), eval_mode(model):
        plain = model(scene["image"][None])
    before = model_state(model)
    target = noc.targets_of([scene])[0]
    click = noc.Clicker(target.truth, target.mask).next_click(plain.argmax(1)[0])
    with noc.make_refiner(name, model, scene["image"]) as refiner:
        assert torch.equal(refiner.logits(), plain)  # zero: the plain network, bit for bit
        refiner.click(*click)
        moved = not torch.equal(refiner.logits(), plain)
        assert moved == (name != "none")  # not the identity once it has something to fit
        assert torch.isfinite(refiner.logits()).all()
        refiner.reset()
        assert torch.equal(refiner.logits(), plain)
    assert same_state(before, model_state(model))


def test_bad_input_is_refused_with_a_sentence(model, scenes):
    truth = torch.zeros(8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="no .*pixels"):
        noc.simulated_click(truth, truth)  # empty truth
    truth[2:5, 2:5] = True
    with pytest.raises(ValueError, match="same size"):
        noc.simulated_click(torch.zeros(8, 9, dtype=torch.bool), truth)
    with pytest.raises(TypeError, match="== 1"):
        noc.simulated_click(truth.long(), truth)  # 0/1 ints are refused, not coerced
    labels = truth.long()
    with pytest.raises(ValueError, match="same size"):
        noc.next_click(torch.zeros(4, 4, dtype=torch.long), labels)
    with pytest.raises(TypeError, match="argmax"):
        noc.next_click(torch.zeros(8, 8), labels)  # float map: logits, not classes
    with pytest.raises(ValueError, match="object needs at least one pixel"):
        noc.next_click(labels, labels, torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="all void"):
        noc.Clicker(torch.full((8, 8), 255))
    for bad in (0, 0.0, -0.1, 1.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"\(0, 1\]"):
            noc.clicks_to_reach([0.5], bad)
    with pytest.raises(ValueError, match="pass 0.9"):
        noc.clicks_to_reach([0.5], 90)
    with pytest.raises(TypeError):
        noc.clicks_to_reach([0.5], True)
    with pytest.raises(ValueError, match="unknown refiner"):
        noc.make_refiner("f-brs", model, scenes[0]["image"])
    with noc.make_refiner("brs", model, scenes[0]["image"]) as refiner:
        with pytest.raises(ValueError, match="outside the 96x96 image"):
            refiner.click(96, 0, 1)
        with pytest.raises(TypeError, match="whole number"):
            refiner.click(2.5, 0, 1)
        with pytest.raises(TypeError, match="whole number"):
            refiner.click(2, 0, True)  # a bool is not a class
        with pytest.raises(ValueError, match="outside the model's 7 classes"):
            refiner.click(2, 0, 7)
    with Guide(model, scenes[0]["image"]), pytest.raises(ValueError, match="open Guide"):
        noc.make_refiner("brs", model, scenes[0]["image"])


def test_the_command_prints_the_table_and_the_curve(model):
    out = io.StringIO()
    with redirect_stdout(out):
        assert noc.main(["--scenes", "1", "--clicks", "2", "--refiners", "none,f-brs-b"]) == 0
    text = out.getvalue()
    assert "NoC@85" in text and "NoC@90" in text and "not comparable" in text.lower()
    assert "f-brs-b" in text and "mIoU" in text


def test_a_clicker_drives_a_guide_as_a_next_click_button_would(model, scenes):
    scene = scenes[2]
    clicker = noc.Clicker(scene["mask"])  # the whole label map, as a widget holds it
    with Guide(model, scene["image"], optimizer="lbfgs") as guide:
        for _ in range(3):
            click = clicker.next_click(guide.prediction())
            if click is None:
                break
            guide.add_hint(click.y, click.x, click.cls, negative=not click.positive)
            guide.run()
            if guide.satisfied():  # the click holds: its pixel now says what the click said
                assert (int(guide.prediction()[click.y, click.x]) == click.cls) == click.positive
    assert len({(c.y, c.x) for c in clicker.clicks}) == len(clicker.clicks) >= 1  # never the same pixel twice


def test_the_session_and_widget_simulated_click_follow_the_protocol_and_undo():
    from guidewidgets.guide import GuideSession
    from guidewidgets.widgets import GuideWidget

    w = GuideWidget()  # the embedded segmenter on a held-out scene with a large wrong region, and its mask
    try:
        s = w.session
        assert isinstance(s, GuideSession)
        expected = noc.next_click(s.prediction, s.mask)
        depth = s.undo_depth
        w.simulated_click()
        h = s.guide.hints[-1]
        assert expected is not None and h.points[0] == (expected.y, expected.x) and h.cls == expected.cls
        assert h.negative == (not expected.positive) and "Simulated click" in w.status
        second = noc.next_click(s.prediction, s.mask, clicked=_hinted(s))
        assert second is None or (second.y, second.x) != (expected.y, expected.x)  # never the same pixel
        assert s.undo_depth == depth + 1 and w.undo() and not s.guide.hints  # one action for undo
    finally:
        w.close()


def _hinted(s) -> np.ndarray:
    out = np.zeros(s.mask.shape, dtype=bool)
    for h in s.guide.hints:
        for y, x in h.points:
            out[y, x] = True
    return out
