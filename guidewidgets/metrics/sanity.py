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
from ..checks import check_int, check_number
from ..explain.targets import check_input, predicted
from ..hooks import eval_mode, model_lock, model_output

__all__ = [
    "spearman",
    "randomizable_layers",
    "randomized_copy",
    "cascading_randomization",
    "train_copy",
    "data_randomization",
]


def _check_pair(a: object, b: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"maps must be torch tensors (B, H, W), got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"maps differ in size: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() != 3:
        raise ValueError(f"maps must be batches (B, H, W), got {tuple(a.shape)}; for one map use a[None], b[None]")
    if a.numel() == 0:
        raise ValueError(f"maps are empty, shape {tuple(a.shape)}: give at least one map of at least one pixel")
    if a.is_complex() or b.is_complex():
        raise TypeError("maps must be real tensors")
    if not bool(torch.isfinite(a).all()) or not bool(torch.isfinite(b).all()):
        raise ValueError("maps hold NaN or inf values; replace them, e.g. torch.nan_to_num(maps)")
    return a.detach().cpu().double().flatten(1), b.detach().cpu().double().flatten(1)


def spearman(a: torch.Tensor, b: torch.Tensor, absolute: bool = False, on_constant: str = "raise") -> torch.Tensor:
    """Per-image Spearman rank correlation (B,) of maps (B, H, W). ``absolute`` ranks |map|
    (Adebayo et al. report both).

    A constant map has no ranking, so its correlation is undefined: it raises, or with
    ``on_constant="nan"`` is NaN (the sanity checks use that: a randomised model may give a flat
    map, which is left out of their means rather than stopping the run). NaN or inf maps raise.
    """
    if on_constant not in ("raise", "nan"):
        raise ValueError(f"on_constant must be 'raise' or 'nan', got {on_constant!r}")
    a, b = _check_pair(a, b)
    if absolute:
        a, b = a.abs(), b.abs()
    out = torch.full((len(a),), float("nan"), dtype=torch.float64)
    for i in range(len(a)):
        if a[i].max() > a[i].min() and b[i].max() > b[i].min():
            out[i] = float(stats.spearmanr(a[i].numpy(), b[i].numpy())[0])
        elif on_constant == "raise":
            which, flat = ("a", a) if not a[i].max() > a[i].min() else ("b", b)
            raise ValueError(
                f"map {i} of {which} is constant ({float(flat[i, 0]):g} everywhere"
                f"{' in absolute value' if absolute else ''}): a rank correlation with a constant map is "
                "undefined; leave that image out, or pass on_constant='nan' to mark it NaN"
            )
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
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seed = check_int(seed, "seed", 0)
    clone = copy.deepcopy(model)
    layers = randomizable_layers(clone)
    if upto is not None:
        # Why refuse a negative count: layers[:-1] would silently randomise all but one layer.
        upto = check_int(upto, "upto (layers from the top)", 0, len(layers))
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
    x = check_input(model, x)
    layers = randomizable_layers(model)
    if not layers:
        raise ValueError("the model has no layers with reset_parameters() to randomise")
    if steps is None:
        steps = sorted({*[2**i for i in range(int(np.log2(len(layers))) + 1)], len(layers)})
    if isinstance(steps, (str, bytes, int)) or not hasattr(steps, "__iter__"):
        raise TypeError(f"steps must be a list of layer counts from 1 to {len(layers)}, got {steps!r}")
    steps = [check_int(k, "each of steps (layers from the top)", 1, len(layers)) for k in steps]
    if not steps:
        raise ValueError(f"steps is empty; give layer counts from 1 to {len(layers)}, or None for the default")
    seed = check_int(seed, "seed", 0)
    target = _fixed_target(model, x, target)
    ref = _explain.explain(model, x, method, target, **options)
    labels, rows = [], []
    for j, k in enumerate(steps):
        rnd = randomized_copy(model, k, seed)
        # Why NaN, not raise: a randomised model may give a flat map; it is left out of the means.
        rows.append(spearman(ref, _explain.explain(rnd, x, method, target, **options), on_constant="nan"))
        labels.append(f"top {k}: down to {layers[k - 1]}")
        if progress is not None:
            progress((j + 1) / len(steps))
    return labels, torch.stack(rows)


def _fixed_target(
    model: nn.Module, x: torch.Tensor, target: int | list[int] | torch.Tensor | None
) -> int | list[int] | torch.Tensor:
    """``target``, or (None) the trained model's predicted class per image, kept for the copies."""
    if target is not None:
        return target
    with model_lock(model), eval_mode(model), torch.no_grad():
        return predicted(model_output(model(x)))


def _check_data(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise TypeError("training data must be torch tensors: images (N, C, H, W) and integer labels (N,)")
    if images.dim() != 4 or labels.dim() != 1 or len(images) != len(labels) or len(labels) < 2:
        raise ValueError(
            f"training data must be images (N, C, H, W) and integer labels (N,) with N >= 2, got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}; e.g. b = ShapeScenes(512, seed=1).batch(); "
            "images, labels = b['images'].float() / 255, b['labels']"
        )
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}")
    if not images.is_floating_point() or not bool(torch.isfinite(images).all()):
        raise ValueError(
            f"training images must be finite floats in [0, 1], got {images.dtype}"
            + (" with NaN or inf values" if images.is_floating_point() else "; for 8-bit use images.float() / 255")
        )


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
    epochs, batch, seed, threads = (
        check_int(epochs, "epochs", 1),
        check_int(batch, "batch", 1),
        check_int(seed, "seed", 0),
        check_int(threads, "threads", 1),
    )
    lr, weight_decay = check_number(lr, "lr", 0.0, low_open=True), check_number(weight_decay, "weight_decay", 0.0)
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    y = labels.long().cpu()
    if permute_labels:
        y = y[torch.randperm(len(y), generator=g)]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        clone = randomized_copy(model, None, seed).to(device)
        with torch.no_grad():  # the copy is in eval mode: one image gives the class count
            k = model_output(clone(images[:1].to(device))).shape[1]
        if int(labels.min()) < 0 or int(labels.max()) >= k:
            bad = int(labels.min()) if int(labels.min()) < 0 else int(labels.max())
            raise ValueError(f"label {bad} is out of range: the model has {k} classes, so use labels 0 to {k - 1}")
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
    x = check_input(model, x)
    _check_data(images, labels)
    target = _fixed_target(model, x, target)
    ref = _explain.explain(model, x, method, target, **options)
    runs = [("random-labels", True)] + ([("true-labels", False)] if control else [])
    result: dict[str, Any] = {"accuracy": {}}
    for j, (name, permute) in enumerate(runs):
        clone, acc = train_copy(
            model, images, labels, permute_labels=permute, epochs=epochs, batch=batch, lr=lr, seed=seed, threads=threads
        )
        # Why NaN, not raise: a copy trained on random labels may give a flat map; it is left out.
        result[name] = spearman(ref, _explain.explain(clone, x, method, target, **options), on_constant="nan")
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
        rho = {n: spearman(ref, _explain.explain(c, x, method, target), on_constant="nan") for n, c in copies.items()}
        print(f"{method:<22}" + "".join(f"{float(r.nanmean()):>{w}.3f}" for r, w in zip(rho.values(), (15, 13))))
    print(f"\n{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
