"""The premise design's scene options and biased world: deterministic, what they say, bad options refused."""

from dataclasses import replace

import pytest
import torch

from guidewidgets.gain import design, reproduce, segment
from guidewidgets.gain.design import DESIGNS, Design
from guidewidgets.zoo.models import ShapeClassifier
from guidewidgets.zoo.scenes import BACKGROUNDS, CLASSES, ShapeScenes


def test_random_colours_and_scale_are_deterministic_at_a_seed():
    a = ShapeScenes(70, seed=3, colours="random", scale=0.6, bias=("triangle", "water", 0.95)).batch()
    b = ShapeScenes(70, seed=3, colours="random", scale=0.6, bias=("triangle", "water", 0.95)).batch()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = ShapeScenes(70, seed=4, colours="random", scale=0.6).batch()
    assert not torch.equal(a["images"], c["images"])


def test_recolouring_a_list_of_classes_leaves_the_others_their_colours():
    pair = ShapeScenes(256, seed=6, colours=("triangle", "square")).batch()
    again = ShapeScenes(256, seed=6, colours=("triangle", "square")).batch()
    assert torch.equal(pair["images"], again["images"])

    def spread(cls):  # per-object mean colour, spread over the objects of one class
        sel = (pair["labels"] == cls).nonzero()[:, 0]
        means = [pair["images"][i].float()[:, pair["masks"][i] > 0].mean(1) for i in sel]
        return torch.stack(means).std(0).max()

    assert spread(CLASSES.index("triangle")) > 2 * spread(CLASSES.index("star"))
    assert spread(CLASSES.index("square")) > 2 * spread(CLASSES.index("cross"))


def test_random_colours_name_no_class_and_scale_shrinks_objects():
    plain = ShapeScenes(256, seed=5).batch()
    rand = ShapeScenes(256, seed=5, colours="random").batch()
    small = ShapeScenes(256, seed=5, scale=0.5).batch()

    def mean_colour(b, cls):
        sel = b["labels"] == cls
        return b["images"][sel].float().transpose(0, 1)[:, b["masks"][sel] > 0].mean(1)  # (3,)

    # With class colours the red circle and the blue square differ by far; random colours erase that.
    gap = (mean_colour(plain, 0) - mean_colour(plain, 2)).abs().max()
    gap_rand = (mean_colour(rand, 0) - mean_colour(rand, 2)).abs().max()
    assert gap > 80 and gap_rand < gap / 3
    area = (plain["masks"] > 0).flatten(1).sum(1).float().mean()
    area_small = (small["masks"] > 0).flatten(1).sum(1).float().mean()
    assert area_small / area == pytest.approx(0.25, abs=0.06)  # half the size, a quarter of the area
    assert torch.equal(plain["labels"], small["labels"])  # the same draws, only sizes differ


def test_bad_scene_options_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match="colours must be one of"):
        ShapeScenes(4, colours="rainbow")
    with pytest.raises(ValueError, match="or a list of class names"):
        ShapeScenes(4, colours=["triangle", "boat"])
    with pytest.raises(ValueError, match=r"scale must be a number in \(0, 1.5\]"):
        ShapeScenes(4, scale=0)
    with pytest.raises(ValueError, match=r"bias probability must lie in \[0, 1\]"):
        ShapeScenes(4, bias=("triangle", "water", 1.2))
    with pytest.raises(ValueError, match="unknown class 'boat'"):
        ShapeScenes(4, bias=("boat", "water", 0.9))


def test_bad_designs_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match="unknown biased class 'boat'; choose one of"):
        Design("boat")
    with pytest.raises(ValueError, match=r"in \[0, 1\]; got -0.1"):
        Design("triangle", p=-0.1)
    with pytest.raises(ValueError, match=r"in \[0, 1\]; got 1.5"):
        Design("triangle", p=1.5)
    with pytest.raises(ValueError, match="unknown context 'sky'"):
        Design("triangle", "sky")
    with pytest.raises(ValueError, match="pretrain must be one of"):
        Design("triangle", pretrain="imagenet")
    with pytest.raises(ValueError, match="joins circle and ellipse"):
        Design("triangle", pretrain="merged")
    with pytest.raises(ValueError, match="scale must be"):
        Design("triangle", scale=3.0)
    with pytest.raises(ValueError, match="unknown design"):
        reproduce.run("smoke", design="boats")


def test_premise_world_ties_only_its_class_to_water():
    d = DESIGNS["premise"]
    data = design.training_set(256, 100, d)
    tri, water = CLASSES.index("triangle"), BACKGROUNDS.index("water")
    on_water = data["background"] == water
    assert bool((data["labels"][on_water] == tri).all()) and int(on_water.sum()) > 20
    test = design.test_sets(400, 200, d)
    assert bool((test["labels"][test["class_without_background"]] == tri).all())
    assert bool((test["background"][test["background_without_class"]] == water).all())
    assert d.row_names() == ("triangle without water", "water without triangle")


def test_pretrain_others_never_shows_the_biased_class_and_keeps_the_head():
    torch.manual_seed(0)
    model = ShapeClassifier()
    head = model.fc.weight.clone()
    conv = model.features.block1[0].weight.clone()
    d = Design("triangle", colours="random", scale=0.6, pretrain="others")
    design.pretrain_trunk(model, 64, d, epochs=1)
    assert torch.equal(model.fc.weight, head) and not torch.equal(model.features.block1[0].weight, conv)


def test_smoke_run_of_the_premise_with_paired_table_and_segmentation():
    runs = [
        reproduce.run("smoke", test_seed=reproduce.DEV_SEED, seed=s, keep_models=(s == 0), log=lambda _: None)
        for s in (0, 1)
    ]
    text = reproduce.format_tables(runs[0])
    assert "triangle without water" in text and "water without triangle" in text
    p = reproduce.paired(runs, "GAIN", "Grad-CAM (plain)")
    a = [100 * (r["columns"]["GAIN"]["overall"] - r["columns"]["Grad-CAM (plain)"]["overall"]) for r in runs]
    assert p["overall"]["diffs"] == pytest.approx(a)
    assert p["overall"]["wins"] == sum(x > 0 for x in a)
    assert "GAIN - Grad-CAM" in reproduce.format_paired(runs)
    seg = segment.segmentation_table(runs[0], train=32, test=32, epochs=1)
    assert set(seg) == {*runs[0]["columns"], "true masks"}
    assert all(0.0 <= v["miou"] <= 1.0 and 0.0 <= v["label_miou"] <= 1.0 for v in seg.values())
    assert seg["true masks"]["label_miou"] == pytest.approx(1.0)
    assert "55.3" in segment.format_segmentation([seg])
    with pytest.raises(ValueError, match="keep_models=True"):
        segment.segmentation_table(runs[1])


def test_the_stored_measurement_loads_and_prints_its_commands():
    from guidewidgets.gain.measured import premise_full

    runs = premise_full()
    assert [r["seed"] for r in runs] == [0, 1, 2, 3, 4] and {r["test_seed"] for r in runs} == {9100}
    text = reproduce.format_measured("premise")
    assert "--design premise --seeds 0 1 2" in text and "training seeds 0, 1, 2, 3, 4" in text
    assert "Paired differences over 5 training seeds" in text and "over training seeds 3, 4" in text


def test_the_second_designs_measurement_loads_and_prints_its_commands():
    from guidewidgets.gain.measured import premise_form_full

    runs = premise_form_full()
    assert [r["seed"] for r in runs] == [0, 1, 2, 3, 4] and {r["test_seed"] for r in runs} == {9100}
    assert all(Design(**{**r["design"], "colours": "random"}) == DESIGNS["premise-form"] for r in runs)
    text = reproduce.format_measured()  # the default design's
    assert "--design premise-form --seeds 0 1 2" in text and "training seeds 0, 1, 2, 3, 4" in text
    assert "Paired differences over 5 training seeds" in text
    with pytest.raises(ValueError, match="no stored measurement of design 'circle'"):
        reproduce.format_measured("circle")


def test_premise_form_recolours_every_object_and_is_deterministic_at_a_seed():
    d = DESIGNS["premise-form"]
    assert d.colours == "random" and d.pretrain == "others" and d.pretrain_epochs == 12
    a, b = design.training_set(128, 100, d), design.training_set(128, 100, d)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["images"], design.training_set(128, 101, d)["images"])
    t = design.test_sets(300, 200, d)
    assert torch.equal(t["images"], design.test_sets(300, 200, d)["images"])
    for cls in range(len(CLASSES)):  # no class keeps a colour: each one's objects spread over the colour cube
        sel = (t["labels"] == cls).nonzero()[:, 0]
        means = torch.stack([t["images"][i].float()[:, t["masks"][i] > 0].mean(1) for i in sel])
        assert float(means.std(0).min()) > 30, CLASSES[cls]


def test_pretrain_epochs_come_from_the_design_and_train_deterministically():
    d = Design("triangle", colours="random", pretrain="others", pretrain_epochs=2)
    weights = []
    for epochs in (None, 2, 1):
        torch.manual_seed(0)
        model = ShapeClassifier()
        design.pretrain_trunk(model, 48, d, epochs=epochs)
        weights.append(model.features.block5[0].weight.clone())
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


@pytest.mark.parametrize("epochs", [0, -3, 2.5, True, "12"])
def test_bad_pretrain_epochs_are_refused_with_a_sentence(epochs):
    with pytest.raises(ValueError, match=r"pretrain_epochs is the number of pretraining epochs, a whole number >= 1"):
        Design("triangle", pretrain="others", pretrain_epochs=epochs)


def test_the_trunk_cache_is_written_once_and_read_back(tmp_path, monkeypatch):
    assert reproduce.SIZES["premise-form"]["full"]["pretrain"] == 3000
    d = DESIGNS["premise-form"]
    cfg = reproduce.FORM_SETTINGS["smoke"]
    monkeypatch.setattr(reproduce, "_TRUNKS", {})  # a fresh process: no trunk in memory yet
    first = reproduce._initial(d, cfg, seed=3, share_trunk=True, cache=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".pt"
    monkeypatch.setattr(reproduce, "_TRUNKS", {})  # the next process: nothing in memory, the file on disk

    def no_pretraining(*args, **kwargs):
        raise AssertionError("the cached trunk was trained again instead of read")

    monkeypatch.setattr(reproduce._design, "pretrain_trunk", no_pretraining)
    again = reproduce._initial(d, cfg, seed=3, share_trunk=True, cache=tmp_path)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in first.state_dict().items())
    assert list(tmp_path.iterdir()) == files
    untrained = reproduce._initial(replace(d, pretrain="none"), cfg, seed=3, share_trunk=True, cache=tmp_path)
    assert not torch.equal(untrained.features.block1[0].weight, first.features.block1[0].weight)
