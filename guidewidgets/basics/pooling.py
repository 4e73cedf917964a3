"""GAP vs GMP: two heads on the same frozen trunk, trained side by side in seconds.

Global average pooling scores a class by the mean of each feature map, so every part of the
object adds to the score (CAM then covers the whole object); global max pooling needs only one
high value per map, which rewards the single most discriminative spot. The trunk (the shipped
classifier's ``normalize`` + ``features``) is copied and frozen; only ``Linear(C, K)`` is trained,
on pooled features computed once, so a head trains in seconds on one CPU thread. With
``retrain=1`` the last feature block is re-initialised and trained with each head (tens of
seconds), so the features can adapt to the pooling too.
"""

from __future__ import annotations

import copy
import time
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import eval_mode, model_lock

__all__ = ["PooledClassifier", "train_pooled_heads", "class_maps", "HEAD_SEED"]

#: ShapeScenes seed of the heads' training scenes (no other recipe uses it).
HEAD_SEED = 41_002
Pool = Literal["gap", "gmp"]


class PooledClassifier(nn.Module):
    """``fc(pool(features(normalize(x))))`` with pool = global average ("gap") or max ("gmp").

    Carries ``classes``, ``task`` and ``default_explain_layer`` like the zoo's models, so
    ``explain`` and the widgets take it as it is.
    """

    task = "classification"
    default_explain_layer = "features"
    default_guide_layer = "features"
    normalize: nn.Module
    features: nn.Module

    def __init__(self, trunk: nn.Module, pool: Pool, classes: list[str]) -> None:
        super().__init__()
        if pool not in ("gap", "gmp"):
            raise ValueError(f"pool must be 'gap' or 'gmp', got {pool!r}")
        if not hasattr(trunk, "features") or not hasattr(trunk, "normalize"):
            raise TypeError("trunk must be a zoo ShapeClassifier (it needs .normalize and .features)")
        self.pool_kind = pool
        self.classes = list(classes)
        self.normalize = copy.deepcopy(trunk.get_submodule("normalize"))
        self.features = copy.deepcopy(trunk.get_submodule("features"))
        channels = [m for m in self.features.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "gap" else nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(channels, len(self.classes))
        for p in [*self.normalize.parameters(), *self.features.parameters()]:
            p.requires_grad_(False)  # frozen: our own copy, the caller's classifier is untouched

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError("expected a (B, 3, H, W) float tensor in [0, 1]; add a batch dim with x[None]")
        return self.fc(self.pool(self.features(self.normalize(x))).flatten(1))


def _pooled(trunk: PooledClassifier, images: torch.Tensor, batch: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    gap, gmp = [], []
    with torch.no_grad(), eval_mode(trunk):
        for s in range(0, images.shape[0], batch):
            a = trunk.features(trunk.normalize(images[s : s + batch]))
            gap.append(a.mean((2, 3)))
            gmp.append(a.amax((2, 3)))
    return torch.cat(gap), torch.cat(gmp)


def _reset(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            m.reset_parameters()
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()


def _train_tail(
    head: PooledClassifier,
    retrain: int,
    prefix: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
) -> list[float]:
    """Re-initialises the last ``retrain`` feature blocks of ``head`` and trains them with its linear
    layer on ``prefix`` (the frozen blocks' output) in seeded mini-batches; returns the loss per step."""
    tail = head.features[-retrain:]  # type: ignore[index]
    _reset(tail)
    for p in tail.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam([{"params": tail.parameters(), "lr": lr}, {"params": head.fc.parameters(), "lr": lr}])
    g = torch.Generator().manual_seed(seed)
    n, losses = len(prefix), []
    tail.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for s in range(0, n, batch):
            idx = order[s : s + batch]
            loss = F.cross_entropy(head.fc(head.pool(tail(prefix[idx])).flatten(1)), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    for p in tail.parameters():
        p.requires_grad_(False)
    return losses


def train_pooled_heads(
    classifier: nn.Module,
    *,
    n: int = 1024,
    steps: int = 300,
    lr: float = 0.05,
    retrain: int = 0,
    epochs: int = 6,
    batch: int = 64,
    block_lr: float = 3e-3,
    seed: int = HEAD_SEED,
    threads: int = 1,
) -> tuple[dict[str, PooledClassifier], dict]:
    """Train a GAP head and a GMP head on ``classifier``'s trunk with the same scenes,
    initialisation, optimiser and step count.

    ``retrain=0`` (default): the trunk is frozen and only the linear layers learn (Adam, full
    batch, ``steps`` steps, on pooled features computed once). ``retrain=k``: the last k blocks
    of ``features`` are also re-initialised and trained with their head (Adam, ``epochs`` over
    the scenes in mini-batches of ``batch``), so the features can adapt to the pooling.

    Returns ({"gap": model, "gmp": model} in eval mode, info) with info["loss"][pool] the
    training loss per step and info["seconds"]. Deterministic for a given thread count;
    ``classifier`` is not modified (each head has its own copy of the trunk).
    """
    from ..zoo.scenes import ShapeScenes

    if n < 8 or steps < 1 or epochs < 1 or batch < 1:
        raise ValueError("use at least n=8 scenes, steps=1, epochs=1 and batch=1")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.time()
    try:
        with model_lock(classifier):
            classes = list(classifier.classes)  # type: ignore[arg-type]
            heads = {p: PooledClassifier(classifier, p, classes) for p in ("gap", "gmp")}
        blocks = len(heads["gap"].features)  # type: ignore[arg-type]
        if not 0 <= retrain < blocks:
            raise ValueError(f"retrain must be 0..{blocks - 1} (the number of last feature blocks to train)")
        b = ShapeScenes(n, seed=seed).batch()
        images, labels = b["images"].float() / 255, b["labels"]
        losses: dict[str, list[float]] = {}
        if retrain == 0:
            feats = dict(zip(("gap", "gmp"), _pooled(heads["gap"], images)))
        else:
            first = heads["gap"]
            with torch.no_grad(), eval_mode(first):
                prefix = first.features[:-retrain](first.normalize(images))  # type: ignore[index]
        for pool, head in heads.items():
            torch.manual_seed(0)
            head.fc.reset_parameters()
            losses[pool] = []
            if retrain == 0:
                opt = torch.optim.Adam(head.fc.parameters(), lr=lr)
                for _ in range(steps):
                    loss = F.cross_entropy(head.fc(feats[pool]), labels)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses[pool].append(float(loss.detach()))
            else:
                losses[pool] = _train_tail(head, retrain, prefix, labels, epochs, batch, block_lr, seed)
            head.eval()
    finally:
        torch.set_num_threads(previous)
    info = {"loss": losses, "seconds": time.time() - t0, "n": n, "seed": seed, "retrain": retrain}
    return heads, info


def class_maps(
    model: PooledClassifier, x: torch.Tensor, target: torch.Tensor | int | None = None, *, relu: bool = False
) -> torch.Tensor:
    """The CAM formula ``M_c = sum_k w[c, k] A_k`` on the 12 x 12 grid for either head, upsampled
    bilinearly to the input (ReLU'd on the grid first if ``relu``, as CAM does; not normalised).
    For the GAP head it is CAM; for the GMP head the class score is ``sum_k w[c, k] max A_k``
    instead, read off the same map's channels. ``target``: None (predicted), one class or one per image."""
    if not isinstance(model, PooledClassifier):
        raise TypeError("class_maps needs a PooledClassifier from train_pooled_heads()")
    with torch.no_grad(), eval_mode(model):
        a = model.features(model.normalize(x))
        if target is None:
            cls = model.fc(model.pool(a).flatten(1)).argmax(1)
        else:
            cls = torch.as_tensor(target, dtype=torch.long).reshape(-1)
            if cls.numel() not in (1, x.shape[0]) or cls.min() < 0 or cls.max() >= len(model.classes):
                raise ValueError(
                    f"target must be one class or one per image, each in 0..{len(model.classes) - 1}; got {cls.tolist()}"
                )
            cls = cls.expand(x.shape[0])
        maps = torch.einsum("bc,bchw->bhw", model.fc.weight[cls], a)
        if relu:
            maps = maps.clamp_min(0)
    return F.interpolate(maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
