"""The embedded default: ShapeScenes, the shipped models, photos and torchvision adapters."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from torch import nn

from guidewidgets import hooks, zoo
from guidewidgets.zoo import train as recipes
from guidewidgets.zoo.adapters import WeightsUnavailableError

FRESH_SEED = 4242  # never used by the training recipes (train: 1000+, test: 777)


# --- ShapeScenes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_same_seed_same_bytes_different_seed_differs(task):
    a = zoo.ShapeScenes(70, seed=3, task=task).batch()
    b = zoo.ShapeScenes(70, seed=3, task=task).batch()
    c = zoo.ShapeScenes(70, seed=4, task=task).batch()
    for k in ("images", "masks", "labels", "background"):
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["images"], c["images"])
    assert not torch.equal(a["masks"], c["masks"])
    # a scene depends on its index, not on how many scenes were asked for
    longer = zoo.ShapeScenes(300, seed=3, task=task).batch(0, 70)
    assert torch.equal(longer["images"], a["images"]) and torch.equal(longer["masks"], a["masks"])
    # items read one at a time are the same scenes as the batch
    item = zoo.ShapeScenes(70, seed=3, task=task)[67]
    assert torch.equal((item["image"] * 255).round().to(torch.uint8), a["images"][67])
    assert torch.equal(item["mask"], a["masks"][67].long())


def test_items_have_the_documented_types():
    item = zoo.ShapeScenes(5, seed=0)[0]
    assert item["image"].shape == (3, 96, 96) and item["image"].dtype == torch.float32
    assert item["image"].min() >= 0 and item["image"].max() <= 1
    assert item["mask"].shape == (96, 96) and item["mask"].dtype == torch.int64
    assert isinstance(item["label"], int) and 0 <= item["label"] < len(zoo.CLASSES)
    assert item["boxes"].shape == (1, 4) and item["boxes"].dtype == torch.int64
    assert zoo.ShapeScenes(3, seed=0, size=128)[2]["image"].shape == (3, 128, 128)
    assert zoo.ShapeScenes(1, seed=0, size=320, task="segmentation")[0]["mask"].shape == (320, 320)
    loader = torch.utils.data.DataLoader(
        zoo.ShapeScenes(6, seed=0, task="segmentation"), batch_size=3, collate_fn=zoo.ShapeScenes.collate
    )
    first = next(iter(loader))
    assert first["image"].shape == (3, 3, 96, 96) and len(first["boxes"]) == 3
    assert len(zoo.CLASSES) >= 6 and zoo.MASK_CLASSES[0] == "background"


def _tight_box(m: torch.Tensor) -> list[int]:
    ys, xs = m.nonzero(as_tuple=True)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_masks_labels_and_boxes_agree(task):
    scenes = zoo.ShapeScenes(60, seed=11, task=task)
    counts = []
    for i in range(len(scenes)):
        s = scenes[i]
        n = len(s["boxes"])
        counts.append(n)
        assert n >= 1
        assert set(s["instances"].unique().tolist()) == set(range(n + 1)) | (
            {0} if (s["instances"] == 0).any() else set()
        )
        assert torch.equal(s["mask"] == 0, s["instances"] == 0)
        areas = []
        for j in range(n):
            obj = s["instances"] == j + 1
            assert _tight_box(obj) == s["boxes"][j].tolist()
            assert (s["mask"][obj] == s["box_labels"][j] + 1).all()
            areas.append(int(obj.sum()))
        assert s["label"] == int(s["box_labels"][int(np.argmax(areas))])
        if task == "classification":
            assert s["mask"].unique().tolist() == [0, s["label"] + 1]
    if task == "segmentation":
        assert max(counts) >= 3  # several objects per scene


@pytest.mark.parametrize("p", [0.8, 0.3])
def test_bias_ties_class_to_background_at_the_chosen_probability(p):
    b = zoo.ShapeScenes(900, seed=5, bias=("cross", "water", p)).batch()
    cross = b["labels"] == zoo.CLASSES.index("cross")
    water = b["background"] == zoo.BACKGROUNDS.index("water")
    rate = float(water[cross].float().mean())
    print(f"\nbias p={p}: P(water | cross) = {rate:.3f} over {int(cross.sum())} crosses")
    assert abs(rate - p) < 0.1, rate
    assert not water[~cross].any()  # water only ever comes with the cross


def test_without_bias_class_and_background_are_independent():
    b = zoo.ShapeScenes(900, seed=5).batch()
    cross = b["labels"] == zoo.CLASSES.index("cross")
    water = b["background"] == zoo.BACKGROUNDS.index("water")
    chance = 1 / len(zoo.BACKGROUNDS)
    assert abs(float(water[cross].float().mean()) - chance) < 0.1
    assert abs(float(water[~cross].float().mean()) - chance) < 0.05


def test_bad_scene_options_say_what_to_do():
    with pytest.raises(ValueError, match="from 96 to 512"):
        zoo.ShapeScenes(4, size=64)
    with pytest.raises(ValueError, match="classification' or 'segmentation"):
        zoo.ShapeScenes(4, task="detection")
    with pytest.raises(ValueError, match="unknown background 'lava'"):
        zoo.ShapeScenes(4, bias=("cross", "lava", 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        zoo.ShapeScenes(4, bias=("cross", "water", 2))
    with pytest.raises(IndexError):
        zoo.ShapeScenes(4)[4]


# --- shipped models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classifier():
    return zoo.load("shapes-classifier")


@pytest.fixture(scope="module")
def segmenter():
    return zoo.load("shapes-segmenter")


def test_models_follow_the_conventions(classifier, segmenter):
    assert zoo.models() == ["shapes-classifier", "shapes-segmenter"]
    x = zoo.ShapeScenes(2, seed=FRESH_SEED)[0]["image"][None]
    for model, task, k in [(classifier, "classification", 6), (segmenter, "segmentation", 7)]:
        assert not model.training and model.task == task
        assert len(model.classes) == k
        hooks.get_layer(model, model.default_explain_layer)
        hooks.get_layer(model, model.default_guide_layer)
        with torch.no_grad():
            out = model(x)
        assert out.shape == ((1, 6) if task == "classification" else (1, 7, 96, 96))
    assert segmenter.classes[0] == "background" and segmenter.classes[1:] == classifier.classes
    # the guiding block's layer is a spatially small bottleneck
    with hooks.capture(segmenter, segmenter.default_guide_layer, cut=False) as cap, torch.no_grad():
        segmenter(x)
    assert cap.activations.shape[-2:] == (12, 12)


def test_classifier_head_is_gap_linear(classifier):
    assert isinstance(classifier.pool, nn.AdaptiveAvgPool2d) and isinstance(classifier.fc, nn.Linear)
    x = zoo.ShapeScenes(4, seed=FRESH_SEED).batch()["images"].float() / 255
    with hooks.capture(classifier, classifier.default_explain_layer, cut=False) as cap, torch.no_grad():
        logits = classifier(x)
    # logits = W · mean(A) + b: so the class activation map W·A averages to the logit (CAM applies)
    cam = torch.einsum("kc,bchw->bkhw", classifier.fc.weight, cap.activations)
    torch.testing.assert_close(cam.mean(dim=(2, 3)) + classifier.fc.bias, logits, atol=1e-4, rtol=1e-4)


def test_classifier_reaches_95_percent_on_fresh_scenes(classifier):
    result = recipes.evaluate(classifier, zoo.ShapeScenes(400, seed=FRESH_SEED))
    print(f"\nshapes-classifier accuracy on 400 fresh scenes: {100 * result['accuracy']:.1f}%")
    assert result["accuracy"] >= 0.95


def test_segmenter_miou_is_good_but_leaves_mistakes(segmenter):
    result = recipes.evaluate(segmenter, zoo.ShapeScenes(200, seed=FRESH_SEED, task="segmentation"))
    print(f"\nshapes-segmenter mIoU on 200 fresh scenes: {100 * result['miou']:.1f}")
    assert 0.55 <= result["miou"] <= 0.80


def test_grad_cam_points_inside_the_object(classifier):
    explain = pytest.importorskip("guidewidgets.explain")
    scenes = zoo.ShapeScenes(300, seed=FRESH_SEED)
    b = scenes.batch()
    x = b["images"].float() / 255
    maps = explain.explain(classifier, x, "grad-cam", target=b["labels"].tolist())
    assert maps.shape == (300, 96, 96)
    peak = maps.flatten(1).argmax(1)
    py, px = peak // 96, peak % 96
    in_mask = b["masks"].flatten(1).gather(1, peak[:, None])[:, 0] > 0
    boxes = torch.stack([scenes[i]["boxes"][0] for i in range(len(scenes))])
    in_box = (boxes[:, 0] <= px) & (px < boxes[:, 2]) & (boxes[:, 1] <= py) & (py < boxes[:, 3])
    rate, box_rate = float(in_mask.float().mean()), float(in_box.float().mean())
    print(
        f"\npointing game, Grad-CAM, 300 fresh scenes: peak on the object's pixels {100 * rate:.1f}%, "
        f"inside its box {100 * box_rate:.1f}%"
    )
    # Most peaks land on the object itself; the misses sit just outside thin shapes (a triangle's
    # corners, an ellipse's ends), where the evidence that tells them apart is.
    assert rate > 0.6 and box_rate > 0.75


# --- loading errors ------------------------------------------------------------------------------


def test_unknown_model_name_suggests_the_close_one():
    with pytest.raises(ValueError, match="Did you mean 'shapes-segmenter'"):
        zoo.load("shapes-segmentr")
    with pytest.raises(ValueError, match="torchvision_model"):
        zoo.load("resnet50")


def test_missing_corrupted_or_foreign_weights_say_how_to_regenerate(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m guidewidgets.zoo.train segmenter"):
        zoo.load("shapes-segmenter", weights=tmp_path / "nothing.pt")
    good = zoo.weights_path("shapes-segmenter").read_bytes()
    torn = tmp_path / "torn.pt"
    torn.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupted"):
        zoo.load("shapes-segmenter", weights=torn)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(ValueError, match="corrupted"):
        zoo.load("shapes-segmenter", weights=junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match="not a guidewidgets weights file"):
        zoo.load("shapes-segmenter", weights=foreign)
    swapped = tmp_path / "swapped.pt"
    blob = torch.load(zoo.weights_path("shapes-classifier"), weights_only=True)
    blob["model"] = "shapes-segmenter"
    torch.save(blob, swapped)
    with pytest.raises(ValueError, match="do not fit"):
        zoo.load("shapes-segmenter", weights=swapped)


# --- training recipe -----------------------------------------------------------------------------


def test_training_recipe_is_deterministic_and_reports(tmp_path):
    runs = [
        recipes.train("classifier", epochs=1, train=48, test=8, threads=1, batch=16, log=lambda m: None)
        for _ in range(2)
    ]
    (m1, r1), (m2, _r2) = runs
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k
    text = recipes.format_report(r1)
    assert "accuracy" in text and "confusion matrix" in text
    recipes.save(m1, "shapes-classifier", tmp_path / "c.pt", r1)
    loaded = zoo.load("shapes-classifier", weights=tmp_path / "c.pt")
    assert torch.equal(loaded.fc.weight, m1.fc.weight)
    seg = recipes.evaluate(zoo.load("shapes-segmenter"), zoo.ShapeScenes(4, seed=1, task="segmentation"))
    text = recipes.format_report(seg)
    assert "mIoU" in text and "per-class IoU" in text


# --- photos --------------------------------------------------------------------------------------


def test_photos_ship_offline():
    cat = zoo.photo("cat")
    assert cat.shape == (300, 451, 3) and cat.dtype == np.uint8
    assert np.array_equal(zoo.photo("chelsea"), cat)
    t = zoo.photo("coffee", tensor=True)
    assert t.shape == (3, 400, 600) and t.dtype == torch.float32 and t.min() >= 0 and t.max() <= 1
    assert zoo.photo("rocket", tensor=True, size=224).shape == (3, 224, 224)
    assert zoo.photo("astronaut", size=96).shape == (96, 96, 3)
    assert set(zoo.photos()) == {"cat", "coffee", "astronaut", "rocket"}
    with pytest.raises(ValueError, match="unknown photo 'dog'"):
        zoo.photo("dog")


# --- torchvision adapters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, task, k, explain_layer",
    [
        ("resnet18", "classification", 1000, "net.layer4"),
        ("mobilenet_v3_small", "classification", 1000, "net.features"),
        ("squeezenet1_0", "classification", 1000, "net.features"),
        ("lraspp_mobilenet_v3_large", "segmentation", 21, "net.classifier.cbr"),
        ("deeplabv3_mobilenet_v3_large", "segmentation", 21, "net.backbone.16"),
    ],
)
def test_torchvision_adapter_without_weights(name, task, k, explain_layer):
    model = zoo.torchvision_model(name, weights=None)
    assert model.task == task and len(model.classes) == k and not model.training
    assert model.default_explain_layer == explain_layer
    hooks.get_layer(model, model.default_guide_layer)
    if task == "classification":
        assert model.classes[281] == "tabby"
    else:
        assert model.classes[0] == "background" and "cat" in model.classes
    torch.testing.assert_close(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    if name in ("resnet18", "lraspp_mobilenet_v3_large"):
        x = torch.rand(1, 3, 64, 80)
        with torch.no_grad():
            out = model(x)
        assert out.shape == ((1, 1000) if task == "classification" else (1, 21, 64, 80))


def test_torchvision_offline_without_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("GUIDEWIDGETS_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="weights=None"):
        zoo.torchvision_model("resnet18")
    # a download that fails (no internet) says the same
    monkeypatch.delenv("GUIDEWIDGETS_OFFLINE")

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    import torchvision.models._api as tv_api  # where WeightsEnum.get_state_dict looks it up

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", no_network)
    with pytest.raises(WeightsUnavailableError, match="how|fetch"):
        zoo.torchvision_model("fcn_resnet50", weights="DEFAULT")


def test_torchvision_adapter_rejects_unknown_names():
    with pytest.raises(ValueError, match="Did you mean 'resnet50'"):
        zoo.torchvision_model("resnet5O")
    with pytest.raises(ValueError, match="detection"):
        zoo.torchvision_model("fasterrcnn_resnet50_fpn", weights=None)
    with pytest.raises(ValueError, match="no weights 'IMAGENET9K'"):
        zoo.torchvision_model("resnet18", weights="IMAGENET9K")
