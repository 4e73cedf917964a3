"""Metrics by property: maps that equal the object score perfectly, random maps score worse, a
randomised model's maps do not correlate, batching changes nothing, bad input is refused."""

import copy

import pytest
import torch

from guidewidgets import explain, metrics, zoo


@pytest.fixture(scope="module")
def model():
    return zoo.load("shapes-classifier")


@pytest.fixture(scope="module")
def data():
    ds = zoo.ShapeScenes(8, seed=2468)
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([it["image"] for it in items])
    masks = torch.stack([it["mask"] > 0 for it in items])
    labels = torch.tensor([it["label"] for it in items])
    return items, x, masks, labels


def test_default_tolerance_scales_zhang_15px_at_224():
    assert metrics.default_tolerance((224, 224)) == 15
    assert metrics.default_tolerance((96, 96)) == pytest.approx(15 * 96 / 224)


def test_mask_map_wins_the_pointing_game_and_all_energy(data):
    masks = data[2]
    assert metrics.pointing_game(masks.float(), masks).all()
    assert torch.allclose(metrics.energy_pointing(masks.float(), masks), torch.ones(len(masks)))


def test_pointing_game_tolerance():
    mask = torch.zeros(1, 50, 50, dtype=torch.bool)
    mask[0, 20:30, 20:30] = True
    m = torch.zeros(1, 50, 50)
    m[0, 25, 35] = 1.0  # 6 px right of the object's last column (29)
    assert not metrics.pointing_game(m, mask, tolerance=5)[0]
    assert metrics.pointing_game(m, mask, tolerance=6)[0]
    # Ties: every maximum must be near the object, so a flat map cannot win.
    m[0, 0, 0] = 1.0
    assert not metrics.pointing_game(m, mask, tolerance=6)[0]
    with pytest.raises(ValueError, match="empty"):
        metrics.pointing_game(torch.zeros(1, 50, 50), mask)
    assert not metrics.pointing_game(torch.zeros(1, 50, 50), mask, on_empty="miss")[0]


def test_deletion_of_the_true_mask_is_lower_than_of_a_random_map(model, data):
    _, x, masks, labels = data
    g = torch.Generator().manual_seed(0)
    rand = torch.rand(masks.shape, generator=g)
    d_mask = metrics.deletion(model, x, masks.float(), labels, steps=16)
    d_rand = metrics.deletion(model, x, rand, labels, steps=16)
    assert d_mask.mean() < d_rand.mean()
    i_mask = metrics.insertion(model, x, masks.float(), labels, steps=16)
    i_rand = metrics.insertion(model, x, rand, labels, steps=16)
    assert i_mask.mean() > i_rand.mean()


def test_batched_curves_equal_the_per_step_loop(model, data):
    _, x, masks, labels = data
    m = torch.rand(masks[:2].shape, generator=torch.Generator().manual_seed(1))
    for mode in ("deletion", "insertion"):
        a = metrics.perturbation_curves(model, x[:2], m, labels[:2], mode=mode, steps=8, batch_size=64)
        b = metrics.perturbation_curves(model, x[:2], m, labels[:2], mode=mode, steps=8, batch_size=1)
        assert torch.allclose(a, b, atol=1e-5)
        assert a.shape == (2, 9)
    # Deletion ends at an all-black image, whatever the map: the same last point for every map.
    d1 = metrics.perturbation_curves(model, x[:2], m, labels[:2], steps=4)
    d2 = metrics.perturbation_curves(model, x[:2], -m, labels[:2], steps=4)
    assert torch.allclose(d1[:, [0, -1]], d2[:, [0, -1]])


def test_noisy_linear_imputation_keeps_kept_pixels_and_fills_smoothly():
    img = torch.rand(3, 20, 20)
    removed = torch.zeros(20, 20, dtype=torch.bool)
    removed[5:15, 5:15] = True
    out = metrics.noisy_linear_imputation(img, removed, noise=0.0)
    assert torch.equal(out[:, ~removed], img[:, ~removed])
    const = torch.full((3, 20, 20), 0.3)
    assert torch.allclose(metrics.noisy_linear_imputation(const, removed, noise=0.0), const, atol=1e-6)
    # A linear ramp is harmonic, so the imputation reproduces it inside the hole.
    ramp = torch.linspace(0, 1, 20).expand(3, 20, 20).clone()
    assert torch.allclose(metrics.noisy_linear_imputation(ramp, removed, noise=0.0), ramp, atol=1e-5)
    with pytest.raises(ValueError, match="every pixel"):
        metrics.noisy_linear_imputation(img, torch.ones(20, 20, dtype=torch.bool))


def test_road_morf_of_the_mask_is_below_a_random_map(model, data):
    _, x, masks, labels = data
    rand = torch.rand(masks.shape, generator=torch.Generator().manual_seed(0))
    f = (0.2, 0.5)
    morf_mask, per = metrics.road(model, x, masks.float(), labels, "morf", fractions=f)
    morf_rand, _ = metrics.road(model, x, rand, labels, "morf", fractions=f)
    assert per.shape == (len(x), 2)
    assert morf_mask.mean() < morf_rand.mean()
    lerf_mask, _ = metrics.road(model, x, masks.float(), labels, "lerf", fractions=f)
    assert lerf_mask.mean() > morf_mask.mean()


def test_randomised_model_grad_cam_does_not_correlate_and_model_is_untouched(model, data):
    _, x, _, labels = data
    before = {k: v.clone() for k, v in model.state_dict().items()}
    labels_, rho = metrics.cascading_randomization(model, x, "grad-cam", labels)
    assert len(labels_) == rho.shape[0] and rho.shape[1] == len(x)
    full = rho[-1][~rho[-1].isnan()]
    assert full.abs().mean() < 0.5
    same = metrics.spearman(
        explain.explain(model, x, "grad-cam", labels), explain.explain(model, x, "grad-cam", labels)
    )
    assert torch.allclose(same, torch.ones(len(x), dtype=torch.float64))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training


def test_randomized_copy_differs_only_in_the_top_layers(model):
    layers = metrics.randomizable_layers(model)
    assert layers[0] == "fc"
    top = metrics.randomized_copy(model, 1)
    a, b = dict(model.named_parameters()), dict(top.named_parameters())
    assert not torch.equal(a["fc.weight"], b["fc.weight"])
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith("fc."))


def test_evaluate_returns_a_tidy_table(model):
    ds = zoo.ShapeScenes(4, seed=2468)
    table = metrics.evaluate(
        model, ds, ["grad-cam", "saliency"], ["pointing-game", "corloc", "deletion", "sanity"], n=4, steps=8
    )
    assert set(table.columns) >= {"method", "metric", "value", "seconds_per_image", "higher_is_better", "n"}
    assert len(table) == 2 * 4
    assert set(table["method"]) == {"grad-cam", "saliency"}
    assert table["value"].between(-1, 1).all()
    assert (table["n"] <= 4).all()


def test_evaluate_dispatches_through_the_metric_registry(model, monkeypatch):
    """A metric registered once in METRICS is scored by evaluate; no elif chain to extend."""
    for name, info in metrics.METRICS.items():
        assert isinstance(info, metrics.MetricInfo) and callable(info.score) and info[0] is info.higher_is_better, name
    seen = []

    def peak(b, maps):
        seen.append((b.method, tuple(maps.shape)))
        return maps.flatten(1).amax(1).double()

    monkeypatch.setitem(metrics.METRICS, "peak", metrics.MetricInfo(True, None, "the map's maximum", peak))
    table = metrics.evaluate(model, zoo.ShapeScenes(3, seed=2468), ["grad-cam"], ["peak", "box-iou"], batch_size=2)
    assert seen == [("grad-cam", (2, 96, 96)), ("grad-cam", (1, 96, 96))]
    assert table.set_index("metric").loc["peak", "n"] == 3


def test_evaluate_refuses_missing_annotations_and_unknown_names(model):
    bare = [{"image": torch.rand(3, 96, 96), "label": 0}]
    with pytest.raises(ValueError, match="needs 'mask'"):
        metrics.evaluate(model, bare, ["grad-cam"], ["pointing-game"])
    with pytest.raises(ValueError, match="needs 'boxes'"):
        metrics.evaluate(model, bare, ["grad-cam"], ["corloc"])
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.evaluate(model, bare, ["grad-cam"], ["accuracy"])
    with pytest.raises(ValueError, match="Unknown explanation method"):
        metrics.evaluate(model, bare, ["grad-kam"], ["deletion"])
    with pytest.raises(ValueError, match="empty"):
        metrics.evaluate(model, [], ["grad-cam"], ["deletion"])


def test_maps_and_images_of_different_sizes_are_refused(model, data):
    _, x, masks, _ = data
    with pytest.raises(ValueError, match="upsample"):
        metrics.deletion(model, x, torch.rand(len(x), 12, 12))
    with pytest.raises(ValueError, match="upsample"):
        metrics.road(model, x, torch.rand(len(x), 12, 12))
    with pytest.raises(ValueError, match="differ in size"):
        metrics.pointing_game(torch.rand(len(x), 12, 12), masks)
    with pytest.raises(ValueError, match="between 0 and 1"):
        metrics.road(model, x, masks.float(), fractions=(0.5, 1.0))


def test_scoreboard_prints_every_method_and_metric(capsys):
    from guidewidgets.metrics import scoreboard

    code = scoreboard.main(["--quick", "--methods", "cam,saliency", "--metrics", "pointing-game,corloc,deletion"])
    out = capsys.readouterr().out
    assert code == 0
    assert "seed 2027" in out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| method | pointing-game ↑ | corloc ↑ | deletion ↓ |")
    assert [line.split(" | ")[0][2:] for line in lines[1:]] == ["cam", "saliency"]


def test_evaluate_leaves_out_methods_that_refuse_the_model_only_when_not_named(model):
    ds = zoo.ShapeScenes(2, seed=2468)
    refusing = [m for m in explain.methods() if explain.method_info(m).family == "attention"]
    if not refusing:
        pytest.skip("no attention-only method registered")
    with pytest.raises(ValueError):
        metrics.evaluate(model, ds, refusing[:1], ["pointing-game"])


def test_data_randomization_random_label_model_correlates_less_than_copies(model, data):
    """Adebayo et al.'s data randomisation: Grad-CAM of a net trained on permuted labels correlates
    less with the trained model's than an exact copy (1) and than a control trained on the true
    labels with the same initialisation and budget; the user's model is untouched."""
    from guidewidgets.metrics.sanity import data_randomization, train_copy

    _, x, _, labels = data
    b = zoo.ShapeScenes(128, seed=1357).batch()
    images, y = b["images"].float() / 255, b["labels"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = data_randomization(model, x, "grad-cam", images, y, labels, epochs=1)
    rand, true = r["random-labels"], r["true-labels"]
    assert rand.shape == true.shape == (len(x),)
    same = metrics.spearman(
        explain.explain(model, x, "grad-cam", labels),
        explain.explain(copy.deepcopy(model), x, "grad-cam", labels),
    )
    assert torch.allclose(same, torch.ones(len(x), dtype=torch.float64))
    assert rand.nanmean() < true.nanmean() < same.mean()
    assert rand.nanmean() < 0.3
    assert set(r["accuracy"]) == {"random-labels", "true-labels"}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and all(p.grad is None for p in model.parameters())
    # Deterministic at a seed: the same arguments give the same weights.
    a, _ = train_copy(model, images[:16], y[:16], permute_labels=True, epochs=1, batch=8)
    c, _ = train_copy(model, images[:16], y[:16], permute_labels=True, epochs=1, batch=8)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))


def test_data_randomization_refuses_bad_training_data(model, data):
    from guidewidgets.metrics.sanity import data_randomization

    x = data[1][:2]
    with pytest.raises(ValueError, match=r"images \(N, C, H, W\) and integer labels \(N,\)"):
        data_randomization(model, x, "grad-cam", torch.rand(4, 3, 96, 96), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class indices"):
        data_randomization(model, x, "grad-cam", torch.rand(4, 3, 96, 96), torch.zeros(4))


# --- nothing silently wrong (issue 24) --------------------------------------------------------------


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()


def test_pointing_game_refuses_a_nan_tolerance_and_maps_passed_as_masks():
    m = torch.zeros(1, 10, 10)
    m[0, 2, 2] = 1
    k = m.bool()
    with pytest.raises(ValueError, match="tolerance"):
        metrics.pointing_game(m, k, tolerance=float("nan"))  # was a miss for every image
    with pytest.raises(TypeError, match="tolerance"):
        metrics.pointing_game(m, k, tolerance="5")
    with pytest.raises(ValueError, match="only 0 and 1"):
        metrics.pointing_game(m, torch.rand(1, 10, 10))
    with pytest.raises(ValueError, match="empty"):
        metrics.energy_pointing(torch.zeros(0, 4, 4), torch.zeros(0, 4, 4, dtype=torch.bool))


def test_spearman_of_a_constant_or_nan_map_is_refused_and_the_sanity_checks_say_nan_explicitly():
    a = torch.rand(2, 5, 5, generator=torch.Generator().manual_seed(0))
    flat = a.clone()
    flat[1] = 0.25
    with pytest.raises(ValueError, match="constant .* undefined"):
        metrics.spearman(flat, a)  # was a silent NaN
    rho = metrics.spearman(flat, a, on_constant="nan")
    assert rho[0] == 1.0 and rho[1].isnan()
    with pytest.raises(ValueError, match="NaN"):
        metrics.spearman(torch.full((1, 5, 5), float("nan")), a[:1], on_constant="nan")
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        metrics.spearman(a[0], a[0])  # was one correlation per row of one map
    # A model whose every map is flat: the cascade reports NaN (left out of means), it does not stop.
    zero = _tiny()
    torch.nn.init.zeros_(zero[0].weight)
    torch.nn.init.zeros_(zero[0].bias)
    x = torch.rand(2, 3, 8, 8)
    _, rho = metrics.cascading_randomization(zero, x, "grad-cam", 0, steps=[1])
    assert rho.shape == (1, 2) and rho.isnan().all()


def test_deletion_and_road_name_the_class_count_for_a_target_out_of_range():
    net, x, m = _tiny(), torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
    for fn in (metrics.deletion, metrics.insertion):
        with pytest.raises(ValueError, match="3 classes"):
            fn(net, x, m, 99, steps=2)  # was "index 99 is out of bounds"
    with pytest.raises(ValueError, match="3 classes"):
        metrics.road(net, x, m, [0, -1], fractions=(0.5,))
    with pytest.raises(TypeError, match="callable"):
        metrics.deletion(net, x, m, lambda out: out[:, 0], steps=2)
    with pytest.raises(TypeError, match="integer class"):
        metrics.deletion(net, x, m, [0.5, 1.0], steps=2)
    seg = torch.nn.Conv2d(3, 2, 1)
    with pytest.raises(ValueError, match="classifier"):
        metrics.deletion(seg, x, m, 0, steps=2)


def test_faithfulness_settings_are_refused_not_coerced():
    net, x, m = _tiny(), torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8)
    with pytest.raises(TypeError, match="steps"):
        metrics.deletion(net, x, m, 0, steps=True)
    with pytest.raises(ValueError, match="blur_sigma"):
        metrics.insertion(net, x, m, 0, steps=2, blur_sigma=0.0)  # was NaN scores
    with pytest.raises(ValueError, match="batch_size"):
        metrics.road(net, x, m, 0, batch_size=0)
    with pytest.raises(TypeError, match="fraction"):
        metrics.road(net, x, m, 0, fractions=("0.5",))
    with pytest.raises(ValueError, match="noise"):
        metrics.road(net, x, m, 0, noise=float("nan"))
    with pytest.raises(ValueError, match="at least 2 points"):
        metrics.auc(torch.rand(2, 1))  # was ZeroDivisionError
    with pytest.raises(ValueError, match="NaN"):
        metrics.relevance_order(torch.full((1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="upto"):
        metrics.randomized_copy(net, -1)  # was: every layer but the last randomised
    with pytest.raises(TypeError, match="steps"):
        metrics.cascading_randomization(net, x, "grad-cam", 0, steps=[1.5])
    with pytest.raises(ValueError, match="steps is empty"):
        metrics.cascading_randomization(net, x, "grad-cam", 0, steps=[])


def test_train_copy_names_the_class_count_for_labels_out_of_range():
    from guidewidgets.metrics.sanity import train_copy

    net = _tiny()
    with pytest.raises(ValueError, match="3 classes"):
        train_copy(net, torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 7]), epochs=1)
    with pytest.raises(ValueError, match="NaN"):
        train_copy(net, torch.full((4, 3, 8, 8), float("nan")), torch.tensor([0, 1, 2, 0]), epochs=1)
    with pytest.raises(TypeError, match="epochs"):
        train_copy(net, torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]), epochs=1.0)


def test_evaluate_refuses_a_bad_count_before_explaining(model):
    ds = zoo.ShapeScenes(2, seed=2468)
    with pytest.raises(ValueError, match="n"):
        metrics.evaluate(model, ds, ["grad-cam"], ["deletion"], n=-1)  # was "the dataset is empty"
    with pytest.raises(TypeError, match="n"):
        metrics.evaluate(model, ds, ["grad-cam"], ["deletion"], n=1.5)
    with pytest.raises(ValueError, match="tolerance"):
        metrics.evaluate(model, ds, ["grad-cam"], ["pointing-game"], tolerance=float("nan"))
