"""Sanity checks for saliency maps (Adebayo et al. 2018): model-parameter and data randomisation.

- **Cascading model-parameter randomisation**: the layers of a *deep copy* of the model are
  re-initialised one by one from the output down; a map that still looks like the trained model's
  (high Spearman rank correlation) does not depend on what the model learnt.
- **Data randomisation**: a re-initialised copy of the same architecture is trained on the same
  images with randomly permuted labels (it can only memorise); a map that looks the same on it does
  not depend on the relation between images and labels. :func:`data_randomization` also trains a
  control on the true labels with the same initialisation and budget, so a short budget is not
  mistaken for the labels' effect.

The user's model is never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from .. import explain as _explain

__all__ = [
    "spearman",
    "randomizable_layers",
    "randomized_copy",
    "cascading_randomization",
    "train_copy",
    "data_randomization",
]


def spearman(a: torch.Tensor, b: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """Per-image Spearman rank correlation (B,) of maps (B, H, W); NaN where a map is constant.
    ``absolute`` ranks |map| (Adebayo et al. report both)."""
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {tuple(a.shape)} vs {tuple(b.shape)}")
    a, b = a.detach().cpu().double().flatten(1), b.detach().cpu().double().flatten(1)
    if absolute:
        a, b = a.abs(), b.abs()
    out = torch.full((len(a),), float("nan"), dtype=torch.float64)
    for i in range(len(a)):
        if a[i].max() > a[i].min() and b[i].max() > b[i].min():
            out[i] = float(stats.spearmanr(a[i].numpy(), b[i].numpy())[0])
    return out


def randomizable_layers(model: nn.Module) -> list[str]:
    """Names of the modules with learnt weights and a ``reset_parameters`` (conv, linear, norm),
    from the output down (the cascade's order)."""
    names = [
        n
        for n, m in model.named_modules()
        if n and hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False))
    ]
    return names[::-1]


def randomized_copy(model: nn.Module, upto: int | None = None, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with its top ``upto`` randomizable layers (all if None) re-initialised."""
    clone = copy.deepcopy(model)
    layers = randomizable_layers(clone)
    mods = dict(clone.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in layers[: len(layers) if upto is None else upto]:
            mods[name].reset_parameters()  # type: ignore[operator]
    return clone.eval()


def cascading_randomization(
    model: nn.Module,
    x: torch.Tensor,
    method: str,
    target: int | list[int] | torch.Tensor | None = None,
    steps: list[int] | None = None,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    **options,
) -> tuple[list[str], torch.Tensor]:
    """Rank correlation of ``method``'s maps on randomised copies with the trained model's maps.

    Returns (labels, correlations (len(steps), B)): step k re-initialises the top k layers of
    :func:`randomizable_layers` (default steps: 1, 2, 4, ... and all). The target defaults to the
    trained model's predicted class and is kept fixed for the randomised copies.
    """
    layers = randomizable_layers(model)
    if not layers:
        raise ValueError("the model has no layers with reset_parameters() to randomise")
    if target is None:
        with torch.no_grad():
            from ..hooks import eval_mode, model_output

            with eval_mode(model):
                target = model_output(model(x)).argmax(dim=1)
    ref = _explain.explain(model, x, method, target, **options)
    if steps is None:
        steps = sorted({*[2**i for i in range(int(np.log2(len(layers))) + 1)], len(layers)})
    labels, rows = [], []
    for j, k in enumerate(steps):
        if not 1 <= k <= len(layers):
            raise ValueError(f"steps must lie in 1..{len(layers)} (layers from the top), got {k}")
        rnd = randomized_copy(model, k, seed)
        rows.append(spearman(ref, _explain.explain(rnd, x, method, target, **options)))
        labels.append(f"top {k}: down to {layers[k - 1]}")
        if progress is not None:
            progress((j + 1) / len(steps))
    return labels, torch.stack(rows)


def _check_data(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels) or len(labels) < 2:
        raise ValueError(
            f"training data must be images (N, C, H, W) and integer labels (N,) with N >= 2, got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}; e.g. b = ShapeScenes(512, seed=1).batch(); "
            "images, labels = b['images'].float() / 255, b['labels']"
        )
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")


def train_copy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    permute_labels: bool = False,
    epochs: int = 2,
    batch: int = 32,
    lr: float = 4e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    threads: int = 1,
) -> tuple[nn.Module, float]:
    """A deep copy of ``model`` with every layer re-initialised (seed ``seed``), trained on
    ``images`` (N, C, H, W) and ``labels`` (N,) (permuted at random when ``permute_labels``) by AdamW
    with a one-cycle schedule, on ``threads`` intra-op threads. Returns (the copy in eval mode, its
    accuracy on the labels it was trained on). The same arguments give the same weights."""
    _check_data(images, labels)
    from ..hooks import model_output

    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    y = labels.long().cpu()
    if permute_labels:
        y = y[torch.randperm(len(y), generator=g)]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        clone = randomized_copy(model, None, seed).to(device)
        steps = max(1, epochs * -(-len(y) // batch))
        opt = torch.optim.AdamW(clone.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
        clone.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(y), generator=g).split(batch):
                out = model_output(clone(images[idx].to(device)))
                loss = F.cross_entropy(out, y[idx].to(device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        clone.eval()
        with torch.no_grad():
            pred = torch.cat(
                [model_output(clone(images[i].to(device))).argmax(1).cpu() for i in torch.arange(len(y)).split(256)]
            )
    finally:
        torch.set_num_threads(previous)
    # Why zero the grads: the returned copy is explained next; it must carry no training state.
    clone.zero_grad(set_to_none=True)
    return clone, float((pred == y).double().mean())


def data_randomization(
    model: nn.Module,
    x: torch.Tensor,
    method: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    target: int | list[int] | torch.Tensor | None = None,
    *,
    control: bool = True,
    epochs: int = 2,
    batch: int = 32,
    lr: float = 4e-3,
    seed: int = 0,
    threads: int = 1,
    progress: Callable[[float], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Adebayo et al.'s data-randomisation test of ``method`` on ``x`` (B, C, H, W).

    A re-initialised copy of ``model`` is trained on ``images`` / ``labels`` with the labels
    permuted (and, with ``control``, another from the same initialisation on the true labels, same
    budget); each one's maps for ``target`` (default: the trained model's predictions, kept fixed)
    are rank-correlated (Spearman, per image) with ``model``'s. Returns ``{"random-labels": (B,),
    "true-labels": (B,) (with control), "accuracy": {name: accuracy on its own training labels}}``.
    A map that passes correlates less for the random-label model than for the control.
    ``options`` go to the method.
    """
    from ..hooks import eval_mode, model_output

    if target is None:
        with torch.no_grad(), eval_mode(model):
            target = model_output(model(x)).argmax(dim=1)
    ref = _explain.explain(model, x, method, target, **options)
    runs = [("random-labels", True)] + ([("true-labels", False)] if control else [])
    result: dict[str, Any] = {"accuracy": {}}
    for j, (name, permute) in enumerate(runs):
        clone, acc = train_copy(
            model, images, labels, permute_labels=permute, epochs=epochs, batch=batch, lr=lr, seed=seed, threads=threads
        )
        result[name] = spearman(ref, _explain.explain(clone, x, method, target, **options))
        result["accuracy"][name] = acc
        if progress is not None:
            progress((j + 1) / len(runs))
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m guidewidgets.metrics.sanity``: the data-randomisation test on the embedded classifier."""
    import argparse
    import time

    from ..zoo import ShapeScenes, load

    p = argparse.ArgumentParser(prog="python -m guidewidgets.metrics.sanity", description=main.__doc__)
    p.add_argument("--train", type=int, default=1000, help="training scenes (seed 1357; default 1000)")
    p.add_argument("--epochs", type=int, default=4, help="epochs of each retraining (default 4)")
    p.add_argument("--test", type=int, default=32, help="held-out scenes explained (seed 2468; default 32)")
    p.add_argument("--methods", nargs="+", default=["grad-cam", "saliency", "guided-backprop", "integrated-gradients"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.time()
    model = load("shapes-classifier")
    b = ShapeScenes(args.train, seed=1357).batch()
    images, labels = b["images"].float() / 255, b["labels"]
    x = ShapeScenes(args.test, seed=2468).batch()["images"].float() / 255
    with torch.no_grad():
        target = model(x).argmax(1)
    copies = {}
    for name, permute in (("random labels", True), ("true labels", False)):
        copies[name], acc = train_copy(
            model, images, labels, permute_labels=permute, epochs=args.epochs, seed=args.seed
        )
        print(f"{name}: accuracy on its own training labels {100 * acc:.1f} %", flush=True)
    print(f"\nSpearman rank correlation with the shipped classifier's maps, mean over {args.test} held-out scenes")
    print(f"({args.train} training scenes, {args.epochs} epochs, seed {args.seed}; NaN maps left out)")
    print(f"{'method':<22}{'random labels':>15}{'true labels':>13}")
    for method in args.methods:
        ref = _explain.explain(model, x, method, target)
        rho = {n: spearman(ref, _explain.explain(c, x, method, target)) for n, c in copies.items()}
        print(f"{method:<22}" + "".join(f"{float(r.nanmean()):>{w}.3f}" for r, w in zip(rho.values(), (15, 13))))
    print(f"\n{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
