"""Targets beyond a class index: a class inside a region of a segmentation output, multi-label
sigmoid targets, and a box of a torchvision detector (mechanics on random weights)."""

import pytest
import torch
import torchvision

from guidewidgets import explain as E
from guidewidgets import zoo
from guidewidgets.explain.task_targets import (
    DetectorBoxScore,
    box_iou,
    detections,
    multilabel_target,
    segmentation_target,
)


@pytest.fixture(scope="module")
def segmenter():
    return zoo.load("shapes-segmenter")


@pytest.fixture(scope="module")
def seg_scenes():
    sc = zoo.ShapeScenes(8, seed=404, task="segmentation", objects=(2, 3))
    return [sc[i] for i in range(len(sc))]


def test_region_target_is_the_class_score_summed_inside_the_region(segmenter, seg_scenes):
    x = seg_scenes[0]["image"][None]
    with torch.no_grad():
        out = segmenter(x)
    mask = torch.zeros(96, 96, dtype=torch.bool)
    mask[10:40, 20:70] = True
    by_mask = segmentation_target(2, mask=mask)(out)
    by_box = segmentation_target(2, box=(20, 10, 70, 40))(out)
    assert torch.allclose(by_mask, out[:, 2, 10:40, 20:70].sum((1, 2)), rtol=1e-5)
    assert torch.allclose(by_box, by_mask, rtol=1e-5)
    # an output at half the image's size: the box covers its cells by area
    half = out[:, :, ::2, ::2]
    assert torch.allclose(
        segmentation_target(2, box=(20, 10, 70, 40), size=(96, 96))(half), half[:, 2, 5:20, 10:35].sum((1, 2))
    )


def test_region_maps_concentrate_on_the_chosen_object(segmenter, seg_scenes):
    """Grad-CAM for "class c inside object i's mask" on the embedded segmenter: report the share
    of the map's mass inside that object's box; it must beat the box's share of the image."""
    shares, areas = [], []
    for item in seg_scenes:
        x = item["image"][None]
        i = 0
        obj = item["instances"] == i + 1
        cls = int(item["box_labels"][i]) + 1  # mask classes: 0 is background
        x0, y0, x1, y1 = item["boxes"][i].tolist()
        for name in ("grad-cam", "hires-cam"):
            maps = E.explain(segmenter, x, name, target=segmentation_target(cls, mask=obj))
            inside = torch.zeros(96, 96, dtype=torch.bool)
            inside[y0:y1, x0:x1] = True
            share = float(maps[0][inside].sum() / maps[0].sum().clamp_min(1e-12))
            shares.append((name, share))
        areas.append((x1 - x0) * (y1 - y0) / 96**2)
    for name in ("grad-cam", "hires-cam"):
        vals = torch.tensor([s for n, s in shares if n == name])
        print(
            f"\n{name}: mean share of map mass inside the chosen object's box {vals.mean():.3f} "
            f"(box area share {sum(areas) / len(areas):.3f})"
        )
        assert float(vals.mean()) > 2 * sum(areas) / len(areas)


def test_multilabel_target_is_the_sum_of_sigmoids():
    out = torch.randn(3, 5, requires_grad=True)
    t = multilabel_target([1, 4])
    assert torch.allclose(t(out), torch.sigmoid(out[:, 1]) + torch.sigmoid(out[:, 4]))
    model = zoo.load("shapes-classifier")
    x = zoo.ShapeScenes(2, seed=1)[0]["image"][None]
    maps = E.explain(model, x, "grad-cam", target=multilabel_target(0))
    assert maps.shape == (1, 96, 96) and maps.sum() > 0


def test_target_errors_name_the_fix(segmenter):
    model = zoo.load("shapes-classifier")
    x = torch.rand(1, 3, 96, 96)
    with pytest.raises(ValueError, match="outside the 96x96 image"):
        E.explain(segmenter, x, "grad-cam", target=segmentation_target(1, box=(50, 50, 120, 90)))
    with pytest.raises(ValueError, match="x1 > x0"):
        segmentation_target(1, box=(50, 50, 40, 90))
    with pytest.raises(ValueError, match="exactly one region"):
        segmentation_target(1)
    with pytest.raises(ValueError, match="dense output"):
        E.explain(model, x, "grad-cam", target=segmentation_target(1, box=(0, 0, 10, 10)))
    with pytest.raises(ValueError, match="multi-label target needs"):
        E.explain(segmenter, x, "grad-cam", target=multilabel_target(1))
    with pytest.raises(TypeError, match="not detections"):
        E.explain(DetectorBoxScore(model, (0, 0, 10, 10)), x, "grad-cam")


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    # Random weights: 3 classes, so the softmax scores (about 1/3) pass the default threshold.
    return torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3
    ).eval()


def test_detection_box_target_mechanics(detector):
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    dets = detections(detector, x)
    assert len(dets[0]["boxes"]) > 0
    state = {k: v.clone() for k, v in detector.state_dict().items()}
    modes = [m.training for m in detector.modules()]
    hooks_before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in detector.modules())
    box, label = dets[0]["boxes"][0], int(dets[0]["labels"][0])
    model = DetectorBoxScore(detector, box, label)
    assert model.default_explain_layer == "detector.backbone.body.16"
    with torch.no_grad():
        score = model(x)
    assert score.shape == (1, 1) and torch.isclose(score[0, 0], dets[0]["scores"][0])
    for name in ("grad-cam", "hires-cam", "eigen-cam"):
        maps = E.explain(model, x, name, target=0)
        assert maps.shape == (1, 128, 128) and torch.isfinite(maps).all()
    # the detector is unchanged: weights, buffers, modes, hooks, no .grad
    assert all(torch.equal(state[k], v) for k, v in detector.state_dict().items())
    assert modes == [m.training for m in detector.modules()]
    assert hooks_before == sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in detector.modules())
    assert all(p.grad is None for p in detector.parameters())
    # a box nobody detected scores 0; a box outside the image is refused
    far = DetectorBoxScore(detector, (0, 0, 2, 2), label, min_iou=0.9)
    with torch.no_grad():
        assert float(far(x)) == 0.0
    with pytest.raises(ValueError, match="outside the 128x128 image"):
        E.explain(DetectorBoxScore(detector, (100, 100, 140, 120)), x, "grad-cam")


def test_box_iou():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    assert torch.allclose(box_iou(a, b), torch.tensor([[1.0, 1 / 3, 0.0]]))


def test_region_target_with_a_nan_mask_is_named_not_mapped(segmenter):
    x = torch.rand(1, 3, 96, 96)
    mask = torch.ones(96, 96)
    mask[0, 0] = float("nan")
    for name, options in (("grad-cam", {}), ("occlusion", {"window": 48})):
        with pytest.raises(ValueError, match=r"target callable RegionTarget returned non-finite scores \(nan\)"):
            E.explain(segmenter, x, name, target=segmentation_target(1, mask=mask), **options)
