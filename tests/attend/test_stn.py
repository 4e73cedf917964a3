"""Spatial transformer: the sampler's identities, the distortion, clear errors, the recipe's
determinism, the shipped models and STNWidget driven from Python."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from guidewidgets.attend import stn, train_stn


def _identity(b: int) -> torch.Tensor:
    return torch.eye(2, 3).expand(b, 2, 3)


def test_identity_theta_returns_the_input_at_pixel_centres():
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    # align_corners=False: the identity grid at the input's own size lies on the pixel centres
    assert torch.allclose(stn.sample(x, _identity(2), (96, 96)), x, atol=1e-4)  # float rounding only
    # with align_corners=True the same holds at equal size ...
    grid = F.affine_grid(_identity(2), [2, 3, 96, 96], align_corners=True)
    assert torch.allclose(F.grid_sample(x, grid, align_corners=True), x, atol=1e-4)
    # ... but at half size only align_corners=False reads midway between pixel pairs (a 2 x 2 mean)
    assert torch.allclose(stn.sample(x, _identity(2), (48, 48)), F.avg_pool2d(x, 2), atol=1e-5)


def test_untrained_stn_starts_at_the_identity():
    torch.manual_seed(0)
    model = stn.STNClassifier().eval()
    x = torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        theta, grid, out = model.transform(x)
    assert torch.allclose(theta, _identity(3), atol=1e-6)
    assert grid.shape == (3, stn.OUT, stn.OUT, 2)
    assert torch.allclose(out, F.avg_pool2d(x, 2), atol=1e-5)


def test_distortion_theta_inverts_the_distortion():
    theta = stn.distortion_theta(30.0, 0.5, (0.2, -0.1), (0.1, 0.05))
    A, t = theta[0, :, :2], theta[0, :, 2]
    # a clean point q goes to p = s R (q - c) + shift; sampling at p must read q back
    q = torch.tensor([0.3, -0.4])
    a = torch.deg2rad(torch.tensor(30.0))
    R = torch.tensor([[torch.cos(a), -torch.sin(a)], [torch.sin(a), torch.cos(a)]])
    p = 0.5 * R @ (q - torch.tensor([0.1, 0.05])) + torch.tensor([0.2, -0.1])
    assert torch.allclose(A @ p + t, q, atol=1e-6)
    assert torch.allclose(stn.distortion_theta(0.0, 1.0, (0.0, 0.0)), _identity(1))
    with pytest.raises(ValueError, match="scale must be positive"):
        stn.distortion_theta(0.0, 0.0, (0.0, 0.0))


def test_distort_without_a_change_pastes_the_object_onto_the_canvas():
    scenes = stn.DistortedScenes(4, seed=3)
    item = scenes[1]
    clean, mask, canvas = item["clean"], item["mask"], item["canvas"]
    centre = stn._object_centre(mask[None])[0]
    out = stn.distort(clean, mask, canvas, angle=0.0, scale=1.0, shift=centre)
    fg = (mask > 0).float()
    assert torch.allclose(out, clean * fg + canvas * (1 - fg), atol=1e-5)
    with pytest.raises(ValueError, match="distort needs"):
        stn.distort(clean, mask[:10], canvas)


def test_distorted_scenes_are_a_function_of_seed_and_index():
    a, b = stn.DistortedScenes(70, seed=11), stn.DistortedScenes(70, seed=11)
    batch = a.batch(60, 70)
    assert torch.equal(batch["images"], b.batch(60, 70)["images"])
    assert torch.equal(a[65]["image"], batch["images"][5]) and a[65]["label"] == int(batch["labels"][5])
    assert not torch.equal(stn.DistortedScenes(70, seed=12).batch(60, 70)["images"], batch["images"])
    assert batch["images"].shape == (10, 3, 96, 96) and 0 <= batch["images"].min() <= batch["images"].max() <= 1
    # render with the item's own parameters is the item; other parameters move only the object
    assert torch.equal(a.render(65), a[65]["image"])
    moved = a.render(65, shift=(0.6, 0.6))
    assert not torch.equal(moved, a[65]["image"])
    with pytest.raises(IndexError):
        a[70]


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (3, 96, 96), (1, 1, 96, 96), (2, 3, 96, 97)])
def test_wrong_image_shape_is_a_clear_value_error(shape):
    for model in (stn.STNClassifier().eval(), stn.PlainClassifier().eval()):
        with pytest.raises(ValueError, match=r"\(B, 3, 96, 96\)"):
            model(torch.rand(shape))
    with pytest.raises(TypeError, match="float"):
        stn.STNClassifier()(torch.zeros(1, 3, 96, 96, dtype=torch.uint8))


def test_recipe_is_deterministic_at_a_thread_count():
    tiny = dict(epochs=1, train=64, test=32, batch=32)
    m1, r1 = train_stn.train("stn", log=lambda _: None, **tiny)
    m2, r2 = train_stn.train("stn", log=lambda _: None, **tiny)
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert r1["accuracy"] == r2["accuracy"] and r1["n"] == 32
    # the localisation net learned something (its last layer left the identity start)
    assert not torch.equal(s1["localisation.head.2.weight"], torch.zeros_like(s1["localisation.head.2.weight"]))
    with pytest.raises(ValueError, match="unknown recipe keys"):
        train_stn.train("stn", epochz=1)


def test_save_and_load_round_trip(tmp_path):
    tiny = dict(epochs=1, train=32, test=32, batch=32)
    model, result = train_stn.train("plain", log=lambda _: None, **tiny)
    path = tmp_path / "plain.pt"
    train_stn.save(model, "plain", path, result)
    back = stn.load("plain", weights=path)
    x = stn.DistortedScenes(4, seed=2).batch()["images"]
    with torch.no_grad():
        assert torch.equal(back(x), model(x))
    with pytest.raises(ValueError, match="not a guidewidgets weights file for the STN model"):
        stn.load("stn", weights=path)
    with pytest.raises(FileNotFoundError, match="train_stn"):
        stn.load("stn", weights=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="unknown STN model"):
        stn.load("vit")


def test_shipped_models_are_small_and_the_stn_follows_the_object():
    for name in stn.MODELS:
        assert stn.weights_path(name).stat().st_size < 2_000_000
    model = stn.load("stn")
    assert model.meta["test_seed"] == train_stn.TEST_SEED == 61_001
    assert stn.load("plain").meta["recipe"] == model.meta["recipe"]  # one recipe for both
    b = stn.DistortedScenes(64, seed=train_stn.TEST_SEED).batch()
    with torch.no_grad():
        theta = model.transform(b["images"])[0]
    # the view is smaller than the image (|det| of the linear part is its relative area) ...
    assert float(torch.linalg.det(theta[:, :, :2]).abs().median()) < 0.5
    # ... and moves with the object: its translation correlates with where the object was put
    for axis in (0, 1):
        r = torch.corrcoef(torch.stack([theta[:, axis, 2], b["shift"][:, axis]]))[0, 1]
        assert float(r) > 0.6, (axis, float(r))


def test_widget_driven_from_python():
    pytest.importorskip("ipywidgets")
    from guidewidgets.widgets.stn_widget import STNWidget

    torch.manual_seed(0)
    model, plain = stn.STNClassifier().eval(), stn.PlainClassifier().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scenes = stn.DistortedScenes(6, seed=train_stn.TEST_SEED)
    w = STNWidget(model, plain, scenes)
    try:
        item = scenes[0]
        assert w.angle == pytest.approx(item["angle"], abs=0.05) and w.scale == pytest.approx(item["scale"], abs=1e-3)
        assert torch.allclose(
            w.result["input"], scenes.render(0, angle=w.angle, scale=w.scale, shift=(w.shift_x, w.shift_y))
        )
        first = w.w_input.value
        assert w.result["label"] == item["label"] and "truth" in w.w_prediction.value
        w.w_scale.value = 1.0  # the slider drives the trait and a redraw
        assert w.scale == 1.0 and w.w_input.value != first
        assert w.input_rgba.shape == w.output_rgba.shape == (288, 288, 4)
        w.image_index = 2
        assert w.scale == pytest.approx(scenes[2]["scale"], abs=1e-3) and w.result["label"] == scenes[2]["label"]
        w.image_index = 99
        assert w.image_index == 2 and w.status.startswith("Error") and "0..5" in w.status
        w.angle = 45.0
        assert not w.status.startswith("Error")
        assert w.to_png().startswith(b"\x89PNG")
        assert not model.training and all(p.grad is None for p in model.parameters())
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    finally:
        w.close()
    with pytest.raises(TypeError, match="transform"):
        STNWidget(plain, False, scenes)
