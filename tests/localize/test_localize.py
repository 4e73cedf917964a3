"""Boxes and masks from maps: properties of the lecture's recipe (threshold, largest component,
tight box), IoU / CorLoc identities, GrabCut on saliency, and the errors users meet."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from guidewidgets import localize, zoo


@pytest.fixture(scope="module")
def scenes():
    ds = zoo.ShapeScenes(8, seed=2468)
    return [ds[i] for i in range(len(ds))]


def _blur(m: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1)
    y = F.conv2d(F.pad(m[None, None].float(), (r, r, 0, 0)), k)
    return F.conv2d(F.pad(y, (0, 0, r, r)), k.transpose(2, 3))[0, 0]


def test_largest_component_of_two_blobs_is_the_bigger():
    b = np.zeros((40, 40), bool)
    b[2:8, 2:8] = True  # 36 px
    b[20:35, 15:30] = True  # 225 px
    kept = localize.largest_component(b)
    assert kept.sum() == 225 and kept[25, 20] and not kept[4, 4]
    m = torch.zeros(40, 40)
    m[2:8, 2:8] = 1.0  # the higher blob is the smaller one: the box still follows the larger
    m[20:35, 15:30] = 0.5
    box, region = localize.map_to_box(m, threshold=0.2)
    assert box.tolist() == [15, 20, 30, 35]
    assert region.sum() == 225
    # Without the largest-component step the box spans both blobs.
    assert localize.map_to_box(m, 0.2, largest=False)[0].tolist() == [2, 2, 30, 35]


def test_diagonal_neighbours_are_one_component():
    b = np.eye(10, dtype=bool)
    assert localize.largest_component(b).sum() == 10


def test_map_equal_to_object_mask_gives_the_tight_box(scenes):
    for it in scenes:
        box, _ = localize.map_to_box((it["mask"] > 0).float())
        assert box.tolist() == it["boxes"][0].tolist()
        assert localize.box_iou(box, it["boxes"][0]) == 1.0


def test_threshold_moves_the_box_monotonically(scenes):
    m = _blur((scenes[0]["mask"] > 0).float(), 4.0)
    areas = []
    for t in (0.1, 0.3, 0.5, 0.7, 0.9):
        x0, y0, x1, y1 = localize.map_to_box(m, t)[0].tolist()
        areas.append((x1 - x0) * (y1 - y0))
    assert areas == sorted(areas, reverse=True) and areas[0] > areas[-1]


def test_box_iou_identities():
    a = torch.tensor([10, 10, 30, 30])
    assert localize.box_iou(a, a) == 1.0
    assert localize.box_iou(a, [30, 30, 40, 40]) == 0.0  # exclusive ends: touching is disjoint
    assert torch.isclose(localize.box_iou(a, [20, 10, 40, 30]), torch.tensor(200 / 600, dtype=torch.float64))
    assert localize.box_iou(a, [5, 5, 5, 5]) == 0.0  # an empty box
    assert localize.box_mask(a, (40, 40)).sum() == 400


def test_corloc_counts_iou_at_least_half():
    pred = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
    truth = [
        torch.tensor([[0, 0, 10, 10]]),
        torch.tensor([[0, 0, 10, 20]]),
        torch.tensor([[0, 0, 5, 5], [50, 50, 60, 61]]),
    ]
    score, best = localize.corloc(pred, truth)
    assert best[1] == 0.5 and score == 1.0
    assert localize.corloc(pred, truth, iou=0.6)[0] == pytest.approx(2 / 3)


def test_box_and_iou_for_a_widget():
    m = torch.zeros(20, 20)
    m[5:10, 5:10] = 1
    box, iou = localize.box_and_iou(m, 0.2, [5, 5, 10, 10])
    assert box.tolist() == [5, 5, 10, 10] and iou == 1.0
    b2, iou2 = localize.box_and_iou(m, 0.5)
    assert b2.tolist() == [5, 5, 10, 10] and iou2 is None
    assert localize.box_and_iou(torch.zeros(20, 20), 0.2, [5, 5, 10, 10]) == (None, 0.0)


def test_grabcut_seeded_with_the_true_mask_returns_nearly_the_true_mask(scenes):
    for it in scenes[:4]:
        truth = it["mask"] > 0
        assert localize.mask_iou(localize.grabcut_from_map(it["image"], truth.float()), truth) > 0.95
        # A blurred mask seeds a wider probable-foreground band: GrabCut's colour models pull it back.
        seed = _blur(truth.float(), 3.0)
        grown = seed >= 0.5 * seed.max()
        cut = localize.grabcut_from_map(it["image"], seed, fg=0.2, bg=0.05)
        assert localize.mask_iou(cut, truth) > 0.85
        assert localize.mask_iou(cut, truth) >= localize.mask_iou(grown, truth) - 0.02


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.2])
def test_threshold_outside_0_1_is_refused(bad):
    m = torch.rand(10, 10)
    with pytest.raises(ValueError, match="between 0 and 1"):
        localize.map_to_box(m, bad)
    with pytest.raises(ValueError, match="between 0 and 1"):
        localize.box_and_iou(m, bad)


def test_empty_maps_are_refused_or_scored_empty():
    with pytest.raises(ValueError, match="empty"):
        localize.map_to_box(torch.zeros(10, 10))
    with pytest.raises(ValueError, match="empty"):
        localize.map_to_box(-torch.rand(10, 10))
    boxes = localize.boxes_from_maps(torch.stack([torch.zeros(10, 10), torch.ones(10, 10).triu()]), on_empty="zero")
    assert boxes[0].tolist() == [0, 0, 0, 0] and boxes[1].tolist() == [0, 0, 10, 10]


def test_bad_shapes_are_refused(scenes):
    img = scenes[0]["image"]
    with pytest.raises(ValueError, match="upsample"):
        localize.grabcut_from_map(img, torch.rand(48, 48))
    with pytest.raises(ValueError, match="2-D"):
        localize.map_to_box(torch.rand(2, 10, 10))
    with pytest.raises(ValueError, match="differ in size"):
        localize.mask_iou(torch.ones(4, 4), torch.ones(5, 5))
    with pytest.raises(ValueError, match="NaN"):
        localize.map_to_box(torch.full((4, 4), float("nan")))
    with pytest.raises(ValueError, match="bg"):
        localize.grabcut_from_map(img, torch.rand(96, 96), fg=0.2, bg=0.5)


def test_box_head_learns_boxes_and_leaves_the_model_alone():
    model = zoo.load("shapes-classifier")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    test = zoo.ShapeScenes(32, seed=2468)
    x = test.batch()["images"].float() / 255
    truth = torch.stack([test[i]["boxes"][0] for i in range(len(test))])
    torch.manual_seed(0)
    untrained = localize.BoxHead(128, (12, 12)).eval()
    head = localize.train_box_head(model, n=256, epochs=8)
    trained_iou = localize.corloc(localize.predict_boxes(model, head, x), truth)[1].mean()
    untrained_iou = localize.corloc(localize.predict_boxes(model, untrained, x), truth)[1].mean()
    assert trained_iou > untrained_iou + 0.2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="grid"):
        head(torch.zeros(1, 128, 6, 6))


# --- nothing silently wrong (issue 24) --------------------------------------------------------------


def test_box_iou_refuses_inverted_and_nan_boxes_instead_of_scoring_them_zero():
    a = torch.tensor([0, 0, 20, 20])
    with pytest.raises(ValueError, match="inverted box"):
        localize.box_iou([10, 10, 5, 20], a)  # x1 < x0: was IoU 0
    with pytest.raises(ValueError, match="NaN or inf"):
        localize.box_iou([float("nan"), 0, 5, 5], a)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        localize.box_iou(torch.zeros(2, 1, 4), torch.zeros(3, 4))
    with pytest.raises(TypeError, match="boxes"):
        localize.box_iou("box", a)
    # Pairwise IoU, the one meaning (metrics.box_iou): (N, M), symmetric in the order.
    p, q = torch.tensor([[0, 0, 10, 10], [5, 5, 15, 15]]), torch.tensor([[0, 0, 10, 10], [0, 0, 5, 5], [9, 9, 20, 20]])
    pair = localize.box_iou(p, q)
    assert pair.shape == (2, 3) and torch.equal(pair, localize.box_iou(q, p).T)


def test_corloc_refuses_no_images_and_a_nan_threshold():
    with pytest.raises(ValueError, match="at least one image"):
        localize.corloc(torch.zeros(0, 4), [])  # was nan
    with pytest.raises(ValueError, match="iou"):
        localize.corloc(torch.tensor([[0, 0, 4, 4]]), [torch.tensor([[0, 0, 4, 4]])], iou=float("nan"))
    with pytest.raises(ValueError, match="inverted"):
        localize.corloc(torch.tensor([[0, 0, 4, 4]]), [torch.tensor([[4, 0, 0, 4]])])


def test_a_constant_map_says_it_has_no_peak_and_counts_as_empty():
    flat = torch.full((6, 6), 0.7)
    with pytest.raises(localize.boxes.EmptyMapError, match="constant .* no peak to localise"):
        localize.map_to_box(flat)
    with pytest.raises(ValueError, match="no positive peak"):
        localize.map_to_box(-torch.rand(6, 6) - 0.1)
    assert localize.boxes_from_maps(flat[None], on_empty="zero").tolist() == [[0, 0, 0, 0]]
    assert localize.box_and_iou(flat, 0.2, [0, 0, 6, 6]) == (None, 0.0)
    with pytest.raises(ValueError, match="NaN"):  # NaN is no "empty" map: on_empty does not hide it
        localize.boxes_from_maps(torch.full((1, 6, 6), float("nan")), on_empty="zero")
    with pytest.raises(ValueError, match="empty"):
        localize.map_to_box(torch.zeros(0, 5))


def test_grabcut_refuses_nan_8bit_and_normalised_images(scenes):
    img, m = scenes[0]["image"], (scenes[0]["mask"] > 0).float()
    bad = img.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        localize.grabcut_from_map(bad, m)  # was a mask cut from garbage pixels
    with pytest.raises(TypeError, match="255"):
        localize.grabcut_from_map((img * 255).to(torch.uint8), m)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        localize.grabcut_from_map(img - 0.5, m)
    with pytest.raises(TypeError, match="iterations"):
        localize.grabcut_from_map(img, m, iterations=2.5)
    with pytest.raises(ValueError, match="constant"):
        localize.grabcut_from_map(img, torch.ones(96, 96))


def test_masks_must_be_masks_not_maps():
    with pytest.raises(ValueError, match="only 0 and 1"):
        localize.mask_iou(torch.full((2, 2), float("nan")), torch.ones(2, 2))  # was 1.0
    with pytest.raises(ValueError, match="only 0 and 1"):
        localize.largest_component(np.full((3, 3), 0.3))
    assert localize.mask_iou(torch.ones(2, 2), np.ones((2, 2), dtype=np.int64)) == 1.0
    with pytest.raises(ValueError, match="fractional"):
        localize.box_mask([0.5, 0, 4, 4], (8, 8))
