"""Feature space: pooled embeddings of a dataset at a layer, nearest neighbours in feature space
against pixel space (the lecture's "Last Layer: Nearest Neighbors"), and 2-D maps by PCA and t-SNE
(scikit-learn's, not a hand-written t-SNE)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from .. import hooks
from ._common import Data, Progress, batches, data_len, forward_to, locked_eval, model_device

__all__ = ["Embeddings", "embed", "pixels", "neighbours", "same_class_rate", "project"]


@dataclass
class Embeddings:
    """``vectors`` (N, D) float32, ``labels`` (N,) (-1 where the data has none), ``layer`` used."""

    vectors: torch.Tensor
    labels: torch.Tensor
    layer: str


def embed(
    model: nn.Module,
    data: Data,
    layer: str | nn.Module | None = None,
    pool: Literal["avg", "max"] = "avg",
    batch_size: int = 64,
    progress: Progress | None = None,
) -> Embeddings:
    """One vector per image: ``layer``'s map (default: the model's explain layer, else the last
    feature map) pooled over positions by mean or max. ``progress(done, total)`` after each batch."""
    if pool not in ("avg", "max"):
        raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
    n = data_len(data)
    device = model_device(model)
    vecs, labs = [], []
    name: str | nn.Module | None = layer
    with locked_eval(model), torch.no_grad():
        for start, x, y in batches(data, batch_size, labels=True):
            x = x.to(device)
            if name is None:
                name = hooks.last_conv_layer(model, x)
            a = forward_to(model, name, x).float()
            vecs.append((a.mean((2, 3)) if pool == "avg" else a.amax((2, 3))).cpu())
            labs.append(y)
            if progress is not None:
                progress(min(start + len(x), n), n)
    label = name if isinstance(name, str) else type(name).__name__
    return Embeddings(torch.cat(vecs), torch.cat(labs), label)


def pixels(data: Data, batch_size: int = 256) -> Embeddings:
    """The images themselves, flattened: the pixel space the lecture compares against."""
    vecs, labs = [], []
    for _start, x, y in batches(data, batch_size, labels=True):
        vecs.append(x.flatten(1).float())
        labs.append(y)
    return Embeddings(torch.cat(vecs), torch.cat(labs), "pixels")


def _vectors(e: Embeddings | torch.Tensor) -> torch.Tensor:
    v = e.vectors if isinstance(e, Embeddings) else e
    if not isinstance(v, torch.Tensor) or v.dim() != 2 or len(v) == 0:
        raise ValueError("expected (N, D) embeddings (features.embed or features.pixels), N >= 1")
    return v.float()


def neighbours(e: Embeddings | torch.Tensor, queries: torch.Tensor | list[int] | int, k: int = 5) -> torch.Tensor:
    """(Q, k) indices of the ``k`` nearest items (L2) to each query item, the query itself excluded."""
    v = _vectors(e)
    q = torch.as_tensor([queries] if isinstance(queries, int) else queries, dtype=torch.long)
    if not isinstance(k, int) or not 1 <= k < len(v):
        raise ValueError(f"k must be an int from 1 to {len(v) - 1} (items minus the query), got {k!r}")
    if len(q) and (q.min() < 0 or q.max() >= len(v)):
        raise ValueError(f"query indices must lie in 0..{len(v) - 1}")
    d = torch.cdist(v[q], v)
    d[torch.arange(len(q)), q] = float("inf")
    # Why a stable sort: equal distances (duplicate images) give the same neighbours every run.
    return torch.sort(d, dim=1, stable=True).indices[:, :k]


def same_class_rate(e: Embeddings, k: int = 5, queries: torch.Tensor | None = None) -> float:
    """Fraction of the ``k`` nearest neighbours of each query (default: every item) that share its label."""
    if not isinstance(e, Embeddings) or (e.labels < 0).any():
        raise ValueError("same_class_rate needs labelled embeddings (data whose items carry a 'label')")
    q = torch.arange(len(e.vectors)) if queries is None else torch.as_tensor(queries, dtype=torch.long)
    nn_idx = torch.cat([neighbours(e, q[i : i + 512], k) for i in range(0, len(q), 512)])
    return float((e.labels[nn_idx] == e.labels[q][:, None]).float().mean())


def project(
    e: Embeddings | torch.Tensor,
    method: Literal["pca", "tsne"] = "tsne",
    seed: int = 0,
    perplexity: float = 30.0,
) -> np.ndarray:
    """(N, 2) coordinates by scikit-learn's PCA or t-SNE (PCA-initialised, seeded)."""
    v = _vectors(e).numpy().astype(np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(v)
    if method != "tsne":
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    from sklearn.manifold import TSNE

    perplexity = min(float(perplexity), max(1.0, (len(v) - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(v)
