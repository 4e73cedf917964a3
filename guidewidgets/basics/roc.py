"""Confusion matrix, a binary score with a threshold, its ROC curve and AUC (scikit-learn draws the curve).

The lecture's two-class view: a classifier's output for two classes is one number p, the image
is called positive when ``p >= Gamma``, and moving Gamma trades the false-positive rate
``FPR = FP / (FP + TN)`` against the true-positive rate ``TPR = TP / (TP + FN)``. The ROC curve
is every (FPR, TPR) pair as Gamma moves; its area (AUC) equals the probability that a random
positive scores above a random negative (ties count one half).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from torch import nn

from ..hooks import eval_mode, model_lock, model_output
from ..metrics.segmentation import confusion as _confusion

__all__ = ["predict", "confusion", "binary_scores", "roc", "pairwise_auc", "rates"]


def _np(a: torch.Tensor | np.ndarray | list) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Logits (B, K) of ``model`` on ``images`` in eval mode, without gradients; flags restored."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError("images must be a (B, C, H, W) tensor; stack scene['image'] values with torch.stack")
    outs = []
    with model_lock(model), eval_mode(model), torch.no_grad():
        for s in range(0, images.shape[0], batch_size):
            outs.append(model_output(model(images[s : s + batch_size])))
    return torch.cat(outs)


def confusion(
    pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray, n_classes: int, *, normalize: str | None = None
) -> np.ndarray:
    """Confusion matrix C[i, j]: images of true class i predicted as j (:func:`metrics.confusion`).

    Args:
        pred: (B,) predicted classes.
        truth: (B,) true classes.
        n_classes: K.
        normalize: None (counts), ``"true"`` (the lecture's fractions per row), ``"pred"`` (per
            column) or ``"all"``; an empty row or column gives zeros.

    Returns:
        (K, K) numpy array, int64 counts or float64 fractions.
    """
    axes = {None: None, "true": 1, "pred": 0, "all": (0, 1)}
    if normalize not in axes:
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
    c = _confusion(pred, truth, n_classes).numpy()
    if normalize is None:
        return c
    total = c.sum(axis=axes[normalize], keepdims=True)
    return np.divide(c, total, out=np.zeros(c.shape), where=total > 0)


def binary_scores(
    logits: torch.Tensor, labels: torch.Tensor, positive: int, negative: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class view of a K-class model: on the images labelled ``positive`` or ``negative``,
    the score ``p = softmax([z_pos, z_neg])[0] = sigmoid(z_pos - z_neg)`` and the binary truth
    (1 = positive). Returns (scores, y)."""
    if logits.dim() != 2 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"need (B, K) logits and (B,) labels, got {tuple(logits.shape)} and {tuple(labels.shape)}")
    k = logits.shape[1]
    for c in (positive, negative):
        if not 0 <= int(c) < k:
            raise ValueError(f"class index {c} is out of range for {k} classes")
    if positive == negative:
        raise ValueError("positive and negative must be two different classes")
    keep = (labels == positive) | (labels == negative)
    if not keep.any():
        raise ValueError("no image has either class; use scenes that contain both")
    z = logits[keep]
    return torch.sigmoid(z[:, positive] - z[:, negative]), (labels[keep] == positive).long()


def _check_binary(scores: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s, t = _np(scores).astype(np.float64).ravel(), _np(y).astype(np.int64).ravel()
    if s.shape != t.shape:
        raise ValueError(f"scores and labels differ in length ({s.size} vs {t.size})")
    if not set(np.unique(t)) <= {0, 1}:
        raise ValueError("binary labels must be 0 (negative) or 1 (positive)")
    if t.min() == t.max():
        raise ValueError("ROC needs both positives and negatives; only one class is present")
    return s, t


def roc(scores: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> dict[str, np.ndarray | float]:
    """ROC curve and AUC (sklearn): ``fpr``, ``tpr``, ``thresholds`` (positive when score >= threshold), ``auc``."""
    s, t = _check_binary(scores, y)
    fpr, tpr, thr = roc_curve(t, s)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thr, "auc": float(roc_auc_score(t, s))}


def pairwise_auc(scores: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted 1/2, by counting all pairs."""
    s, t = _check_binary(scores, y)
    pos, neg = s[t == 1][:, None], s[t == 0][None, :]
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def rates(scores: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, threshold: float) -> dict[str, float]:
    """Counts and rates when "positive" means ``score >= threshold``: tp, fp, tn, fn, tpr, fpr."""
    s, t = _check_binary(scores, y)
    p = s >= threshold
    tp, fp = int((p & (t == 1)).sum()), int((p & (t == 0)).sum())
    fn, tn = int((~p & (t == 1)).sum()), int((~p & (t == 0)).sum())
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "tpr": tp / (tp + fn), "fpr": fp / (fp + tn)}
