"""GAIN's losses: classification, attention mining (self-guidance) and the pixel-label loss of GAIN_ext.

    L_self = L_cl + alpha L_am                 (GAIN)
    L_ext  = L_cl + alpha L_am + omega_e L_e   (GAIN_ext)

``L_am`` is the mean score s^c(I*^c) of each present class c on its masked image
``I*^c = I - T(A^c) * I``: if the attention covers everything that makes the network say c, the
erased image no longer looks like c. The score is the softmax probability for single-label
training (labels (B,)), the sigmoid of the logit for multi-label training (multi-hot (B, K)), as
the paper on PASCAL VOC. ``L_e = mean (A^c - H^c)^2`` over the images that carry a pixel-level
mask H^c. The paper writes both the soft mask's steepness and L_e's weight as omega (both 10);
here they are ``omega`` and ``omega_e``.

The masked pass never updates BatchNorm's running statistics. By default (``masked_bn="batch"``)
it normalises with the masked batch's own statistics; ``masked_bn="eval"`` runs BatchNorm and
Dropout in eval mode, as public re-implementations do. Why the default differs: trained from
scratch with ``"eval"``, a network learnt to lower its scores in eval mode only (the true-class
score on *untouched* test images fell to about 0.02), satisfying L_am without looking elsewhere,
and eval mode is where it is tested; on the tuning scenes ``"batch"`` gave GAIN_ext better
accuracy and attention (see the README's GAIN section).
"""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import hooks
from .attention import Attention, attention, masked_image, soft_mask

__all__ = ["GainConfig", "GainLosses", "gain_losses", "mining_loss", "check_masks"]

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.Dropout, nn.Dropout2d, nn.Dropout3d)


@dataclass
class GainConfig:
    """GAIN's knobs, with the paper's defaults.

    alpha: weight of L_am (0 turns attention mining off). omega: steepness of the soft mask.
    sigma: its threshold on the normalised map. omega_e: weight of L_e (GAIN_ext).
    score: ``"softmax"``, ``"sigmoid"`` or ``"auto"`` (softmax for (B,) labels, sigmoid for multi-hot).
    masked_bn: how BatchNorm treats the masked pass: ``"batch"`` (the masked batch's own
    statistics, running statistics left untouched; the default) or ``"eval"`` (running
    statistics, Dropout off: what public re-implementations do). See the module docstring.
    """

    alpha: float = 1.0
    omega: float = 10.0
    sigma: float = 0.5
    omega_e: float = 10.0
    score: str = "auto"
    masked_bn: str = "batch"

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ValueError/TypeError on a knob outside its range (NaN and inf included)."""
        check_number("alpha", self.alpha, 0.0, why="the weight of L_am; 0 turns attention mining off")
        check_number(
            "omega",
            self.omega,
            0.0,
            strict=True,
            why="the soft mask's steepness, 10 in the paper; at 0 the mask is 0.5 everywhere and ignores the attention",
        )
        check_number("omega_e", self.omega_e, 0.0, why="the weight of L_e; 0 turns the pixel-label loss off")
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, numbers.Real) or not 0.0 <= self.sigma <= 1.0:
            raise ValueError(
                f"sigma is a threshold on maps normalised to [0, 1]; use a value in [0, 1] (the paper: 0.5), "
                f"got {self.sigma!r}"
            )
        if self.score not in ("auto", "softmax", "sigmoid"):
            raise ValueError(f"score must be 'auto', 'softmax' or 'sigmoid', got {self.score!r}")
        if self.masked_bn not in ("eval", "batch"):
            raise ValueError(f"masked_bn must be 'eval' or 'batch', got {self.masked_bn!r}")


def check_number(
    name: str, value: object, low: float, *, strict: bool = False, high: float = math.inf, why: str = ""
) -> float:
    """``value`` as a float if it is a finite real number >= ``low`` (> ``low`` when ``strict``) and
    <= ``high``; otherwise a TypeError (not a number, or a bool) or ValueError naming ``name`` and ``why``."""
    need = f"a finite number {'>' if strict else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
    need += f" ({why})" if why else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {need}, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or v < low or (strict and v == low) or v > high:
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return v


def check_whole(name: str, value: object, low: int, why: str = "") -> int:
    """``value`` as an int if it is a whole number (not a bool, not a float such as 2.0 or 2.5) >= ``low``."""
    need = f"a whole number >= {low}" + (f" ({why})" if why else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fix = f"; use {int(value)}" if isinstance(value, float) and value.is_integer() else ""
        raise TypeError(f"{name} must be {need}, got {value!r} ({type(value).__name__}){fix}")
    if int(value) < low:
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return int(value)


@dataclass
class GainLosses:
    """One batch's losses (``total`` is what to back-propagate) and the tensors behind them
    (``attention``, and ``mask``: the soft masks T(A^c), one per (image, class) pair)."""

    total: torch.Tensor
    cl: torch.Tensor
    am: torch.Tensor
    e: torch.Tensor
    attention: Attention | None = None
    mask: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)

    def numbers(self) -> dict[str, float]:
        """The losses as floats: ``total``, ``cl``, ``am``, ``e``."""
        return {k: float(getattr(self, k).detach()) for k in ("total", "cl", "am", "e")}


def check_masks(masks: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Raise ValueError unless ``masks`` fits: (B, H, W) for (B,) labels, (B, K, H, W) for multi-hot,
    bool or numbers in [0, 1] (no NaN)."""
    want = (len(images), *images.shape[-2:]) if labels.dim() == 1 else (*labels.shape, *images.shape[-2:])
    if not isinstance(masks, torch.Tensor) or tuple(masks.shape) != tuple(want):
        got = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(
            f"pixel masks must have shape {tuple(want)} (one (H, W) map of the true class per image"
            f"{'' if labels.dim() == 1 else ' and class'}, 1 on the object), got {got}; resize them to the images"
        )
    if masks.dtype == torch.bool or masks.numel() == 0:
        return
    if masks.is_complex():
        raise TypeError(f"masks must be bool or real numbers in [0, 1], got {masks.dtype}")
    if masks.is_floating_point() and bool(masks.isnan().any()):
        raise ValueError(
            "masks contain NaN; masks must be 0/1 or probabilities in [0, 1]: fill the unknown pixels "
            "(torch.nan_to_num(masks, nan=0.0)) or mark those images has_mask=False"
        )
    lo, hi = float(masks.min()), float(masks.max())
    if hi > 1:
        fix = ": divide by 255" if hi <= 255 else ": scale them to [0, 1]"
        raise ValueError(f"masks must be 0/1 or probabilities in [0, 1]; got values up to {hi:g}{fix}")
    if lo < 0:
        raise ValueError(
            f"masks must be 0/1 or probabilities in [0, 1]; got values down to {lo:g}: clamp or rescale them"
        )


def check_pixels(images: torch.Tensor, what: str = "images") -> None:
    """Raise ValueError if float ``images`` hold NaN or inf: one such pixel makes every loss, and
    after one step every weight, NaN."""
    if not images.is_floating_point():
        return
    bad = ~torch.isfinite(images)
    if bool(bad.any()):
        first = int(bad.flatten(1).any(1).nonzero()[0, 0]) if images.dim() > 1 else 0
        raise ValueError(
            f"{what} hold {int(bad.sum())} NaN or infinite pixel value(s) (the first in image {first}); one such "
            "pixel turns every weight into NaN: replace them (torch.nan_to_num(x, nan=0.0, posinf=1.0, "
            "neginf=0.0)) or drop those images"
        )


def _scores(logits: torch.Tensor, cls: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "softmax":
        return logits.softmax(dim=1).gather(1, cls[:, None])[:, 0]
    return torch.sigmoid(logits.gather(1, cls[:, None])[:, 0])


@contextlib.contextmanager
def _running_stats_frozen(model: nn.Module) -> Iterator[None]:
    """Train-mode BatchNorm that normalises with the batch's statistics but leaves the running ones as they were."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [(m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    try:
        for m in bns:
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            if count is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(count)


def mining_loss(
    model: nn.Module,
    images: torch.Tensor,
    cls: torch.Tensor,
    mask: torch.Tensor,
    score: str = "softmax",
    masked_bn: str = "batch",
) -> torch.Tensor:
    """L_am for given soft masks: the mean score of class ``cls`` (P,) on ``I* = I - mask * I``
    (images (P, 3, H, W), mask (P, H, W)); BatchNorm as ``masked_bn`` says (see GainConfig)."""
    if score not in ("softmax", "sigmoid"):
        raise ValueError(f"score must be 'softmax' or 'sigmoid', got {score!r}")
    star = masked_image(images, mask)
    if masked_bn == "eval":
        ctx = hooks.eval_mode(model, [m for m in model.modules() if isinstance(m, _NORM_TYPES)])
    elif masked_bn == "batch":
        ctx = _running_stats_frozen(model)
    else:
        raise ValueError(f"masked_bn must be 'eval' or 'batch', got {masked_bn!r}")
    with ctx:
        logits = hooks.model_output(model(star))
    return _scores(logits, cls, score).mean()


def gain_losses(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    layer: str | nn.Module,
    config: GainConfig | None = None,
    *,
    masks: torch.Tensor | None = None,
    has_mask: torch.Tensor | None = None,
    mine: bool | None = None,
) -> GainLosses:
    """L_cl, L_am, L_e and their weighted sum for one batch (see the module docstring).

    Args:
        model: the classifier being trained (train mode, usually).
        images: (B, 3, H, W); labels: (B,) class indices or (B, K) multi-hot.
        layer: the feature layer whose Grad-CAM is the attention.
        config: the knobs (defaults: the paper's).
        masks: pixel-level labels H^c, (B, H, W) or (B, K, H, W) in [0, 1]; only rows with
            ``has_mask`` count (all rows if ``has_mask`` is None).
        has_mask: (B,) bool: which images carry a pixel-level label.
        mine: compute the attention and L_am (default: when alpha > 0 or masks are given). With
            ``mine=True`` and alpha = 0 the gradient is exactly that of plain training.
    """
    cfg = config or GainConfig()
    cfg.check()
    check_pixels(images)
    multi = labels.dim() == 2
    kind = cfg.score if cfg.score != "auto" else ("sigmoid" if multi else "softmax")
    if masks is not None:
        check_masks(masks, images, labels)
        if has_mask is None:
            has_mask = torch.ones(len(images), dtype=torch.bool, device=images.device)
        elif tuple(has_mask.shape) != (len(images),):
            raise ValueError(f"has_mask must be a (B,) bool tensor, one flag per image, got {tuple(has_mask.shape)}")
        if not bool(has_mask.any()):
            masks = None
    if mine is None:
        mine = cfg.alpha > 0 or masks is not None
    zero = images.new_zeros(())
    if not mine:
        logits = hooks.model_output(model(images))
        cl = F.binary_cross_entropy_with_logits(logits, labels.float()) if multi else F.cross_entropy(logits, labels)
        return GainLosses(total=cl, cl=cl, am=zero, e=zero)

    att = attention(model, images, labels, layer, create_graph=True)
    logits = att.logits
    cl = F.binary_cross_entropy_with_logits(logits, labels.float()) if multi else F.cross_entropy(logits, labels)
    t = soft_mask(att.maps, cfg.sigma, cfg.omega)
    am = mining_loss(model, images[att.image], att.cls, t, kind, cfg.masked_bn) if len(att.cls) else zero
    e = zero
    if masks is not None:
        assert has_mask is not None
        h = masks.float()
        h = h[att.image] if not multi else h[att.image, att.cls]
        rows = has_mask[att.image]
        if bool(rows.any()):
            e = ((att.maps[rows] - h[rows]) ** 2).mean()
    total = cl + cfg.alpha * am + (cfg.omega_e * e if masks is not None else 0.0)
    return GainLosses(total=total, cl=cl, am=am, e=e, attention=att, mask=t)
