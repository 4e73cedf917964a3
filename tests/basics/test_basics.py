"""guidewidgets.basics: normalisation statistics, BatchNorm train vs eval, confusion/ROC/AUC, GAP vs GMP heads."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from guidewidgets import basics, explain, zoo
from tests.helpers import scene_tensors


@pytest.fixture(scope="module")
def classifier():
    return zoo.load("shapes-classifier")


@pytest.fixture(scope="module")
def scenes():
    return scene_tensors(96, seed=41001)[:2]  # images, labels


# --- normalisation -----------------------------------------------------------------------------


def test_training_stats_standardise_the_training_split_exactly():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(20, 3, 8, 8, generator=g) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
    z = basics.normalize(train, basics.training_stats(train)).double()
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3, dtype=torch.double), atol=1e-5)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.double), atol=1e-4)
    mean_image = basics.training_stats(train, "image")
    assert mean_image.mean.shape == (1, 3, 8, 8)
    assert torch.allclose(basics.normalize(train, mean_image).mean(0), torch.zeros(3, 8, 8), atol=1e-6)


def test_training_stats_differ_from_leaked_ones_and_the_leak_warns():
    g = torch.Generator().manual_seed(1)
    train = torch.rand(30, 3, 8, 8, generator=g)
    test = torch.rand(30, 3, 8, 8, generator=g) * 0.5 + 0.4  # a shifted test split
    right = basics.training_stats(train)
    with pytest.warns(basics.LeakageWarning):
        leaked = basics.leaked_stats(train, test)
    assert not torch.allclose(right.mean, leaked.mean)
    # The leak hides the shift: with train+test statistics the test split looks more centred.
    with pytest.warns(basics.LeakageWarning):
        shift_leaked = basics.normalize(test, leaked).mean().abs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shift_right = basics.normalize(test, right).mean().abs()  # no warning the right way
    assert shift_leaked < shift_right


def test_stats_refuse_test_splits_and_mismatched_images():
    x = torch.rand(4, 3, 8, 8)
    with pytest.raises(ValueError, match="training split"):
        basics.training_stats(x, split="test")
    with pytest.raises(ValueError, match="resize the images"):
        basics.normalize(torch.rand(2, 3, 16, 16), basics.training_stats(x, "image"))
    with pytest.raises(ValueError, match="channels"):
        basics.normalize(torch.rand(2, 1, 8, 8), basics.training_stats(x))
    with pytest.raises(TypeError, match="uint8"):
        basics.training_stats((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="kind"):
        basics.training_stats(x, "pixel")  # type: ignore[arg-type]


# --- BatchNorm -----------------------------------------------------------------------------------


def test_bn_in_eval_mode_is_a_fixed_affine_map_per_channel(classifier):
    for name in basics.bn_layers(classifier):
        bn = classifier.get_submodule(name)
        a, b = basics.bn_affine(bn)
        x = torch.randn(5, bn.num_features, 6, 6)
        with torch.no_grad():
            y = bn.eval()(x)
        assert torch.allclose(y, a.view(1, -1, 1, 1) * x + b.view(1, -1, 1, 1), atol=1e-5), name
        # The same map whatever the rest of the batch is.
        with torch.no_grad():
            alone = bn(x[:1])
        assert torch.allclose(alone, y[:1], atol=1e-6)


def test_fold_bn_equals_conv_then_bn_in_eval_mode(classifier):
    conv, bn = classifier.features.block2[0], classifier.features.block2[1]
    x = torch.randn(2, conv.in_channels, 10, 10)
    with torch.no_grad():
        assert torch.allclose(basics.fold_bn(conv, bn)(x), bn.eval()(conv(x)), atol=1e-4)
    assert conv.bias is None  # the original conv is untouched


def test_bn_in_train_mode_depends_on_the_batch_and_the_model_is_restored(classifier, scenes):
    x, _ = scenes
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    companions = [x[1:9], x[9:17]]
    train = basics.output_in_batches(classifier, x[0], companions, train=True)
    evald = basics.output_in_batches(classifier, x[0], companions, train=False)
    assert not torch.allclose(train[0], train[1], atol=1e-3)
    assert torch.allclose(evald[0], evald[1], atol=1e-5)
    assert not classifier.training and not any(m.training for m in classifier.modules())
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())


def test_train_mode_restores_running_stats_even_on_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).eval()
    mean = net[1].running_mean.clone()
    with pytest.raises(RuntimeError):
        with basics.train_mode(net):
            net(torch.randn(4, 3, 8, 8) + 5)
            raise RuntimeError("boom")
    assert torch.equal(net[1].running_mean, mean) and not net.training


def test_bn_affine_refuses_other_layers():
    with pytest.raises(TypeError, match="BatchNorm2d"):
        basics.bn_affine(nn.Conv2d(1, 1, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="running statistics"):
        basics.bn_affine(nn.BatchNorm2d(3, track_running_stats=False))


# --- confusion, ROC, AUC ----------------------------------------------------------------------------


def test_auc_equals_the_pairwise_probability_with_ties():
    g = torch.Generator().manual_seed(2)
    for trial in range(5):
        y = torch.randint(0, 2, (60,), generator=g)
        y[0], y[1] = 0, 1
        s = torch.randint(0, 8, (60,), generator=g).float() / 8 + 0.3 * y * trial  # many ties
        pos, neg = s[y == 1], s[y == 0]
        count = sum(float(p > n) + 0.5 * float(p == n) for p in pos for n in neg) / (len(pos) * len(neg))
        r = basics.roc(s, y)
        assert r["auc"] == pytest.approx(count, abs=1e-12)
        assert basics.pairwise_auc(s, y) == pytest.approx(count, abs=1e-12)
        # The curve's trapezoid area is the same number.
        assert np.trapezoid(r["tpr"], r["fpr"]) == pytest.approx(count, abs=1e-12)


def test_rates_lie_on_the_roc_curve():
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 2, (50,), generator=g)
    s = torch.rand(50, generator=g) + 0.5 * y
    r = basics.roc(s, y)
    for t, fpr, tpr in zip(r["thresholds"][1:], r["fpr"][1:], r["tpr"][1:]):
        q = basics.rates(s, y, float(t))
        assert (q["fpr"], q["tpr"]) == pytest.approx((fpr, tpr))
        assert q["tp"] + q["fn"] == int(y.sum()) and q["fp"] + q["tn"] == int((y == 0).sum())


@pytest.mark.parametrize("normalize", [None, "true", "pred", "all"])
def test_confusion_matches_sklearn_including_empty_rows(normalize):
    from sklearn.metrics import confusion_matrix

    truth, pred = np.array([0, 0, 1, 3, 3, 3]), np.array([0, 1, 1, 3, 0, 3])  # class 2 never occurs
    want = confusion_matrix(truth, pred, labels=[0, 1, 2, 3], normalize=normalize)
    assert np.allclose(basics.confusion(pred, truth, 4, normalize=normalize), want)
    with pytest.raises(ValueError, match="normalize"):
        basics.confusion(pred, truth, 4, normalize="rows")


def test_confusion_and_binary_scores_on_held_out_scenes(classifier, scenes):
    x, labels = scenes
    logits = basics.predict(classifier, x)
    c = basics.confusion(logits.argmax(1), labels, len(classifier.classes))
    assert c.sum() == len(labels) and c.trace() == int((logits.argmax(1) == labels).sum())
    assert np.array_equal(c.sum(1), np.bincount(labels.numpy(), minlength=6))  # rows = truth
    assert np.allclose(basics.confusion(logits.argmax(1), labels, 6, normalize="true").sum(1)[c.sum(1) > 0], 1)
    s, y = basics.binary_scores(logits, labels, 0, 1)
    assert len(s) == int(((labels == 0) | (labels == 1)).sum()) and int(y.sum()) == int((labels == 0).sum())
    # Two-class softmax: sigmoid of the logit difference.
    keep = (labels == 0) | (labels == 1)
    assert torch.allclose(s, torch.softmax(logits[keep][:, [0, 1]], 1)[:, 0], atol=1e-6)
    assert 0.5 < basics.roc(s, y)["auc"] <= 1


def test_roc_refuses_one_class_and_bad_labels():
    with pytest.raises(ValueError, match="both positives and negatives"):
        basics.roc(torch.rand(5), torch.ones(5))
    with pytest.raises(ValueError, match="0 .negative. or 1"):
        basics.pairwise_auc(torch.rand(3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="different"):
        basics.binary_scores(torch.rand(4, 6), torch.zeros(4, dtype=torch.long), 1, 1)


# --- GAP vs GMP -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heads(classifier):
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    h, info = basics.train_pooled_heads(classifier, n=128, steps=60)
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())
    return h, info


def test_heads_learn_and_pool_as_named(heads, scenes):
    h, info = heads
    x, labels = scenes
    for pool in ("gap", "gmp"):
        assert info["loss"][pool][-1] < info["loss"][pool][0]
        acc = (basics.predict(h[pool], x).argmax(1) == labels).float().mean()
        assert acc > 0.5, (pool, acc)
    a = h["gap"].features(h["gap"].normalize(x[:2]))
    with torch.no_grad():
        assert torch.allclose(h["gmp"](x[:2]), h["gmp"].fc(a.amax((2, 3))), atol=1e-5)
        assert torch.allclose(h["gap"](x[:2]), h["gap"].fc(a.mean((2, 3))), atol=1e-5)


def test_class_maps_are_cam_for_gap_and_grad_cam_for_gmp(heads, scenes):
    h, _ = heads
    x, labels = scenes[0][:4], scenes[1][:4]
    gap_maps = basics.class_maps(h["gap"], x, labels, relu=True)
    assert torch.allclose(gap_maps, explain.cam(h["gap"], x, labels), atol=1e-4)
    # GMP: the score's gradient reaches one cell per channel with value w[c, k], so Grad-CAM's
    # channel weights are w[c, k] / (h w) and its map is the class map over 144 cells.
    gmp_maps = basics.class_maps(h["gmp"], x, labels, relu=True)
    gc = explain.grad_cam(h["gmp"], x, labels)
    assert torch.allclose(gc, gmp_maps / 144, atol=1e-4)
    with pytest.raises(ValueError, match="average pool"):
        explain.cam(h["gmp"], x, labels)
    assert torch.allclose(basics.class_maps(h["gap"], x, 2), basics.class_maps(h["gap"], x, torch.full((4,), 2)))
    with pytest.raises(ValueError, match="one per image"):
        basics.class_maps(h["gap"], x, 6)


def test_output_in_batches_refuses_bad_companions(classifier, scenes):
    x, _ = scenes
    with pytest.raises(ValueError, match="non-empty list"):
        basics.output_in_batches(classifier, x[0], [], train=True)
    with pytest.raises(ValueError, match="one .C, H, W. image"):
        basics.output_in_batches(classifier, x[:2], [x[2:4]], train=True)


def test_retrain_trains_only_the_last_blocks_of_a_copy(classifier):
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    h, info = basics.train_pooled_heads(classifier, n=32, retrain=1, epochs=1, batch=16)
    assert len(info["loss"]["gmp"]) == 2 and info["retrain"] == 1
    for pool in ("gap", "gmp"):
        head = h[pool]
        assert torch.equal(head.features[0][0].weight, classifier.features[0][0].weight)  # frozen prefix
        assert not torch.equal(head.features[-1][0].weight, classifier.features[-1][0].weight)  # retrained
        assert not any(p.requires_grad for p in head.features.parameters()) and not head.training
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())
    with pytest.raises(ValueError, match="retrain must be"):
        basics.train_pooled_heads(classifier, n=32, retrain=5)
