"""The Guide's defaults and the checks of its arguments: a bad image, number, index or flag is
refused with a sentence that names the fix, never converted into something the user did not mean.

The NoC refiners (``noc.py``) check their images and options with the same functions, so the
block, f-BRS-B and BRS refuse the same bad values.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "DEFAULTS",
    "OPTIMIZERS",
    "LBFGS_MAX_ITER",
    "model_channels",
    "check_image",
    "check_real",
    "check_index",
    "check_steps",
    "finite",
    "check_flag",
    "check_options",
]

OPTIMIZERS = ("adam", "lbfgs", "sgd")
# Tuned on ShapeScenes seeds 5001 and 6001 (reproduce.py); evaluated on seed 12001 (EVAL_SEED).
# (The zoo trains on seeds 1000 + epoch and tests on 777; neither is used here.)
DEFAULTS: dict[str, Any] = {
    "adam": {"lr": 0.03, "steps": 30},
    "lbfgs": {"lr": 1.0, "steps": 20},
    "sgd": {"lr": 1.0, "steps": 30},
    "penalty": 1e-3,
    "bias_weight": 10.0,
    "keep": 2.0,
    # Why 1 and not 0: a hint that only just flips its pixel leaves the neighbours on the old
    # side; one logit of lead carries the change across the region (tuning seeds, 20 questions:
    # +17.4 -> +18.5 mIoU; 0.5 and 2 gave +18.0 and +18.1).
    "margin": 1.0,
}
LBFGS_MAX_ITER = 40  # f-BRS's budget


def model_channels(model: nn.Module) -> int:
    """The channels the model's first conv takes (3 when it cannot be told).

    Args:
        model: the segmenter.

    Returns:
        The number of input channels an image for ``model`` must have.
    """
    # Lazily: importing explain loads every method's module, and a Guide needs only this helper.
    from ..explain.targets import input_channels

    c = input_channels(model)
    return 3 if c is None else c


def check_image(image: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """``image`` as one (C, H, W) float image in [0, 1], finite; else TypeError/ValueError naming the fix.

    Args:
        image: (C, H, W) or (1, C, H, W) float tensor.
        channels: the C the model takes.

    Returns:
        The (C, H, W) image (the batch dimension dropped), not copied.
    """
    want = f"({channels}, H, W)"
    what = "one RGB image" if channels == 3 else f"one {channels}-channel image, as the model's first conv takes"
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"image must be a torch.Tensor of shape {want} with values in [0, 1], got "
            f"{type(image).__name__}; from a (H, W, 3) uint8 array use "
            "torch.as_tensor(arr).permute(2, 0, 1).float() / 255"
        )
    if not image.is_floating_point():
        raise TypeError(f"image must be a float tensor in [0, 1], got dtype {image.dtype}; use image.float() / 255")
    if image.dim() == 4 and image.shape[0] == 1:
        image = image[0]
    if image.dim() != 3 or image.shape[0] != channels:
        fix = "for (H, W, 3) use image.permute(2, 0, 1)"
        if image.dim() == 3 and image.shape[0] in (1, 3, 4) and channels != image.shape[0]:
            fix = f"the model's first conv takes {channels} channel{'s' if channels != 1 else ''}: " + (
                "for a grey image repeat the channel: image.expand(3, -1, -1)"
                if image.shape[0] == 1 and channels == 3
                else "drop the alpha channel: image[:3]"
                if image.shape[0] == 4 and channels == 3
                else "average the colours: image.mean(0, keepdim=True)"
                if channels == 1
                else f"give it a {want} image"
            )
        raise ValueError(f"image must have shape {want} ({what}, channels first), got {tuple(image.shape)}; {fix}")
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"image has no pixels (shape {tuple(image.shape)}); a guide needs an image of at least 1x1")
    if not bool(torch.isfinite(image).all()):
        bad = int((~torch.isfinite(image)).sum())
        raise ValueError(
            f"image holds {bad} NaN or infinite values; a guide needs finite pixels in [0, 1]: "
            "fix or mask them first (e.g. torch.nan_to_num(image).clamp(0, 1))"
        )
    lo, hi = float(image.min()), float(image.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"image values must lie in [0, 1] (the model normalises inside), got [{lo:.3g}, {hi:.3g}]; "
            "pass the raw image, not a normalised one"
        )
    return image


def check_real(name: str, value: object, *, strict: bool = False, why: str = "") -> float:
    """``value`` as a float if it is a finite real >= 0 (> 0 when ``strict``); else TypeError/ValueError.

    Why refuse instead of convert: NaN turns every comparison false and a negative weight turns a
    penalty into a reward; either way the guide would run and silently return nonsense.

    Args:
        name: the option's name, for the message.
        value: what the user passed.
        strict: refuse 0 too.
        why: what the option means, for the message.

    Returns:
        ``value`` as a float.
    """
    need = f"a finite number {'>' if strict else '>='} 0" + (f" ({why})" if why else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {need}, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (strict and v == 0):
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return v


def check_index(value: object, what: str) -> int:
    """``value`` as an int if it is a Python, numpy or 0-d torch integer (not a bool, float or str).

    Why: ``int(2.5)`` and ``int(True)`` would silently put a hint on another pixel or class.

    Args:
        value: what the user passed.
        what: what it is, for the message ("the hint's y coordinate").

    Returns:
        ``value`` as an int.
    """
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        if value.dtype is not torch.bool and not value.is_complex():
            return int(value)
    elif not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Integral):
        return int(value)
    fix = "; round it yourself (round(v)) so that the one you mean is used" if isinstance(value, float) else ""
    raise TypeError(f"{what} must be a whole number (an int), got {value!r} ({type(value).__name__}){fix}")


def check_steps(steps: object, what: str) -> int:
    """``steps`` as an int >= 0 (a bool or float is refused).

    Args:
        steps: what the user passed.
        what: what the budget is, for the message.

    Returns:
        ``steps`` as an int.
    """
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an int ({what}), got {steps!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0 ({what}), got {steps}")
    return int(steps)


def finite(*values: float) -> bool:
    """True when every value is finite (neither NaN nor infinite).

    Args:
        values: the numbers.

    Returns:
        Whether all are finite.
    """
    return all(math.isfinite(v) for v in values)


def check_flag(name: str, value: object) -> bool:
    """``value`` as a bool if it is a Python or numpy bool (1 or "yes" are refused).

    Args:
        name: the flag's name, for the message.
        value: what the user passed.

    Returns:
        ``value`` as a bool.
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_options(
    optimizer: str,
    lr: float | None,
    steps: int | None,
    penalty: float | None,
    bias_weight: float | None,
    keep: float | None,
    margin: float | None,
) -> dict[str, Any]:
    """The Guide's numeric options, defaults filled in, each checked (see :class:`Guide`).

    Args:
        optimizer: one of :data:`OPTIMIZERS`, whose defaults fill the gaps.
        lr, steps, penalty, bias_weight, keep, margin: as :class:`Guide`; None = the default.

    Returns:
        The options by name (``steps`` capped at :data:`LBFGS_MAX_ITER` for L-BFGS).
    """
    steps = check_steps(DEFAULTS[optimizer]["steps"] if steps is None else steps, "the default step budget of run()")
    pick = lambda v, name: DEFAULTS[name] if v is None else v  # noqa: E731
    return {
        "lr": check_real("lr", DEFAULTS[optimizer]["lr"] if lr is None else lr, strict=True, why="the step size"),
        "steps": min(steps, LBFGS_MAX_ITER) if optimizer == "lbfgs" else steps,
        "penalty": check_real("penalty", pick(penalty, "penalty"), why="the weight of the L2 penalty; 0 = none"),
        "bias_weight": check_real("bias_weight", pick(bias_weight, "bias_weight"), why="how much dearer a bias is"),
        "keep": check_real("keep", pick(keep, "keep"), why="the weight of the KL term; 0 = the paper's loss"),
        "margin": check_real(
            "margin", pick(margin, "margin"), why="the logit lead a hint needs; 0 = the argmax agrees"
        ),
    }
