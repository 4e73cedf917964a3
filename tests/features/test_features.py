"""features/: filters, activation maps, receptive fields, top patches, activation maximization and
feature space, checked by identities on the embedded classifier and on hand-built chains."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from guidewidgets import features, hooks, zoo


@pytest.fixture(scope="module")
def model():
    return zoo.load("shapes-classifier")


@pytest.fixture(scope="module")
def scenes():
    return zoo.ShapeScenes(96, seed=7)


def _untouched(model: nn.Module) -> None:
    """No hook left behind, no gradient written, every flag as before (eval)."""
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert not m.training
    assert all(p.grad is None for p in model.parameters())


# --- filters and activation maps ------------------------------------------------------------------


def test_first_layer_grid_is_the_weights_up_to_a_positive_affine_map_per_filter(model):
    w = model.features.block1[0].weight.detach()  # (16, 3, 3, 3): the first conv
    grid = features.filter_grid(model, cols=4, pad=1)
    assert grid.shape == (3, 4 * 3 + 3, 4 * 3 + 3)
    for f in range(16):
        r, c = divmod(f, 4)
        t = grid[:, r * 4 : r * 4 + 3, c * 4 : c * 4 + 3]
        assert t.min() == 0 and t.max() == 1
        # t = a w + b with a > 0: least squares recovers it exactly.
        a = ((t - t.mean()) * (w[f] - w[f].mean())).sum() / (w[f] - w[f].mean()).pow(2).sum()
        assert a > 0
        torch.testing.assert_close(t, a * (w[f] - w[f].mean()) + t.mean(), atol=1e-5, rtol=0)
    assert features.filters(model).shape == (16, 3, 3, 3)


def test_deeper_filters_are_grey_rows_one_tile_per_input_channel(model):
    w = model.features.block2[0].weight.detach()  # (32, 16, 3, 3)
    grid = features.filter_grid(model, "features.block2.0", pad=1)
    assert grid.shape == (1, 32 * 4 - 1, 16 * 4 - 1)
    tiles = features.filters(model, "features.block2.0")
    torch.testing.assert_close(tiles, features.normalize_each(w))
    torch.testing.assert_close(grid[0, 4 * 5 : 4 * 5 + 3, 4 * 2 : 4 * 2 + 3], tiles[5, 2])
    with pytest.raises(ValueError, match="not an nn.Conv2d"):
        features.filters(model, "features.block2")


def test_activation_maps_are_the_layer_output_sorted_by_mean(model, scenes):
    x = scenes[0]["image"]
    maps, order = features.activation_maps(model, "features.block3", x, sort="mean")
    with hooks.capture(model, "features.block3", cut=False) as cap, torch.no_grad(), hooks.eval_mode(model):
        model(x[None])
    torch.testing.assert_close(maps, cap.activations[0][order])
    means = maps.flatten(1).mean(1)
    assert bool((means[:-1] >= means[1:]).all())
    _, order2 = features.activation_maps(model, "features.block3", x, sort=None)
    assert torch.equal(order2, torch.arange(64))
    _untouched(model)


# --- receptive fields -------------------------------------------------------------------------------


def _chain() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 5, stride=2, padding=2),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2),
    ).eval()


def test_receptive_field_of_a_known_chain_matches_the_formula_and_the_gradient():
    torch.manual_seed(1)
    net = _chain()
    # By hand: R = 1 + 2 (conv3) + 1 (pool2, jump 1) + 4*2 (conv5, jump 2) + 4*4 (dilated conv3,
    # k' = 5, jump 4) = 28; jump 1*2*2 = 4; padding 1 + 0 + 2*2 + 2*4 = 13.
    rf = features.receptive_field(net, "6", (64, 64))
    assert rf is not None
    assert (rf.size, rf.stride, rf.padding, rf.map_size) == ((28, 28), (4, 4), (13, 13), (16, 16))
    assert rf.box(8, 8) == (19, 19, 47, 47)
    for pos in [(8, 8), (5, 10), (0, 0), (15, 15)]:
        assert features.gradient_box(net, "6", pos, (64, 64)) == rf.box(*pos, clip=True)


def test_receptive_field_of_the_classifier_is_39_px_by_both_routes(model):
    rf = features.receptive_field(model, "features", (96, 96))
    assert rf is not None and rf.size == (39, 39) and rf.stride == (8, 8)
    for pos in [(6, 6), (0, 0), (11, 3)]:
        assert features.gradient_box(model, "features", pos) == rf.box(*pos, clip=True)
    _untouched(model)


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return h + self.body(h)


class _InplaceResidual(nn.Module):
    """torchvision's BasicBlock pattern: the skip is added in place, so the tensor object stays."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 5, padding=2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        out = self.body(h)
        out += h
        return self.relu(out)


def test_an_in_place_skip_is_no_chain():
    net = _InplaceResidual().eval()
    assert features.receptive_field(net, "body", (32, 32)) is not None
    assert features.receptive_field(net, "relu", (32, 32)) is None  # relu's input was changed in place
    assert features.box_of(net, "relu", (16, 16), (32, 32)) == (13, 13, 20, 20)  # 3 x 3 then 5 x 5: 7 px


def test_no_chain_falls_back_to_the_gradient():
    net = _Residual().eval()
    body = features.receptive_field(net, "body", (32, 32))  # stem -> body is a chain
    assert body is not None and (body.size, body.stride, body.padding) == ((7, 7), (2, 2), (3, 3))
    # The block's own output adds a skip path: no chain, so the gradient decides; the skip sees
    # less than the body (3 px), so the box is the body's 7 px.
    net2 = nn.Sequential(_Residual()).eval()
    assert features.receptive_field(net2, "0", (32, 32)) is None
    box = features.box_of(net2, "0", (8, 8), (32, 32))
    assert box == features.gradient_box(net2, "0", (8, 8), (32, 32)) == body.box(8, 8) == (13, 13, 20, 20)
    with pytest.raises(ValueError, match="gradient"):
        features.box_of(net2, "0", (8, 8), (32, 32), method="analytic")


# --- maximally activating patches -------------------------------------------------------------------


@pytest.mark.parametrize("per_image", [True, False])
def test_top_patches_in_batches_equal_the_whole_set_at_once(model, scenes, per_image):
    seen = []
    small = features.top_patches(
        model,
        "features.block3",
        scenes,
        k=6,
        batch_size=13,
        per_image=per_image,
        progress=lambda d, n: seen.append((d, n)),
    )
    whole = features.top_patches(model, "features.block3", scenes, k=6, batch_size=len(scenes), per_image=per_image)
    assert torch.equal(small.images, whole.images) and torch.equal(small.positions, whole.positions)
    torch.testing.assert_close(small.values, whole.values)
    assert seen[-1] == (96, 96) and [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) == 8
    if per_image:
        assert all(len(set(row.tolist())) == 6 for row in small.images)
    _untouched(model)


def test_top_patch_values_are_the_activations_there_and_patches_are_receptive_fields(model, scenes):
    top = features.top_patches(model, "features", scenes, channels=[3, 40], k=4, batch_size=32)
    x = scenes.batch()["images"].float() / 255
    with hooks.capture(model, "features", cut=False) as cap, torch.no_grad(), hooks.eval_mode(model):
        model(x)
    a = cap.activations
    for r, c in enumerate([3, 40]):
        assert float(top.values[r, 0]) == pytest.approx(float(a[:, c].max()), abs=1e-4)
        for q in range(4):
            i, (y, xx) = int(top.images[r, q]), top.positions[r, q].tolist()
            assert float(top.values[r, q]) == pytest.approx(float(a[i, c, y, xx]), abs=1e-4)
    crops = top.patches(scenes, 40)
    assert len(crops) == 4 and all(p.shape == (3, 39, 39) for p in crops)
    x0, y0, x1, y1 = top.boxes[1, 0].tolist()
    img = scenes[int(top.images[1, 0])]["image"]
    inside = crops[0][:, max(-y0, 0) : 39 - max(y1 - 96, 0), max(-x0, 0) : 39 - max(x1 - 96, 0)]
    assert torch.equal(inside, img[:, max(y0, 0) : min(y1, 96), max(x0, 0) : min(x1, 96)])


def test_top_patches_more_k_than_images_and_clear_errors(model, scenes):
    tiny = torch.stack([scenes[i]["image"] for i in range(3)])
    top = features.top_patches(model, "features", tiny, channels=0, k=5)
    assert top.images[0, 3:].tolist() == [-1, -1] and torch.isinf(top.values[0, 3:]).all()
    with pytest.raises(ValueError, match="out of range"):
        features.top_patches(model, "features", tiny, channels=128)
    with pytest.raises(ValueError, match="empty"):
        features.top_patches(model, "features", tiny[:0])
    with pytest.raises(ValueError, match="spatial"):
        features.top_patches(model, "fc", tiny)
    with pytest.raises(ValueError, match="No layer named"):
        features.top_patches(model, "featurs", tiny)
    _untouched(model)


# --- activation maximization ------------------------------------------------------------------------


def test_plain_gradient_ascent_raises_the_class_score_at_every_step(model):
    out = features.maximize(model, [2, 3, 4], kind="class", steps=25, optimizer="sgd", lr=0.5, l2=0.0)
    assert out.images.shape == (3, 3, 96, 96) and out.images.min() >= 0 and out.images.max() <= 1
    assert bool((out.history.diff(dim=0) > 0).all())
    assert bool((out.final > out.history[-1]).all())
    _untouched(model)


def test_maximization_is_deterministic_per_seed_and_raises_channels(model):
    kw = dict(kind="channel", layer="features.block5.1", steps=12, jitter=2, param="fourier", decorrelate=True)
    a = features.maximize(model, [0, 5, 9], seed=3, **kw)
    b = features.maximize(model, [0, 5, 9], seed=3, **kw)
    c = features.maximize(model, [0, 5, 9], seed=4, **kw)
    assert torch.equal(a.images, b.images) and torch.equal(a.history, b.history)
    assert not torch.equal(a.images, c.images)
    assert bool((a.final > a.history[0]).all())
    steps = []
    d = features.maximize(
        model,
        7,
        kind="neuron",
        layer="features.block3.1",
        steps=6,
        blur=0.5,
        blur_every=2,
        tv=1e-3,
        progress=lambda s, n: steps.append(s),
    )
    assert steps == [1, 2, 3, 4, 5, 6] and d.final[0] > d.history[0, 0]
    _untouched(model)


def test_maximization_errors_name_the_fix(model):
    with pytest.raises(ValueError, match="out of range"):
        features.maximize(model, 6, kind="class", steps=1)
    with pytest.raises(ValueError, match="needs layer"):
        features.maximize(model, 0, kind="channel", steps=1)
    with pytest.raises(ValueError, match="out of range"):
        features.maximize(model, 64, kind="channel", layer="features.block3", steps=1)
    with pytest.raises(ValueError, match="outside"):
        features.maximize(model, 0, kind="neuron", layer="features", position=(12, 0), steps=1)


# --- feature space ----------------------------------------------------------------------------------


def test_feature_neighbours_share_the_class_more_often_than_pixel_neighbours(model):
    data = zoo.ShapeScenes(192, seed=11)
    feats = features.embed(model, data, batch_size=64)
    pix = features.pixels(data)
    assert feats.vectors.shape == (192, 128) and pix.vectors.shape == (192, 3 * 96 * 96)
    assert torch.equal(feats.labels, data.batch()["labels"])
    f_rate, p_rate = features.same_class_rate(feats, k=5), features.same_class_rate(pix, k=5)
    assert f_rate > p_rate + 0.2, (f_rate, p_rate)
    nn_idx = features.neighbours(feats, [0, 1, 2], k=4)
    assert nn_idx.shape == (3, 4) and all(i not in row.tolist() for i, row in enumerate(nn_idx))
    _untouched(model)


def test_projections_and_space_errors(model):
    data = zoo.ShapeScenes(40, seed=2)
    e = features.embed(model, data, layer="features.block4", pool="max")
    assert e.vectors.shape == (40, 64)
    assert features.project(e, "pca").shape == (40, 2)
    xy = features.project(e, "tsne", seed=0)
    assert xy.shape == (40, 2) and (features.project(e, "tsne", seed=0) == xy).all()
    with pytest.raises(ValueError, match="k must"):
        features.neighbours(e, 0, k=40)
    with pytest.raises(ValueError, match="labelled"):
        features.same_class_rate(features.embed(model, data.batch()["images"].float() / 255), k=3)
    with pytest.raises(ValueError, match="pca"):
        features.project(e, "umap")


# --- nothing silently wrong (issue 24) --------------------------------------------------------------


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    ).eval()


def test_nan_and_8bit_images_are_refused_not_mapped():
    net = _tiny()
    img = torch.rand(3, 8, 8)
    img[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        features.activation_maps(net, "0", img)  # was NaN maps
    with pytest.raises(ValueError, match="3 channels"):
        features.activation_maps(net, "0", torch.rand(1, 8, 8))
    data = torch.rand(4, 3, 8, 8)
    data[2, 1, 3, 3] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        features.top_patches(net, "0", data, k=2)
    with pytest.raises(ValueError, match="NaN"):
        features.embed(net, data, layer="0")
    with pytest.raises(ValueError, match="NaN"):
        features.pixels(data)
    with pytest.raises(TypeError, match="255"):
        features.embed(net, (torch.rand(4, 3, 8, 8) * 255).to(torch.uint8), layer="0")  # was read as 0..255
    _untouched(net)


def test_neighbours_refuse_nan_vectors_and_do_not_truncate_queries():
    v = torch.rand(5, 3, generator=torch.Generator().manual_seed(0))
    bad = v.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        features.neighbours(bad, 0, k=2)  # was an arbitrary order
    with pytest.raises(TypeError, match="query index"):
        features.neighbours(v, [1.7], k=2)  # was item 1
    with pytest.raises(TypeError, match="queries"):
        features.neighbours(v, torch.tensor([1.0]), k=2)
    with pytest.raises(TypeError, match="k must"):
        features.neighbours(v, 0, k=True)
    with pytest.raises(ValueError, match="at least 2 items"):
        features.neighbours(v[:1], 0, k=1)
    e = features.Embeddings(v, torch.tensor([0, 1, 0, 1, 0]), "x")
    with pytest.raises(ValueError, match="queries is empty"):
        features.same_class_rate(e, k=1, queries=torch.zeros(0, dtype=torch.long))  # was torch.cat error
    assert features.neighbours(v, torch.tensor([0, 4]), k=4).shape == (2, 4)


def test_feature_settings_are_refused_not_coerced():
    net = _tiny()
    with pytest.raises(ValueError, match="inverted"):
        features.crop(torch.rand(3, 8, 8), (5, 5, 2, 2))
    with pytest.raises(ValueError, match="lr"):
        features.maximize(net, 0, steps=1, size=(8, 8), lr=float("nan"))
    with pytest.raises(ValueError, match="l2"):
        features.maximize(net, 0, steps=1, size=(8, 8), l2=float("nan"))  # was silently no penalty
    with pytest.raises(ValueError, match="size"):
        features.maximize(net, 0, steps=1, size=(0, 8))
    with pytest.raises(TypeError, match="position"):
        features.maximize(net, 0, kind="neuron", layer="0", steps=1, size=(8, 8), position=(1.5, 0))
    with pytest.raises(ValueError, match="blur_every"):
        features.maximize(net, 0, steps=1, size=(8, 8), blur=1.0, blur_every=0)
    with pytest.raises(ValueError, match="2 items"):
        features.project(torch.rand(1, 3), "pca")
    with pytest.raises(ValueError, match="perplexity"):
        features.project(torch.rand(6, 3), "tsne", perplexity=float("nan"))
    with pytest.raises(ValueError, match="cols"):
        features.tile(torch.rand(4, 1, 2, 2), cols=0)
    with pytest.raises(ValueError, match="NaN"):
        features.normalize_each(torch.tensor([[0.0, float("nan")]]))
    _untouched(net)
