"""Keypoint regression with a multitask loss (localize.keypoints) and CAM seeds (localize.cam_seeds)."""

from __future__ import annotations

import pytest
import torch

from guidewidgets import zoo
from guidewidgets.localize import cam_seeds, keypoints


@pytest.fixture(scope="module")
def classifier():
    return zoo.load("shapes-classifier")


@pytest.fixture(scope="module")
def data(classifier):
    return keypoints.keypoint_data(classifier, zoo.ShapeScenes(96, seed=3))


def test_keypoints_are_the_box_corners_and_the_centroid(data):
    item = zoo.ShapeScenes(96, seed=3)[0]
    x0, y0, x1, y1 = item["boxes"][0].tolist()
    kp = data["keypoints"][0] * 96
    assert kp[:4].tolist() == pytest.approx([x0, y0, x1, y1])
    assert x0 <= kp[4] <= x1 and y0 <= kp[5] <= y1
    assert data["features"].shape == (96, 64, keypoints.GRID, keypoints.GRID)


def test_multitask_loss_is_the_alpha_mix():
    logits, labels = torch.randn(4, 6), torch.tensor([0, 1, 2, 3])
    pts, truth = torch.rand(4, 6), torch.rand(4, 6)
    s = keypoints.multitask_loss(logits, pts, labels, truth, 1.0)
    r = keypoints.multitask_loss(logits, pts, labels, truth, 0.0)
    assert keypoints.multitask_loss(logits, pts, labels, truth, 0.3) == pytest.approx(0.3 * s + 0.7 * r)


def test_alpha_zero_never_trains_the_class_head(data):
    head = keypoints.train_multitask(data, alpha=0.0, steps=5)
    torch.manual_seed(0)  # train_multitask's seed: the same starting weights
    fresh = keypoints.MultitaskHead()
    assert torch.equal(head.classify.weight, fresh.classify.weight)
    assert not torch.equal(head.regress.weight, fresh.regress.weight)


def test_training_reduces_the_keypoint_error(data):
    before = keypoints.evaluate(keypoints.train_multitask(data, alpha=0.5, steps=0), data)
    after = keypoints.evaluate(keypoints.train_multitask(data, alpha=0.5, steps=60), data)
    assert after["keypoint_px"] < before["keypoint_px"] and after["accuracy"] > before["accuracy"]


def test_bad_alpha_and_bad_scenes_are_refused(data, classifier):
    with pytest.raises(ValueError, match="alpha"):
        keypoints.train_multitask(data, alpha=1.5)
    with pytest.raises(ValueError, match="classification"):
        keypoints.keypoint_data(classifier, zoo.ShapeScenes(2, task="segmentation"))


def test_seed_quality_of_the_truth_itself_is_perfect():
    truth = torch.zeros(8, 8, dtype=torch.bool)
    truth[2:5, 2:6] = True
    q = cam_seeds.seed_quality(truth.float(), truth, [0.5])
    assert q == {"precision": [1.0], "recall": [1.0]}
    blob = cam_seeds.seed_quality(torch.ones(8, 8), truth, [0.5])  # everything: a blob
    assert blob["recall"] == [1.0] and blob["precision"][0] == pytest.approx(12 / 64)


def test_erasing_contains_the_first_map_and_affinity_stays_in_range(classifier):
    item = zoo.ShapeScenes(4, seed=11)[1]
    union, rounds = cam_seeds.erase_and_expand(classifier, item["image"], item["label"], rounds=2)
    assert len(rounds) == 3 and bool((union >= rounds[0]).all())
    assert float(union.max()) == pytest.approx(1.0) and float(union.min()) >= 0
    refined = cam_seeds.affinity_refine(item["image"], rounds[0], iters=5)
    assert refined.shape == (96, 96) and float(refined.min()) >= 0 and float(refined.max()) == pytest.approx(1.0)


def test_affinity_does_not_cross_a_strong_edge():
    image = torch.zeros(3, 16, 16)
    image[:, :, 8:] = 1.0  # a sharp vertical edge
    seed = torch.zeros(16, 16)
    seed[8, 2] = 1.0
    out = cam_seeds.affinity_refine(image, seed, iters=40, sigma=0.1)
    assert float(out[:, :8].sum()) > 1000 * float(out[:, 8:].sum())
