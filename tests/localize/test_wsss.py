"""Weakly supervised segmentation (guidewidgets.localize.wsss): properties of pseudo-masks and labels,
clear errors, and a deterministic tiny training run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from guidewidgets import zoo
from guidewidgets.localize import wsss
from guidewidgets.zoo.scenes import MASK_CLASSES, ShapeScenes

K = len(MASK_CLASSES) - 1


@pytest.fixture(scope="module")
def scenes() -> ShapeScenes:
    return ShapeScenes(12, seed=4242, task="segmentation")


@pytest.fixture(scope="module")
def classifier() -> nn.Module:
    return zoo.load("shapes-classifier")


def _true_cams(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class maps equal to the true per-class masks, and the classes present."""
    cams = torch.stack([(masks == c + 1).float() for c in range(K)], 1)
    return cams, cams.flatten(2).amax(2) > 0


def test_cam_equal_to_true_mask_gives_the_true_mask(scenes):
    masks = scenes.batch()["masks"].long()
    cams, present = _true_cams(masks)
    for t in (0.1, 0.5, 0.9):
        assert torch.equal(wsss.masks_from_cams(cams, present, threshold=t), masks)


def test_absent_classes_are_never_labelled(scenes):
    masks = scenes.batch()["masks"].long()
    cams = torch.rand(len(masks), K, *masks.shape[-2:], generator=torch.Generator().manual_seed(0))
    _, present = _true_cams(masks)
    out = wsss.masks_from_cams(cams, present, threshold=0.3)
    for i in range(len(out)):
        labelled = set((out[i].unique() - 1).tolist()) - {-1}
        assert labelled <= set(torch.nonzero(present[i]).flatten().tolist())


def test_higher_threshold_gives_fewer_foreground_pixels(scenes, classifier):
    counts = [int((wsss.pseudo_masks(classifier, scenes, t) > 0).sum()) for t in (0.1, 0.3, 0.5, 0.7, 0.9)]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > counts[-1]


@pytest.mark.parametrize("t", [0, 1, -0.2, 1.5])
def test_threshold_outside_unit_interval_is_refused(scenes, t):
    cams, present = _true_cams(scenes.batch()["masks"].long())
    with pytest.raises(ValueError, match="between 0 and 1"):
        wsss.masks_from_cams(cams, present, threshold=t)


def test_classifier_with_other_classes_is_refused(scenes):
    other = zoo.ShapeClassifier(num_classes=3)
    other.classes = ["cat", "dog", "boat"]
    with pytest.raises(ValueError, match="do not match the segmenter"):
        wsss.pseudo_masks(other, scenes)
    with pytest.raises(ValueError, match="do not match the segmenter"):
        wsss.compare(other, train=2, test=2, epochs=1)


def test_other_bad_input_is_refused(scenes):
    with pytest.raises(ValueError, match="unknown label kind"):
        wsss.make_labels("scribbles", scenes)
    with pytest.raises(ValueError, match=r"\(H, W\) of one size"):
        wsss.scribbles(torch.zeros(8, 8, dtype=torch.long), torch.zeros(8, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="need the classifier"):
        wsss.make_labels("image", scenes)
    with pytest.raises(ValueError, match="segmentation scenes"):
        wsss.make_labels("box", ShapeScenes(2, seed=1))
    with pytest.raises(ValueError, match=r"labels must be \(N, H, W\)"):
        wsss.train_on_labels(scenes, torch.zeros(3, 96, 96, dtype=torch.long))


def test_box_and_point_labels_agree_with_the_truth(scenes, classifier):
    truth = scenes.batch()["masks"].long()
    box = wsss.make_labels("box", scenes)
    # Every object pixel lies in its object's box, so box labels cover all of the foreground.
    assert ((box > 0) | (truth == 0)).all()
    point = wsss.make_labels("point", scenes, classifier)
    cam_background = wsss.pseudo_masks(classifier, scenes) == 0
    for i in range(len(scenes)):
        item = scenes[i]
        for j, c in enumerate(item["box_labels"].tolist()):
            y, x = wsss._click((item["instances"] == j + 1).numpy())
            assert point[i, y, x] == truth[i, y, x] == c + 1  # one click per object, on its class
        fg, bg = (point[i] > 0) & (point[i] != wsss.IGNORE), point[i] == 0
        assert 0 < int(fg.sum()) <= len(item["boxes"]) * (2 * wsss.POINT_RADIUS + 1) ** 2
        assert int(bg.sum()) == int(fg.sum())  # balanced background clicks
        assert cam_background[i][bg].all()  # where no present class's CAM reaches the threshold
    assert torch.equal(wsss.make_labels("full", scenes), truth)


def test_tiny_training_is_deterministic_at_a_seed(scenes):
    labels = wsss.make_labels("box", scenes)
    a = wsss.train_on_labels(scenes, labels, epochs=1, seed=3, batch=6)
    b = wsss.train_on_labels(scenes, labels, epochs=1, seed=3, batch=6)
    c = wsss.train_on_labels(scenes, labels, epochs=1, seed=4, batch=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    assert not a.training


def test_scribbles_are_thin_strokes_on_the_true_classes(scenes):
    from skimage.morphology import skeletonize

    truth = scenes.batch()["masks"].long()
    scribble = wsss.make_labels("scribble", scenes)
    assert scribble.shape == truth.shape and wsss.ANNOTATION_SECONDS["scribble"] == 17.0
    labelled = scribble != wsss.IGNORE
    assert torch.equal(scribble[labelled], truth[labelled])  # every stroke on its own class
    for i in range(len(scenes)):
        inst = scenes[i]["instances"]
        for j in range(len(scenes[i]["box_labels"])):
            obj = (inst == j + 1).numpy()
            stroke = labelled[i].numpy() & obj
            assert stroke.any()  # every object gets a stroke ...
            assert stroke[skeletonize(obj)].all()  # ... through its skeleton ...
            assert stroke.sum() < obj.sum() or obj.sum() <= wsss.SCRIBBLE_WIDTH**2  # ... not the whole object
        assert (scribble[i] == 0).any()  # and the background one
    # Far fewer labelled pixels than a full mask, many more than the point labels' discs.
    assert labelled.float().mean() < 0.5


def test_scribble_of_a_bar_is_its_centre_line():
    mask = torch.zeros(20, 30, dtype=torch.long)
    mask[5:12, 3:27] = 4  # a 7 px thick bar of class 4 (id 4)
    out = wsss.scribbles(mask, (mask > 0).long())
    # Away from the ends (where the skeleton forks to the corners) the stroke is the middle row 8,
    # thickened to 3 px: rows 7-9.
    middle = torch.nonzero(out[:, 9:21] == 4)[:, 0]
    assert set(middle.tolist()) == {7, 8, 9} and len(middle) == 3 * 12
    assert (out[mask == 0] != 4).all() and (out == 0).any()


def test_labels_miou_counts_only_labelled_pixels(scenes):
    truth = scenes.batch()["masks"].long()
    assert wsss.labels_miou(truth, truth) == 1.0
    assert wsss.labels_miou(wsss.make_labels("scribble", scenes), truth) == 1.0  # strokes lie on their class
    assert wsss.labels_miou(wsss.make_labels("box", scenes), truth) < 1.0  # boxes spill onto background
    assert set(wsss.MEASURED_MIOU) == set(wsss.LABEL_KINDS)
    with pytest.raises(ValueError, match="differ in size"):
        wsss.labels_miou(truth[:2], truth)


# --- nothing silently wrong (issue 24) --------------------------------------------------------------


def test_nan_cams_and_soft_present_labels_are_refused(scenes):
    cams, present = _true_cams(scenes.batch()["masks"].long())
    bad = cams.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        wsss.masks_from_cams(bad, present)  # was a silent background pixel
    with pytest.raises(ValueError, match="bool"):
        wsss.masks_from_cams(cams, present.float() * 0.3)
    images = scenes.batch()["images"].float() / 255
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):  # was swallowed as "GrabCut could not cut"
        wsss.masks_from_cams(cams, present, images=images, grabcut=True)


def test_label_values_outside_the_classes_are_refused(scenes):
    truth = scenes.batch()["masks"].long()
    bad = truth.clone()
    bad[0, 0, 0] = 9
    with pytest.raises(ValueError, match="not a mask class"):
        wsss.labels_miou(bad, truth)  # was a view() error
    with pytest.raises(ValueError, match="not a mask class"):
        wsss.train_on_labels(scenes, bad, epochs=1)  # was a loss IndexError
    with pytest.raises(TypeError, match="integer"):
        wsss.labels_miou(truth.float(), truth)
    with pytest.raises(ValueError, match="nothing to score"):
        wsss.labels_miou(torch.full_like(truth, wsss.IGNORE), truth)
    with pytest.raises(ValueError, match="integer ids"):
        wsss.scribbles(truth[0].float(), truth[0])
    with pytest.raises(ValueError, match="label kinds"):
        wsss.compare(zoo.load("shapes-classifier"), ["full", "scribbles"], train=2, test=2, epochs=1)
