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
from ..checks import check_int, check_number
from ..explain.targets import check_input
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
    check_data(data)
    batch_size = check_int(batch_size, "batch_size", 1)
    n = data_len(data)
    device = model_device(model)
    vecs, labs = [], []
    name: str | nn.Module | None = layer
    with locked_eval(model), torch.no_grad():
        for start, x, y in batches(data, batch_size, labels=True):
            x = check_input(model, x.to(device))
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
    check_data(data)
    batch_size = check_int(batch_size, "batch_size", 1)
    vecs, labs = [], []
    for start, x, y in batches(data, batch_size, labels=True):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"images {start}.. hold NaN or inf values; replace them, e.g. torch.nan_to_num(x)")
        vecs.append(x.flatten(1).float())
        labs.append(y)
    return Embeddings(torch.cat(vecs), torch.cat(labs), "pixels")


def check_data(data: Data) -> None:
    """Refuse an integer image tensor: it would be read as floats 0..255, not 0..1 (ShapeScenes and
    sequences of images are converted where they are read)."""
    if isinstance(data, torch.Tensor) and not data.is_floating_point():
        raise TypeError(f"images must be floats in [0, 1], got {data.dtype}; for 8-bit images use x.float() / 255")


def _vectors(e: Embeddings | torch.Tensor) -> torch.Tensor:
    v = e.vectors if isinstance(e, Embeddings) else e
    if not isinstance(v, torch.Tensor) or v.dim() != 2 or len(v) == 0 or v.shape[1] == 0:
        raise ValueError("expected (N, D) embeddings (features.embed or features.pixels), N >= 1 and D >= 1")
    if v.is_complex() or v.dtype == torch.bool:
        raise TypeError(f"embeddings must be real numbers, got {v.dtype}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(
            "the embeddings hold NaN or inf values: distances between them mean nothing; embed finite images"
        )
    return v.float()


def _queries(queries: object, n: int) -> torch.Tensor:
    """Query indices as a 1-D long tensor in 0..n-1; floats and bools are refused, not truncated."""
    if isinstance(queries, torch.Tensor):
        if queries.is_floating_point() or queries.is_complex() or queries.dtype == torch.bool or queries.dim() > 1:
            raise TypeError(
                f"queries must be item indices (ints), shape (Q,), got {queries.dtype} {tuple(queries.shape)}"
            )
        q = queries.reshape(-1).long().cpu()
    else:
        items = [queries] if not isinstance(queries, (list, tuple, range, np.ndarray)) else list(queries)
        q = torch.tensor([check_int(i, "each query index", 0) for i in items], dtype=torch.long)
    if len(q) and (int(q.min()) < 0 or int(q.max()) >= n):
        raise ValueError(f"query indices must lie in 0..{n - 1}, got {q.tolist()[:8]}")
    return q


def neighbours(e: Embeddings | torch.Tensor, queries: torch.Tensor | list[int] | int, k: int = 5) -> torch.Tensor:
    """(Q, k) indices of the ``k`` nearest items (L2) to each query item, the query itself excluded."""
    v = _vectors(e)
    if len(v) < 2:
        raise ValueError("neighbours need at least 2 items: the query's own item does not count")
    k = check_int(k, "k", 1, len(v) - 1)
    q = _queries(queries, len(v))
    d = torch.cdist(v[q], v)
    d[torch.arange(len(q)), q] = float("inf")
    # Why a stable sort: equal distances (duplicate images) give the same neighbours every run.
    return torch.sort(d, dim=1, stable=True).indices[:, :k]


def same_class_rate(e: Embeddings, k: int = 5, queries: torch.Tensor | None = None) -> float:
    """Fraction of the ``k`` nearest neighbours of each query (default: every item) that share its label."""
    if not isinstance(e, Embeddings) or (e.labels < 0).any():
        raise ValueError("same_class_rate needs labelled embeddings (data whose items carry a 'label')")
    if len(e.labels) != len(e.vectors):
        raise ValueError(f"the embeddings have {len(e.vectors)} vectors but {len(e.labels)} labels; give one per item")
    q = torch.arange(len(e.vectors)) if queries is None else _queries(queries, len(e.vectors))
    if len(q) == 0:
        raise ValueError(
            "queries is empty: a rate over no queries is undefined; pass at least one index (or None for all)"
        )
    nn_idx = torch.cat([neighbours(e, q[i : i + 512], k) for i in range(0, len(q), 512)])
    return float((e.labels[nn_idx] == e.labels[q][:, None]).float().mean())


def project(
    e: Embeddings | torch.Tensor,
    method: Literal["pca", "tsne"] = "tsne",
    seed: int = 0,
    perplexity: float = 30.0,
) -> np.ndarray:
    """(N, 2) coordinates by scikit-learn's PCA or t-SNE (PCA-initialised, seeded)."""
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    v = _vectors(e).numpy().astype(np.float32)
    seed = check_int(seed, "seed", 0, 2**32 - 1)
    perplexity = check_number(perplexity, "perplexity", 0.0, low_open=True)
    if len(v) < 2 or v.shape[1] < 2:
        raise ValueError(f"a 2-D projection needs at least 2 items of at least 2 dimensions, got {tuple(v.shape)}")
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(v)
    from sklearn.manifold import TSNE

    # Why cap: scikit-learn needs perplexity < N; a third of N keeps t-SNE's neighbourhoods meaningful.
    perplexity = min(perplexity, max(1.0, (len(v) - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(v)
