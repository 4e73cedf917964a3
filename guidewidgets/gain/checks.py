"""Input checks of :class:`GainTrainer`: every argument is refused with a sentence naming the fix
when the trainer is built, not at the first step of a background run."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import hooks
from .losses import GainConfig, check_masks, check_pixels

if TYPE_CHECKING:
    from .trainer import GainTrainer


def float_images(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255) if x.dtype == torch.uint8 else x.float()


def check_images(x: object, what: str) -> None:
    """Refuse anything but a non-empty (N, C, H, W) float or uint8 tensor without NaN or inf."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a (N, C, H, W) tensor (float in [0, 1] or uint8), got {type(x).__name__}")
    if x.dim() != 4:
        hint = "; add the batch dimension with x[None]" if x.dim() == 3 else ""
        raise ValueError(f"{what} must be a (N, C, H, W) tensor (float in [0, 1] or uint8), got {tuple(x.shape)}{hint}")
    if not (x.is_floating_point() or x.dtype == torch.uint8):
        raise TypeError(f"{what} must be float in [0, 1] or uint8 (0-255), got {x.dtype}; use x.float() / 255")
    if len(x) == 0 or x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(x.shape)}); give at least one image")
    check_pixels(x, what)


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def as_labels(labels: object, what: str) -> torch.Tensor:
    """``labels`` as a tensor: a list of ints becomes class indices (N,), a list of equal-length
    lists of numbers multi-hot (N, K); anything else that is not a tensor is refused."""
    if isinstance(labels, torch.Tensor):
        return labels
    if type(labels).__module__ == "numpy" and hasattr(labels, "tolist"):
        labels = labels.tolist()  # type: ignore[union-attr]
    if isinstance(labels, Sequence) and not isinstance(labels, str):
        items = list(labels)
        if all(_is_int(v) for v in items):
            return torch.tensor([int(v) for v in items], dtype=torch.long)
        rows = [r for r in items if isinstance(r, Sequence) and not isinstance(r, str)]
        numeric = all(isinstance(v, numbers.Real) for r in rows for v in r)  # multi-hot: 0/1 or True/False
        if items and len(rows) == len(items) and len({len(r) for r in rows}) == 1 and numeric:
            return torch.tensor([[float(v) for v in r] for r in rows])
    shown = repr(labels) if len(repr(labels)) < 60 else repr(labels)[:57] + "..."
    raise TypeError(
        f"{what} must be a tensor or a list of class indices (ints), one per image, or multi-hot rows, got {shown}"
    )


def check_labels(labels: torch.Tensor, classes: int, what: str) -> None:
    """(N,) integer class indices in 0..classes-1, or (N, classes) multi-hot values in [0, 1]."""
    if labels.dim() == 1:
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"{what} (N,) must hold integer class indices, got {labels.dtype}; use labels.long()")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ValueError(
                f"{what} must lie in 0..{classes - 1} (the model has {classes} outputs), "
                f"got {int(labels.min())}..{int(labels.max())}"
            )
    elif labels.dim() == 2:
        if labels.shape[1] != classes:
            raise ValueError(
                f"multi-hot {what} must be (N, {classes}) to match the model's outputs, got {tuple(labels.shape)}"
            )
        if labels.is_complex():
            raise TypeError(f"multi-hot {what} must be real numbers in [0, 1], got {labels.dtype}")
        v = labels.float()
        if labels.numel() and not (bool(torch.isfinite(v).all()) and float(v.min()) >= 0 and float(v.max()) <= 1):
            raise ValueError(f"multi-hot {what} must be 0/1 (or probabilities in [0, 1]) with no NaN")
    else:
        raise ValueError(f"{what} must be (N,) class indices or (N, K) multi-hot, got shape {tuple(labels.shape)}")


def training_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    """The training device: ``device`` checked (a typo, or CUDA where there is none), or the model's."""
    if device is None:
        return next(model.parameters()).device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or None (the model's), got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for CUDA, which is not available here; use device='cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0")
    return dev


def check_class_counts(model: nn.Module, labels: torch.Tensor) -> None:
    """Refuse class indices that leave one of the model's named classes without a sample."""
    num_classes = getattr(model, "classes", None)
    if labels.dim() != 1 or num_classes is None:
        return
    counts = torch.bincount(labels, minlength=len(num_classes))
    empty = [str(num_classes[i]) for i in range(len(num_classes)) if counts[i] == 0]
    if empty:
        raise ValueError(
            f"class(es) {', '.join(empty)} have no training samples; add scenes of them or train a model "
            "with fewer outputs (attention mining needs every class it predicts to be seen)"
        )


def check_options(config: object, mine: object, callbacks: object) -> None:
    """Refuse a config that is not a GainConfig, a ``mine`` that is not a bool or None, and
    callbacks that are not a list of functions."""
    if config is not None and not isinstance(config, GainConfig):
        raise TypeError(f"config must be a GainConfig (or None for the paper's knobs), got {type(config).__name__}")
    if mine is not None and not isinstance(mine, bool):
        raise TypeError(f"mine must be True, False or None (decide from alpha and masks), got {mine!r}")
    if isinstance(callbacks, str) or not isinstance(callbacks, Sequence) or not all(map(callable, callbacks)):
        raise TypeError("callbacks must be a list of functions, each called with one event dict")


def check_mask_rows(
    trainer: GainTrainer, masks: torch.Tensor | None, has_mask: torch.Tensor | None
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The masks and the rows that carry one, checked (see :func:`losses.check_masks`).

    Args:
        trainer: the trainer being built (its images, labels and ``mask_batch`` are set).
        masks, has_mask: GainTrainer's arguments.

    Returns:
        ``(masks, rows)``: the masks (None without) and the indices of the pixel-labelled images.
    """
    none = torch.zeros(0, dtype=torch.long)
    if masks is None:
        if has_mask is not None:
            raise ValueError("has_mask says which images carry a pixel mask; pass masks=... with it (or neither)")
        return None, none
    check_masks(masks, trainer.images, trainer.labels)
    if has_mask is None:
        flags = torch.ones(len(trainer.images), dtype=torch.bool)
    elif not isinstance(has_mask, torch.Tensor) or has_mask.is_floating_point() or has_mask.is_complex():
        got = has_mask.dtype if isinstance(has_mask, torch.Tensor) else type(has_mask).__name__
        raise TypeError(f"has_mask must be a (N,) bool tensor, one flag per image, got {got}")
    elif tuple(has_mask.shape) != (len(trainer.images),):
        raise ValueError(f"has_mask must be (N,) bool, one flag per image, got {tuple(has_mask.shape)}")
    elif has_mask.dtype != torch.bool and not bool(((has_mask == 0) | (has_mask == 1)).all()):
        raise ValueError("has_mask must hold True/False (or 1/0), one flag per image")
    else:
        flags = has_mask.bool().cpu()
    rows = flags.nonzero(as_tuple=True)[0]
    if len(rows) == 0:
        raise ValueError("has_mask marks no image, so the masks would never be used; mark some or drop masks")
    if trainer.mask_batch == 0:
        raise ValueError("mask_batch=0 adds no pixel-labelled image to a step, so the masks would never be used")
    return masks, rows


def check_probes(
    trainer: GainTrainer, probes: torch.Tensor | None, probe_labels: torch.Tensor | Sequence[int] | None, classes: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The probe images and their labels, checked against the model (one image, eval mode).

    Args:
        trainer: the trainer being built. probes, probe_labels: its arguments. classes: model outputs.

    Returns:
        ``(probes, labels)``, each None when not given.
    """
    if probes is None:
        if probe_labels is not None:
            raise ValueError("probe_labels name the classes of the probe images; pass probes=... with them")
        return None, None
    check_images(probes, "probes")
    trainer._check_layer(probes[:1], "probes")
    if probe_labels is None:
        return probes, None
    labels = as_labels(probe_labels, "probe_labels")
    if labels.dim() != 1 or len(labels) != len(probes):
        raise ValueError(
            f"probe_labels must be ({len(probes)},) class indices, one per probe, got shape {tuple(labels.shape)}"
        )
    check_labels(labels, classes, "probe_labels")
    return probes, labels


def check_eval_sets(
    trainer: GainTrainer, eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] | None, classes: int
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The eval sets, each ``(images, labels)`` checked and run once through the model.

    Args:
        trainer: the trainer being built. eval_sets: its argument. classes: model outputs.

    Returns:
        ``{name: (images, labels)}`` ({} for None).
    """
    if eval_sets is None:
        return {}
    if not isinstance(eval_sets, dict):
        raise TypeError(f"eval_sets must be a dict {{name: (images, labels)}}, got {type(eval_sets).__name__}")
    checked = {}
    for name, pair in eval_sets.items():
        what = f"eval set {name!r}"
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"{what} must be an (images, labels) pair, got {type(pair).__name__}")
        xs, ys = pair
        check_images(xs, f"{what}'s images")
        ys = as_labels(ys, f"{what}'s labels")
        if ys.dim() != 1 or len(ys) != len(xs):
            raise ValueError(
                f"{what} needs ({len(xs)},) class indices, one per image (accuracy is top-1), got labels of "
                f"shape {tuple(ys.shape)}; for multi-hot labels use labels.argmax(1)"
            )
        check_labels(ys, classes, f"{what}'s labels")
        with torch.no_grad(), hooks.model_lock(trainer.model), hooks.eval_mode(trainer.model):
            out = trainer._forward_one(xs[:1], f"{what}'s images")
        if out.dim() != 2 or out.shape[1] != classes:
            raise ValueError(f"the model gives {what} outputs of shape {tuple(out.shape)}, not (1, {classes})")
        checked[name] = (xs, ys)
    return checked
