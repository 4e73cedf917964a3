"""Sanity checks for saliency maps (Adebayo et al. 2018): cascading model-parameter randomisation.

The layers of a *deep copy* of the model are re-initialised one by one from the output down;
a map that still looks like the trained model's (high Spearman rank correlation) does not depend
on what the model learnt. The user's model is never touched. (The paper's second test, data
randomisation, needs a model retrained on permuted labels and is not run here.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from scipy import stats
from torch import nn

from .. import explain as _explain

__all__ = ["spearman", "randomizable_layers", "randomized_copy", "cascading_randomization"]


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
