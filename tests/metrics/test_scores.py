"""Segmentation and box scores (metrics.segmentation, metrics.boxes) by property, and against the
implementations they replaced (sklearn's confusion matrix, a per-class numpy loop, torchvision's box IoU)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix
from torchvision.ops import box_iou as tv_box_iou

from guidewidgets import metrics


def _maps(seed: int, k: int = 5, shape=(3, 17, 19), ignore: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, k, shape, generator=g)
    truth = torch.randint(0, k, shape, generator=g)
    truth[torch.rand(shape, generator=g) < ignore] = 255
    return pred, truth


def _loop_iou(pred: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    # The Guide widget's former iou_per_class, plus ignored truth pixels dropped.
    keep = truth != 255
    pred, truth = pred[keep], truth[keep]
    out = np.full(k, np.nan)
    for c in range(k):
        union = np.logical_or(pred == c, truth == c).sum()
        if union:
            out[c] = np.logical_and(pred == c, truth == c).sum() / union
    return out


@pytest.mark.parametrize("seed", range(5))
def test_confusion_rows_are_truth_and_match_sklearn(seed):
    pred, truth = _maps(seed)
    conf = metrics.confusion(pred, truth, 5)
    keep = truth != 255
    want = confusion_matrix(truth[keep].numpy(), pred[keep].numpy(), labels=list(range(5)))
    assert conf.dtype == torch.int64 and np.array_equal(conf.numpy(), want)
    assert int(conf.sum()) == int(keep.sum())  # every labelled pixel once, ignored ones never
    assert torch.equal(conf.sum(1), torch.bincount(truth[keep], minlength=5))  # rows = truth


def test_confusion_one_pixel_lands_in_truth_row_pred_column():
    conf = metrics.confusion(torch.tensor([2]), torch.tensor([0]), 3)
    assert conf[0, 2] == 1 and conf.sum() == 1


def test_confusion_ignores_negative_truth_and_never_reads_pred_there():
    pred = torch.tensor([1, 255, 7, 0])
    truth = torch.tensor([1, 255, -1, 0])
    assert torch.equal(metrics.confusion(pred, truth, 2), torch.tensor([[1, 0], [0, 1]]))


def test_confusion_accepts_numpy_and_refuses_bad_input():
    p, t = np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]])
    assert torch.equal(metrics.confusion(p, t, 2), torch.tensor([[1, 1], [0, 2]]))
    with pytest.raises(ValueError, match="shape"):
        metrics.confusion(p, t[:1], 2)
    with pytest.raises(ValueError, match="class 3"):
        metrics.confusion(p + 2, t, 2)
    with pytest.raises(TypeError, match="argmax"):
        metrics.confusion(p.astype(float), t, 2)
    with pytest.raises(TypeError, match="num_classes"):
        metrics.confusion(p, t, 2.0)


@pytest.mark.parametrize("seed", range(5))
def test_iou_per_class_matches_the_per_class_loop(seed):
    pred, truth = _maps(seed, k=6)
    pred[pred == 5] = 4  # class 5 only in the truth: IoU 0, not NaN
    truth[truth == 3] = 2
    pred[pred == 3] = 2  # class 3 in neither map: NaN
    got = metrics.iou_per_class(pred, truth, 6)
    assert np.allclose(got.numpy(), _loop_iou(pred.numpy(), truth.numpy(), 6), equal_nan=True)
    assert got[5] == 0 and got[3].isnan()
    assert metrics.miou(pred, truth, 6) == pytest.approx(float(np.nanmean(got.numpy())))


@pytest.mark.parametrize("seed", range(3))
def test_a_map_scores_one_against_itself_and_iou_is_symmetric(seed):
    pred, truth = _maps(seed, ignore=0.0)
    assert metrics.miou(truth, truth, 5) == 1.0
    assert torch.equal(metrics.confusion(pred, truth, 5), metrics.confusion(truth, pred, 5).T)
    assert torch.allclose(metrics.iou_per_class(pred, truth, 5), metrics.iou_per_class(truth, pred, 5))


def test_scores_from_summed_confusions_and_edge_cases():
    a, b = _maps(1), _maps(2)
    total = metrics.confusion(*a, 5) + metrics.confusion(*b, 5)
    both = metrics.confusion(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]]), 5)
    assert torch.equal(total, both)
    keep = torch.cat([a[1], b[1]]) != 255
    right = (torch.cat([a[0], b[0]]) == torch.cat([a[1], b[1]]))[keep].double().mean()
    assert metrics.accuracy_from_confusion(total) == pytest.approx(float(right))
    empty = torch.zeros(3, 3, dtype=torch.int64)
    assert metrics.iou_from_confusion(empty).isnan().all() and np.isnan(metrics.miou_from_confusion(empty))
    assert metrics.accuracy_from_confusion(empty) == 0.0
    with pytest.raises(ValueError, match="confusion matrix"):
        metrics.miou_from_confusion(torch.zeros(2, 3))


def _boxes(g: torch.Generator, n: int, empty: bool = False) -> torch.Tensor:
    lo = torch.randint(0, 40, (n, 2), generator=g).double()
    size = torch.randint(0 if empty else 1, 30, (n, 2), generator=g).double()
    return torch.cat([lo, lo + size], 1)


@pytest.mark.parametrize("seed", range(5))
def test_box_iou_is_pairwise_symmetric_and_matches_torchvision(seed):
    g = torch.Generator().manual_seed(seed)
    a, b = _boxes(g, 7), _boxes(g, 4)
    iou = metrics.box_iou(a, b)
    assert iou.shape == (7, 4) and torch.allclose(iou, tv_box_iou(a, b))
    assert torch.equal(iou, metrics.box_iou(b, a).T)
    assert torch.allclose(metrics.box_iou(a, a).diag(), torch.ones(7, dtype=torch.float64))
    assert ((iou >= 0) & (iou <= 1)).all()


def test_box_iou_is_zero_for_disjoint_touching_and_empty_boxes():
    a = [10, 10, 30, 30]
    assert metrics.box_iou(a, [30, 30, 40, 40]).item() == 0.0  # exclusive ends: touching is disjoint
    assert metrics.box_iou(a, [50, 0, 60, 5]).item() == 0.0
    assert metrics.box_iou(a, [15, 15, 15, 25]).item() == 0.0  # an empty box inside a
    assert metrics.box_iou([5, 5, 5, 5], [5, 5, 5, 5]).item() == 0.0  # two identical empty boxes
    assert metrics.box_iou(a, [20, 10, 40, 30]).item() == pytest.approx(200 / 600)
    assert metrics.box_iou(a, torch.zeros(0, 4)).shape == (1, 0)


def test_box_iou_keeps_float_dtype_device_and_gradient():
    pred = torch.tensor([[0.0, 0.0, 10.0, 10.0]], requires_grad=True)
    iou = metrics.box_iou(pred, torch.tensor([[5.0, 0.0, 15.0, 10.0]]))
    assert iou.dtype == torch.float32
    iou.sum().backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0


def test_box_iou_refuses_malformed_boxes():
    a = [0, 0, 10, 10]
    with pytest.raises(ValueError, match="inverted"):
        metrics.box_iou([10, 10, 5, 20], a)
    with pytest.raises(ValueError, match="NaN"):
        metrics.box_iou(a, [float("nan"), 0, 5, 5])
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        metrics.box_iou(torch.zeros(2, 3, 4), a)
    with pytest.raises(ValueError, match=r"\(\.\.\., 4\)"):
        metrics.box_iou([0, 0, 1], a)
    with pytest.raises(TypeError, match="numbers"):
        metrics.box_iou("box", a)
