"""Augmented Grad-CAM: the super-resolution solver converges, recovers a known map, rejects
augmentation sets it cannot invert, and on ShapeScenes localises at least about as well as plain
Grad-CAM at the same layer (both numbers are printed)."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from guidewidgets import explain as E
from guidewidgets import zoo
from guidewidgets.explain import cam_augmented as CA
from guidewidgets.explain.layers import layer_gradients
from guidewidgets.explain.targets import Target
from guidewidgets.metrics import pointing_game
from tests.helpers import scene_tensors


@pytest.fixture(scope="module")
def classifier():
    return zoo.load("shapes-classifier")


@pytest.fixture(scope="module")
def scenes():
    x, labels, masks = scene_tensors(16, seed=2024)
    return x, labels.tolist(), masks


def test_observation_matrix_is_warp_then_area_pooling():
    h = torch.rand(2, 1, 48, 48)
    grids = CA._grids(CA.random_transforms(5, 4.0, 10.0, seed=1), 48, 48, h)
    ref = F.adaptive_avg_pool2d(CA.warp(h, grids), (6, 6))  # (5*2, 1, 6, 6), copy-major
    k = CA.observation_matrix(grids, (6, 6))
    ours = (k @ h.reshape(2, -1).t()).reshape(5, 36, 2).permute(0, 2, 1).reshape(10, 1, 6, 6)
    assert torch.allclose(ours, ref, atol=1e-6)


def test_solver_lowers_the_objective_every_iteration(classifier, scenes):
    x, y, _ = scenes
    x, y = x[:4], y[:4]
    tf = CA.random_transforms(12, 8.0, 10.0, seed=0)
    grids = CA._grids(tf, 96, 96, x)
    xa = CA.warp(x, grids)
    a, g, _ = layer_gradients(classifier, xa, Target(y, 4), "features", repeats=12)
    low = torch.einsum("bc,bchw->bhw", g.mean((2, 3)), a).clamp_min(0)  # Grad-CAM at 12 x 12
    _, history = CA.super_resolve(low, grids, (96, 96), iterations=12, history=True)
    smoothed = [h["smoothed"] for h in history]
    exact = [h["exact"] for h in history]
    print("\naugmented Grad-CAM objective per iteration (smoothed):", ", ".join(f"{v:.4f}" for v in smoothed))
    assert all(b <= a * (1 + 1e-6) for a, b in itertools.pairwise(smoothed))
    assert smoothed[-1] < 0.95 * smoothed[0]  # measured: 126.8 -> 116.7 in 12 iterations
    assert exact[-1] < exact[0]


def test_recovers_a_sharp_map_from_coarse_shifted_views():
    """A square seen only through 8 x 8 cell averages of shifted copies: the solution is far
    closer to it than the upsampled coarse map, and the TV term keeps the edges."""
    truth = torch.zeros(1, 1, 64, 64)
    truth[..., 21:43, 13:35] = 1.0
    tf = CA.random_transforms(24, 8.0, 0.0, seed=3)
    grids = CA._grids(tf, 64, 64, truth)
    low = F.adaptive_avg_pool2d(CA.warp(truth, grids), (8, 8))[:, 0]
    h, _ = CA.super_resolve(low, grids, (64, 64), lam=0.01, mu=1e-4, iterations=30)
    plain = F.interpolate(low[:1, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    err_sr = float((h - truth[:, 0]).abs().mean())
    err_up = float((plain - truth[:, 0]).abs().mean())
    print(f"\nmean abs error: super-resolved {err_sr:.4f}, bilinear {err_up:.4f}")
    assert err_sr < 0.6 * err_up


def test_method_shapes_and_options(classifier, scenes):
    x, y, _ = scenes
    maps = E.explain(classifier, x[:2], "augmented-grad-cam", target=y[:2], augmentations=4, iterations=3)
    assert maps.shape == (2, 96, 96) and (maps >= 0).all() and torch.isfinite(maps).all()
    one = E.explain(classifier, x[:2], "augmented-grad-cam", target=y[:2], transforms=[(0, 0, 0)], mu=1e-3)
    assert one.shape == (2, 96, 96)
    seen = []
    E.explain(classifier, x[:1], "augmented-grad-cam", augmentations=3, iterations=1, progress=seen.append)
    assert seen[-1] == pytest.approx(1.0) and seen == sorted(seen)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"transforms": [(0, 0, 0), (200, 0, 0)]}, "out of the frame"),
        ({"transforms": [(0, 0)]}, r"shape \(L, 3\)"),
        ({"transforms": [(0, float("nan"), 0)]}, "finite"),
        ({"augmentations": 0}, ">= 1"),
        ({"augmentations": 4, "mu": 0.0}, "cannot be inverted"),
        ({"lam": -1.0}, ">= 0"),
        ({"max_shift": -2.0}, ">= 0"),
    ],
)
def test_augmentation_sets_that_cannot_be_inverted_are_refused(classifier, scenes, options, match):
    x, _, _ = scenes
    with pytest.raises(ValueError, match=match):
        E.explain(classifier, x[:1], "augmented-grad-cam", iterations=1, **options)


def _iou(maps: torch.Tensor, masks: torch.Tensor, thr: float = 0.5) -> torch.Tensor:
    b = maps / maps.amax((1, 2), keepdim=True).clamp_min(1e-12) >= thr
    return ((b & masks).sum((1, 2)) / (b | masks).sum((1, 2))).float()


@pytest.mark.slow
def test_localisation_against_plain_grad_cam(classifier, scenes):
    """Pointing game and IoU of the half-max region with the object mask, same layer ("features",
    12 x 12). Measured on 64 scenes (seed 2024, defaults): Grad-CAM 0.875 / 0.417, augmented
    0.891 / 0.439; on these 16: 0.750 / 0.362 and 0.750 / 0.374. The gain the paper reports needs maps far coarser than the objects; here cells
    are 8 px for objects of 30-60 px, so only 'no worse' is asserted."""
    x, y, masks = scenes
    gc = E.grad_cam(classifier, x, y, layer="features")
    ag = E.augmented_grad_cam(classifier, x, y, layer="features")
    pg = (
        pointing_game(gc, masks, on_empty="miss").float().mean(),
        pointing_game(ag, masks, on_empty="miss").float().mean(),
    )
    iou = _iou(gc, masks).mean(), _iou(ag, masks).mean()
    print(
        f"\npointing: grad-cam {pg[0]:.3f}, augmented {pg[1]:.3f}; IoU: grad-cam {iou[0]:.3f}, augmented {iou[1]:.3f}"
    )
    assert pg[1] >= pg[0] - 0.13  # two scenes of 16
    assert iou[1] >= iou[0] - 0.05
