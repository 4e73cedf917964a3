"""guidewidgets.segnets: transposed conv as the conv's adjoint, checkerboards, unpooling, sliding window vs FCN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from guidewidgets import segnets, zoo


@pytest.mark.parametrize(
    "size,kernel,stride,padding",
    [(8, 3, 1, 1), (8, 3, 2, 1), (9, 3, 2, 1), (12, 4, 2, 1), (11, 5, 3, 2), (10, 2, 2, 0), (7, 3, 2, 0)],
)
def test_conv_transpose_is_the_gradient_of_conv_wrt_its_input(size, kernel, stride, padding):
    g = torch.Generator().manual_seed(size * 100 + kernel * 10 + stride)
    w = torch.randn(4, 3, kernel, kernel, generator=g, dtype=torch.double)
    shape = (2, 3, size, size)
    m = segnets.conv_out_size(size, kernel, stride, padding)
    z = torch.randn(2, 4, m, m, generator=g, dtype=torch.double)
    grad = segnets.conv_input_gradient(z, w, shape, stride, padding)
    tr = segnets.transposed_conv(z, w, shape, stride, padding)
    assert tr.shape == shape
    assert torch.allclose(tr, grad, atol=1e-10)
    # Adjoint identity <z, conv(x)> == <conv_transpose(z), x> for any x.
    x = torch.randn(shape, generator=g, dtype=torch.double)
    lhs = (z * F.conv2d(x, w, stride=stride, padding=padding)).sum()
    assert torch.allclose(lhs, (tr * x).sum())


def test_conv_matrix_transpose_is_the_transposed_conv():
    w = torch.arange(1.0, 10.0, dtype=torch.double).view(1, 1, 3, 3)
    M = segnets.conv_matrix(w, 4, stride=2, padding=1)  # the lecture's 4 x 4 -> 2 x 2
    assert M.shape == (4, 16)
    x = torch.randn(1, 1, 4, 4, dtype=torch.double)
    assert torch.allclose(M @ x.flatten(), F.conv2d(x, w, stride=2, padding=1).flatten())
    z = torch.randn(1, 1, 2, 2, dtype=torch.double)
    assert torch.allclose(M.T @ z.flatten(), segnets.transposed_conv(z, w, (1, 1, 4, 4), 2, 1).flatten())


def test_output_padding_picks_the_input_size():
    for n in range(5, 14):
        for k, s, p in [(3, 2, 1), (4, 2, 1), (5, 3, 2)]:
            m = segnets.conv_out_size(n, k, s, p)
            out = F.conv_transpose2d(
                torch.zeros(1, 1, m, m),
                torch.zeros(1, 1, k, k),
                stride=s,
                padding=p,
                output_padding=segnets.output_padding_for(n, k, s, p),
            )
            assert out.shape[-1] == n
    with pytest.raises(ValueError, match="too small"):
        segnets.output_padding_for(2, 7)


def test_checkerboard_when_the_kernel_is_not_divisible_by_the_stride():
    uneven = segnets.overlap_counts(3, 2, size=8)[2:-2, 2:-2]
    even = segnets.overlap_counts(4, 2, size=8, padding=1)[2:-2, 2:-2]
    assert uneven.unique().numel() > 1 and set(uneven.unique().tolist()) == {1.0, 2.0, 4.0}
    assert even.unique().tolist() == [4.0]
    ones = torch.ones(1, 1, 8, 8)
    k3 = torch.ones(1, 1, 3, 3)
    assert segnets.checkerboard_score(F.conv_transpose2d(ones, k3, stride=2)[0, 0]) > 0.3
    # Resize-then-conv gives every interior pixel the same taps: no checkerboard.
    for mode in ("nearest", "bilinear"):
        assert segnets.checkerboard_score(segnets.resize_conv(ones, k3, 2, mode)[0, 0]) < 1e-9


def test_max_unpool_puts_values_back_at_the_argmax():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, 8, generator=g).exp()  # positive: a max is never below the zeros around it
    pooled, idx = segnets.pool_with_indices(x, 2)
    up = segnets.max_unpool(pooled, idx, 2)
    assert up.shape == x.shape
    flat_x, flat_up = x.flatten(2), up.flatten(2)
    assert torch.equal(flat_up.gather(2, idx.flatten(2)), pooled.flatten(2))
    assert torch.equal(flat_x.gather(2, idx.flatten(2)), pooled.flatten(2))  # the indices are the argmaxes
    nonzero = (up != 0).sum((2, 3))
    assert torch.equal(nonzero, torch.full((2, 3), 16))  # one value per 2 x 2 cell, zeros elsewhere
    assert torch.equal(F.max_pool2d(up, 2), pooled)  # pooling again gives the pooled values back
    assert torch.equal(segnets.nearest_unpool(pooled)[..., ::2, ::2], pooled)
    nails = segnets.bed_of_nails(pooled)
    assert torch.equal(nails[..., ::2, ::2], pooled) and nails.abs().sum() == pooled.abs().sum()
    with pytest.raises(ValueError, match="multiples"):
        segnets.pool_with_indices(torch.zeros(1, 1, 5, 6))
    with pytest.raises(ValueError, match="same pool"):
        segnets.max_unpool(pooled, idx[..., :2], 2)


def test_sliding_window_equals_fcn_for_a_pointwise_model():
    torch.manual_seed(0)
    net = nn.Conv2d(3, 5, 1)
    image = torch.rand(3, 16, 16)
    labels, forwards = segnets.sliding_window_labels(net, image, window=4, stride=1)
    assert forwards == 256
    assert torch.equal(labels, segnets.fcn_labels(net, image))
    coarse, n = segnets.sliding_window_labels(net, image, window=4, stride=4)
    assert n == 16 and coarse.shape == (16, 16)
    assert torch.equal(coarse[2::4, 2::4], segnets.fcn_labels(net, image)[2::4, 2::4])


def test_sliding_window_on_the_segmenter_is_mostly_the_fcn():
    seg = zoo.load("shapes-segmenter")
    before = {k: v.clone() for k, v in seg.state_dict().items()}
    image = zoo.ShapeScenes(1, seed=41001, task="segmentation")[0]["image"]
    labels, n = segnets.sliding_window_labels(seg, image, window=32, stride=8)
    assert n == 144 and labels.shape == (96, 96)
    assert (labels == segnets.fcn_labels(seg, image)).float().mean() > 0.7
    assert all(torch.equal(before[k], v) for k, v in seg.state_dict().items()) and not seg.training
    with pytest.raises(ValueError, match="window"):
        segnets.sliding_window_labels(seg, image, window=31)
    with pytest.raises(ValueError, match="one .C, H, W."):
        segnets.fcn_labels(seg, image[None])


def test_path_goes_down_to_one_eighth_and_back_to_one_half():
    seg = zoo.load("shapes-segmenter")
    path = segnets.path_shapes(seg, torch.rand(1, 3, 96, 96))
    grids = {f.name: f.grid for f in path}
    assert grids["encoder.block1"] == (48, 48) and grids["bottleneck"] == (12, 12)
    assert grids["decoder.up1"] == (24, 24) and grids["decoder"] == (48, 48)
    assert seg(torch.rand(1, 3, 96, 96)).shape == (1, 7, 96, 96)


def test_semantic_mask_is_the_instance_map_without_identities():
    scenes = zoo.ShapeScenes(16, seed=41001, task="segmentation")
    for i in range(len(scenes)):
        it = scenes[i]
        sem = segnets.semantic_from_instances(it["instances"], it["box_labels"])
        assert torch.equal(sem, it["mask"])
        groups = segnets.same_class_groups(it["box_labels"])
        for cls, count in groups.items():
            ids = [j + 1 for j, c in enumerate(it["box_labels"].tolist()) if c == cls]
            present = [j for j in ids if (it["instances"] == j).any()]
            # one semantic label, several instance ids
            assert len(present) <= count and (sem == cls + 1).sum() == sum(
                int((it["instances"] == j).sum()) for j in ids
            )
    with pytest.raises(ValueError, match="box_labels"):
        segnets.semantic_from_instances(torch.tensor([[0, 3]]), torch.tensor([1]))
