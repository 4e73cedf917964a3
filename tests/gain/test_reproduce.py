"""The biased-circle reproduction at smoke size: it runs, its table is well formed, its rows mean what they say."""

import pytest

from guidewidgets.gain import reproduce
from guidewidgets.zoo.scenes import BACKGROUNDS, CLASSES


def test_training_set_is_biased_and_test_rows_select_what_they_name():
    data = reproduce.training_set(256)
    water, circle = BACKGROUNDS.index("water"), CLASSES.index("circle")
    on_water = data["background"] == water
    assert bool((data["labels"][on_water] == circle).all())  # nothing but circles on water
    assert data["masks"].shape == (256, len(CLASSES), 96, 96)
    assert bool((data["masks"].flatten(2).any(2) == data["hot"].bool()).all())  # each mask under its own class
    test = reproduce.test_sets(300, seed=reproduce.DEV_SEED)
    assert bool((test["labels"][test["class_without_background"]] == circle).all())
    assert bool((test["background"][test["class_without_background"]] != water).all())
    assert bool((test["background"][test["background_without_class"]] == water).all())
    assert bool((test["labels"][test["background_without_class"]] != circle).all())


def test_smoke_run_and_tables():
    result = reproduce.run("smoke", test_seed=reproduce.DEV_SEED, design="circle", log=lambda s: None)
    cols = result["columns"]
    assert list(cols) == ["Grad-CAM (plain)", "GAIN", "GAIN_ext 2 PL"]
    for c in cols.values():
        assert all(0.0 <= v <= 1.0 for v in c.values())
        assert c["overall"] == pytest.approx((c["class_without_background"] + c["background_without_class"]) / 2)
    text = reproduce.format_tables(result)
    for row in ["boat without water", "circle without water", "water without circle", "pointing game", "84%"]:
        assert row in text


def test_several_training_seeds_give_mean_and_spread():
    runs = [reproduce.run("smoke", test_seed=reproduce.DEV_SEED, seed=s, log=lambda _: None) for s in (0, 1)]
    a, b = (r["columns"]["GAIN"]["overall"] for r in runs)
    text = reproduce.format_seed_means(runs)
    assert "training seeds 0, 1" in text
    line = next(row for row in text.splitlines() if row.startswith("overall"))
    cells = [c.strip() for c in line[24:].split("  ") if c.strip()]
    mean, sd = (float(x) for x in cells[1].split(" ± "))  # cells: plain, GAIN, GAIN_ext
    assert mean == pytest.approx(100 * (a + b) / 2, abs=0.05)
    assert sd == pytest.approx(100 * abs(a - b) / 2**0.5, abs=0.05)  # sample standard deviation of two
    with pytest.raises(ValueError, match="at least two"):
        reproduce.format_seed_means(runs[:1])


def test_unknown_setting_and_too_few_scenes():
    with pytest.raises(ValueError, match="unknown setting"):
        reproduce.run("huge")
    with pytest.raises(ValueError, match="more test scenes"):
        reproduce.test_sets(2, seed=reproduce.DEV_SEED)


def test_pretrain_trunk_changes_the_trunk_only_and_bad_pretrain_is_refused():
    import torch

    from guidewidgets.zoo.models import ShapeClassifier

    torch.manual_seed(0)
    model = ShapeClassifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reproduce.pretrain_trunk(model, 32, epochs=1)
    after = model.state_dict()
    assert torch.equal(after["fc.weight"], before["fc.weight"]) and torch.equal(after["fc.bias"], before["fc.bias"])
    conv = [k for k in before if k.startswith("features.") and k.endswith("weight") and before[k].dim() == 4]
    assert conv and all(not torch.equal(after[k], before[k]) for k in conv)
    with pytest.raises(ValueError, match="pretrain must be"):
        reproduce.run("smoke", test_seed=reproduce.DEV_SEED, pretrain="imagenet")
