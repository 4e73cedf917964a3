"""The two places where ours fell short of a peer: occlusion now covers the bottom and right borders
when the stride does not tile the image (Captum's definition: ceil((H - window) / stride) + 1
positions, the last patch cut at the border; the incremental engine agrees), and CAM accepts a
global-average-pool + 1x1-conv head (torchcam's case)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from guidewidgets import explain as E


def test_captum_reproducer_fills_the_last_column():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    x = torch.tensor([[[[20.0, 50.0, 30.0]]]])
    got = E.explain(model, x, "occlusion", target=0, window=(1, 2), stride=(1, 2), fill=0.0)
    assert torch.allclose(got, torch.tensor([[[70.0, 70.0, 30.0]]]))


def test_same_as_captum_where_the_stride_does_not_tile():
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
    )
    model.eval()
    x = torch.rand(2, 3, 14, 12)  # (14 - 4) / 3 and (12 - 3) / 2 are not whole: the last patches are cut
    ours = E.explain(model, x, "occlusion", target=1, window=(4, 3), stride=(3, 2), fill=0.0)
    ref = captum.Occlusion(model).attribute(
        x, sliding_window_shapes=(3, 4, 3), strides=(3, 3, 2), target=1, baselines=0.0
    )
    # Captum gives every channel of an occluded pixel the drop; ours is one map per image
    assert torch.allclose(ref[:, 0], ref[:, 2])
    assert (ours[:, -1, :].abs() > 0).all() and (ours[:, :, -1].abs() > 0).all()  # the borders are covered
    assert torch.allclose(ours, ref[:, 0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("window,stride", [((5, 5), (3, 3)), ((4, 6), (4, 5)), ((7, 7), (7, 7))])
def test_incremental_equals_plain_with_cut_border_patches(window, stride):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()  # fmt: skip
    x = torch.rand(2, 3, 17, 19)
    plain = E.explain(model, x, "occlusion", target=2, window=window, stride=stride, mode="plain")
    inc = E.explain(model, x, "occlusion", target=2, window=window, stride=stride, mode="incremental")
    assert (plain[:, -1, :] != 0).any() and (plain[:, :, -1] != 0).any()
    assert torch.allclose(inc, plain, atol=1e-5, rtol=1e-4)


def test_cam_on_a_gap_and_1x1_conv_head_equals_grad_cam_up_to_scale():
    # torchcam's case: Sequential(Sequential(conv, relu, conv, relu, GAP), Conv2d(16, K, 1), Flatten())
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)),
        nn.Conv2d(16, 3, 1),
        nn.Flatten(),
    ).eval()  # fmt: skip
    x = torch.rand(2, 3, 12, 12)
    cam = E.explain(model, x, "cam", target=[0, 2], layer="0.3")
    grad = E.explain(model, x, "grad-cam", target=[0, 2], layer="0.3")
    assert cam.abs().amax() > 0
    for c, g in zip(cam, grad):  # Grad-CAM's weights are CAM's divided by h*w on this head
        assert torch.allclose(c / c.amax(), g / g.amax(), atol=1e-5)
    spatial = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    with pytest.raises(ValueError, match="grad-cam"):  # a 1x1 conv before the pool is a layer, not a head
        E.explain(spatial.eval(), x, "cam", target=0, layer="1")
