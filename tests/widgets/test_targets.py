"""ExplainWidget region targets (issue 19 item 2): a segmenter's class explained inside a box drawn
on the image, set from Python (``set_region``) or by the canvas mouse handlers ipycanvas would call."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("ipywidgets")
pytest.importorskip("ipycanvas")

from guidewidgets import explain, zoo
from guidewidgets.explain.session import Explainer
from guidewidgets.explain.task_targets import segmentation_target
from guidewidgets.widgets import ExplainWidget
from guidewidgets.widgets.region_targets import check_region


def _segmenter() -> nn.Module:
    from guidewidgets import zoo

    try:
        return zoo.load("shapes-segmenter")
    except Exception:
        pytest.skip("zoo weights for shapes-segmenter not available")


def _scenes(n: int = 2) -> list[dict]:
    from guidewidgets import zoo

    sc = zoo.ShapeScenes(n, seed=777, task="segmentation")
    return [sc[i] for i in range(n)]


def _inside(a: np.ndarray, box: tuple[int, int, int, int]) -> float:
    p = np.clip(a, 0, None)
    x0, y0, x1, y1 = box
    return float(p[y0:y1, x0:x1].sum() / max(p.sum(), 1e-12))


class TinyCNN(nn.Module):
    classes = ["a", "b"]

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).relu().mean((2, 3)))


def test_check_region():
    assert check_region((1, 2, 5.0, 6), 8, 8) == (1, 2, 5, 6)
    for bad, err in (((3, 0, 3, 4), "empty"), ((0, 0, 9, 4), "outside"), ((-1, 0, 2, 2), "outside")):
        with pytest.raises(ValueError, match=err):
            check_region(bad, 8, 8)
    with pytest.raises(TypeError, match="four numbers"):
        check_region("abcd", 8, 8)
    with pytest.raises(ValueError, match="four finite"):
        check_region((0, 0, 1), 8, 8)


def test_session_region_key_is_the_segmentation_target():
    model, scene = _segmenter(), _scenes(1)[0]
    s = Explainer(model, [("s", scene["image"])])
    s.probabilities(0)
    box = tuple(int(v) for v in scene["boxes"][0])
    k_whole, k_box = s.key(0, "saliency", 1), s.key(0, "saliency", 1, region=box)
    assert k_whole.region is None and k_box.region == box and k_box != k_whole
    got = s.compute(k_box)["map"]
    x = s.model_input(0)
    want = explain.explain(model, x, "saliency", target=segmentation_target(1, box=box, size=(96, 96)))
    assert np.allclose(got, want[0].detach().numpy(), atol=1e-6)
    assert "inside box" in s.heading(k_box) and "inside box" not in s.heading(k_whole)


def test_region_concentrates_the_map_and_is_cached_and_drawn():
    w = ExplainWidget(_segmenter(), _scenes(2), method="saliency")
    assert w.segmentation and w.w_region_bar.layout.display is None
    tried = 0
    for i, scene in enumerate(_scenes(2)):
        w.image_index = i
        for b in scene["boxes"].tolist():
            box = tuple(int(v) for v in b)
            x0, y0, x1, y1 = box
            inside = scene["mask"][y0:y1, x0:x1].flatten()
            cls = int(torch.mode(inside[inside > 0]).values) if (inside > 0).any() else 1
            w.clear_region()
            w.target = cls
            whole = w.current["map"].copy()
            assert w.set_region(box) and w.region == box and w.status == ""
            region = w.current["map"].copy()
            assert not np.allclose(whole, region)
            assert w._key(w.method).region == box and w.cached()
            assert "inside box" in w.heading()
            assert _inside(region, box) > _inside(whole, box), (i, box, _inside(region, box), _inside(whole, box))
            hints = w.view.frames["hints"]
            assert (
                hints is not None
                and hints[y0, x0:x1, 3].all()
                and hints[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2, 3].max() == 0
            )
            tried += 1
    assert tried >= 3
    w.clear_region()
    assert w.region == () and w.view.frames["hints"] is None and np.array_equal(w.current["map"], whole)
    w.close()


def test_region_by_mouse_drag_and_bad_regions_change_nothing():
    w = ExplainWidget(_segmenter(), _scenes(1), method="saliency")
    s = w.view.scale
    whole = w.current["map"].copy()
    # without Region mode a drag does nothing
    w.view.on_mouse_down(10 * s, 10 * s)
    w.view.on_mouse_move(30 * s, 40 * s)
    w.view.on_mouse_up(30 * s, 40 * s)
    assert w.region == ()
    w.region_mode = True
    w.view.on_mouse_down(30 * s + 1, 40 * s + 1)  # drawn from bottom-right to top-left
    w.view.on_mouse_move(20 * s, 20 * s)
    assert w.view.frames["hints"] is not None and w.region == ()  # a preview, nothing computed yet
    w.view.on_mouse_move(10 * s, 12 * s)
    w.view.on_mouse_up(10 * s, 12 * s)
    assert w.region == (10, 12, 31, 41) and w.status == ""
    dragged = w.current["map"].copy()
    assert not np.allclose(dragged, whole)
    # a click without a drag, an empty or outside region: a status message, nothing changes
    for act in (
        lambda: (w.view.on_mouse_down(5 * s, 5 * s), w.view.on_mouse_up(5 * s, 5 * s)),
        lambda: w.set_region((5, 5, 5, 9)),
        lambda: w.set_region((0, 0, w.size + 10, 9)),
        lambda: w.set_region(("a", 1, 2, 3)),
    ):
        w.status = ""
        act()
        assert w.status.startswith("Error") and w.region == (10, 12, 31, 41)
        assert np.array_equal(w.current["map"], dragged)
        assert w.view.frames["hints"][12, 10:31, 3].all()
    w.close()


def test_region_refused_on_a_classifier():
    torch.manual_seed(0)
    w = ExplainWidget(TinyCNN(), torch.rand(2, 3, 16, 16), size=16)
    assert not w.segmentation and w.w_region_bar.layout.display == "none"
    before = w.current["map"].copy()
    assert not w.set_region((0, 0, 8, 8))
    assert "segmentation model" in w.status and w.region == () and np.array_equal(w.current["map"], before)
    w.close()


def _detector(thresh: float = 0.0) -> nn.Module:
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    # random weights: a threshold of 0 keeps boxes to pick (their scores are about 1/3)
    return tv.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=3, box_score_thresh=thresh
    ).eval()


def test_detector_boxes_listed_drawn_and_explained():
    from guidewidgets.explain.task_targets import DetectorBoxScore
    from guidewidgets.widgets.box_overlay import BOX
    from guidewidgets.widgets.region_targets import OTHER

    det = _detector()
    state = {k: v.clone() for k, v in det.state_dict().items()}
    n_hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in det.modules())
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    w = ExplainWidget(det, x)
    assert w.session.detection and w.status == "" and w.w_target.description == "Box"
    assert w.w_region_bar.layout.display == "none"
    d = w.session.detections[0]
    n = len(d["boxes"])
    assert n > 1 and len(w.w_target.options) == n
    label, j = w.w_target.options[0]
    assert label == f"class {int(d['labels'][j])} {float(d['scores'][j]):.2f}"
    for t in (0, 1):
        w.target = t
        assert w.status == "" and w.current["map"].shape == (128, 128) and w.cached()
        assert f"box {t}: class" in w.heading()
        want = explain.explain(DetectorBoxScore(det, d["boxes"][t], d["labels"][t]), x[:1], "grad-cam", target=0)
        assert np.allclose(w.current["map"], want[0].numpy(), atol=1e-6)
        x0, y0, x1, y1 = d["boxes"][t].round().long().tolist()
        assert tuple(w.frame[y0, (x0 + x1) // 2]) == BOX  # the chosen box: white
        chosen = np.zeros((128, 128), bool)
        chosen[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = True
        others = [b for k, b in enumerate(d["boxes"].round().long().tolist()) if k != t]
        edge = [(o[1], xx) for o in others for xx in range(o[0], o[2]) if o[1] < 128 and not chosen[o[1], xx]]
        assert edge and all(tuple(w.frame[yy, xx]) == OTHER for yy, xx in edge)  # the others: grey
    assert w._key("grad-cam") != w.session.key(0, "grad-cam", 0)
    w.layer = "backbone.body.13"  # a layer of the detector's menu, explained through the wrapper
    assert w.status == "" and w.current["map"].shape == (128, 128)
    assert not w.set_region((0, 0, 10, 10)) and "segmentation model" in w.status and w.region == ()
    w.close()
    # the detector is left as it was
    assert all(torch.equal(state[k], v) for k, v in det.state_dict().items()) and not det.training
    assert n_hooks == sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in det.modules())
    assert all(p.grad is None for p in det.parameters())


def test_detector_that_finds_nothing_says_how_to_fix_it():
    w = ExplainWidget(_detector(thresh=0.999), torch.rand(1, 3, 128, 128))
    assert "found no box" in w.status and "box_score_thresh" in w.status and w.current is None
    w.close()


def test_dataset_labels_are_mapped_to_the_models_classes_by_name():
    """ShapeScenes counts six shapes; the segmenter's classes start with "background": a
    triangle scene must be headed "true label triangle", and its boxes carry the segmenter's index."""
    scenes = zoo.ShapeScenes(3, seed=777, task="segmentation")
    w = ExplainWidget(zoo.load("shapes-segmenter"), scenes, method="saliency")
    try:
        for i in range(len(scenes)):
            shape = scenes.classes[int(scenes[i]["label"])]
            assert w.session.class_name(w.session.labels[i]) == shape
            names = [scenes.classes[int(k)] for k in scenes[i]["box_labels"]]
            seg_classes = list(zoo.load("shapes-segmenter").classes)
            expect = sorted(seg_classes.index(n) for n in names)
            got = w.session.boxes[i][1]
            assert sorted(int(v) for v in got) == expect
        assert f"true label {scenes.classes[int(scenes[0]['label'])]}" in w.session.heading(w._key(w.method))
    finally:
        w.close()
