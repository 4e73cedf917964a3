"""Check inputs and resolve targets to one score per sample.

Every explanation method goes through the same steps: :func:`check_input` rejects a wrong
image tensor with a sentence that names the fix, :class:`Target` turns the user's ``target``
(None, int, sequence of ints, or callable) into one differentiable score per sample, and
:func:`guidewidgets.hooks.eval_mode` runs the model in eval mode and restores every module's
``training`` flag.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["TargetLike", "Target", "callable_name", "check_input", "input_channels"]

TargetLike = None | int | Sequence[int] | torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def input_channels(model: nn.Module) -> int | None:
    """The channel count the model takes: its first conv's ``in_channels`` (None without a conv)."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.in_channels)
    return None


def check_input(model: nn.Module, x: object) -> torch.Tensor:
    """Return ``x`` if it is a finite float (B, C, H, W) tensor that the model takes (C its first
    conv's input channels, any C for a model without a conv; the model's dtype and device), else
    raise a ValueError/TypeError naming the fix. An inference tensor (made under
    ``torch.inference_mode()``) is returned as a normal copy, since gradients need one."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    c = input_channels(model)
    want = f"(B, {c}, H, W)" if c is not None else "(B, C, H, W)"
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"x must be a torch.Tensor of shape {want} with values in [0, 1], got "
            f"{type(x).__name__}; convert an image with torchvision.transforms.functional.to_tensor"
        )
    if x.dim() == 3 and (x.shape[0] == c or (c is None and x.shape[0] in (1, 3, 4))):
        raise ValueError(
            f"x must have a batch dimension: expected {want}, got {tuple(x.shape)}; use x.unsqueeze(0) for a single image"
        )
    if x.dim() != 4 or (c is not None and x.shape[1] != c):
        hint = ""
        if x.dim() == 4 and c is not None and x.shape[-1] == c:
            hint = "; channels seem to be last: use x.permute(0, 3, 1, 2)"
        elif x.dim() == 4 and x.shape[1] == 1 and c is not None:
            hint = f"; for a grey image repeat the channel: x.expand(-1, {c}, -1, -1)"
        elif x.dim() == 4 and c == 1 and x.shape[1] in (3, 4):
            hint = "; this model takes grey images: use x[:, :3].mean(1, keepdim=True)"
        elif x.dim() == 4 and c == 3 and x.shape[1] == 4:
            hint = "; for an RGBA image drop the alpha channel: x[:, :3]"
        what = f"{type(model).__name__} takes {c} channel{'s' if c != 1 else ''} (its first conv's in_channels), so "
        raise ValueError(f"{what if c is not None else ''}x must have shape {want}, got {tuple(x.shape)}{hint}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a float tensor with values in [0, 1], got dtype {x.dtype}; for 8-bit images use x.float() / 255"
        )
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"x is empty: shape {tuple(x.shape)}")
    p = next(model.parameters(), None)
    if p is not None and p.device != x.device:
        raise ValueError(f"x is on {x.device} but the model is on {p.device}; move x with x.to('{p.device}')")
    if p is not None and p.is_floating_point() and p.dtype != x.dtype:
        raise TypeError(
            f"x is {x.dtype} but the model's weights are {p.dtype}; convert one to the other, e.g. x.to({p.dtype})"
        )
    if torch.is_inference_mode_enabled():
        raise ValueError(
            "explain was called inside torch.inference_mode(), where no method can take gradients or "
            "leave the model's tensors usable; call it outside that block (explain turns gradients "
            "off itself where it does not need them)"
        )
    if x.is_inference():
        x = x.clone()  # made under inference_mode: a normal copy can be differentiated
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        n = int(bad.sum())
        raise ValueError(
            f"x has {n} NaN or infinite value{'s' if n != 1 else ''}; maps of such an input mean nothing. "
            "Replace them first, e.g. x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0)"
        )
    return x


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


class Target:
    """A validated ``target`` for a batch of ``batch`` samples.

    ``None`` means each sample's predicted class; an int the same class for every sample; a
    sequence (or 1-D integer tensor) one class per sample; a callable maps the model output
    of a batch of ``batch`` samples to ``batch`` scores. Class indices are checked against the
    number of classes once an output is seen; a callable's scores must be finite and, where the
    method differentiates them, still on the autograd graph (a ValueError naming it otherwise).
    """

    def __init__(self, target: TargetLike, batch: int) -> None:
        self.batch = batch
        self.fn: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.ints: list[int] | None = None
        self.fixed: torch.Tensor | None = None  # classes on the model's device, once known
        if type(target).__module__ == "numpy" and hasattr(target, "tolist"):
            target = target.tolist()  # type: ignore[union-attr]  # numpy ints and integer arrays
        if target is None:
            pass
        elif callable(target) and not isinstance(target, torch.Tensor):
            self.fn = target
        elif _is_int(target):
            self.ints = [int(target)] * batch  # type: ignore[arg-type]
        elif isinstance(target, torch.Tensor):
            if target.is_floating_point() or target.is_complex() or target.dim() > 1:
                raise TypeError(
                    f"a tensor target must hold integer class indices, shape (B,), got dtype "
                    f"{target.dtype} and shape {tuple(target.shape)}"
                )
            self.ints = [int(v) for v in target.reshape(-1).tolist()]
            if target.dim() == 0:
                self.ints = self.ints * batch
        elif isinstance(target, Sequence) and not isinstance(target, str):
            if not all(_is_int(v) for v in target):
                raise TypeError(f"target sequence must hold integer class indices, got {list(target)!r}")
            self.ints = [int(v) for v in target]
        else:
            raise TypeError(
                "target must be None (predicted class), an int class index, a sequence of ints "
                "(one per sample) or a callable(output) -> (B,) scores; got "
                f"{type(target).__name__}"
            )
        if self.ints is not None and len(self.ints) != batch:
            raise ValueError(
                f"target has {len(self.ints)} class indices but x has {batch} samples; give one "
                "per sample, or a single int for all"
            )

    @property
    def needs_prediction(self) -> bool:
        return self.fn is None and self.ints is None and self.fixed is None

    def classes(self, out: torch.Tensor) -> torch.Tensor:
        """Class index per sample (B,) as a long tensor on ``out``'s device."""
        if self.fn is not None:
            raise ValueError(
                "CAM needs class indices (it reads the classifier's weights of a class); a "
                "callable target works with every other method: use 'grad-cam', which equals "
                "CAM up to scale where CAM applies"
            )
        if self.fixed is not None:
            return self.fixed
        k = out.shape[1]
        if self.ints is None:
            return predicted(out)
        bad = [c for c in self.ints if not 0 <= c < k]
        if bad:
            raise ValueError(
                f"target class {bad[0]} is out of range: the model has {k} classes, so use a "
                f"class index from 0 to {k - 1}"
            )
        return torch.tensor(self.ints, device=out.device, dtype=torch.long)

    def fix(self, out: torch.Tensor) -> Target:
        """A copy whose classes are fixed from ``out`` (predicted ones for ``None``), so that
        perturbed or noisy copies are scored for the class of the clean image."""
        if self.fn is not None:
            return self
        t = Target(None, self.batch)
        t.fixed = self.classes(out)  # stays on the device: no host round trip
        return t

    def scores(self, out: torch.Tensor, repeats: int = 1) -> torch.Tensor:
        """One score per row of ``out`` (rows ordered copy-major: row ``r*B + b`` is copy ``r``
        of sample ``b``), differentiable when ``out`` is."""
        b = self.batch
        if out.shape[0] != b * repeats:
            raise RuntimeError(f"model returned {out.shape[0]} rows for {b * repeats} images")
        if self.fn is not None:
            # Why slice per copy: the callable may close over per-sample data of shape (B, ...).
            parts = [self._call(out[r * b : (r + 1) * b]) for r in range(repeats)]
            s = parts[0] if repeats == 1 else torch.cat(parts)
            # Why one check on all copies: it is this call's only host sync, whatever ``repeats`` is.
            if not bool(torch.isfinite(s).all()):
                self._refuse_non_finite(s)
            return s
        cls = self.classes(out[:b]).repeat(repeats)
        return class_scores(out, cls)

    def _call(self, out: torch.Tensor) -> torch.Tensor:
        assert self.fn is not None
        s = self.fn(out)
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"the target callable must return a tensor of {self.batch} scores, got {type(s).__name__}")
        if s.dim() == 2 and s.shape[1] == 1:
            s = s[:, 0]
        if s.shape != (self.batch,):
            raise ValueError(
                f"the target callable must return one score per sample, shape ({self.batch},), "
                f"got {tuple(s.shape)}; e.g. lambda out: (out[:, c] * mask).sum((1, 2))"
            )
        # Why out.requires_grad: it is set exactly when the method differentiates the scores.
        if out.requires_grad and not s.requires_grad:
            raise ValueError(
                f"the target callable {callable_name(self.fn)} breaks the autograd graph: its scores do not "
                "require grad, so this method cannot differentiate them. Return a tensor computed from the "
                "model output without .detach(), .item(), .numpy() or torch.no_grad(), e.g. lambda out: out[:, 3]"
            )
        return s

    def _refuse_non_finite(self, s: torch.Tensor) -> None:
        row = int((~torch.isfinite(s)).nonzero()[0, 0])
        value = float(s[row].detach())
        raise ValueError(
            f"the target callable {callable_name(self.fn)} returned non-finite scores ({value}) for sample "
            f"{row % self.batch}; maps of such scores mean nothing. Make it return finite numbers, e.g. "
            "out.log_softmax(1) instead of out.softmax(1).log(), or clamp a denominator away from 0"
        )


def callable_name(fn: object) -> str:
    """A callable's name for messages and store keys: its qualified name, else its type's name."""
    return str(getattr(fn, "__qualname__", None) or type(fn).__name__)


def class_scores(out: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """Logit of class ``cls[b]`` for each row; for dense outputs (B, K, H, W) summed over pixels."""
    picked = out.gather(1, cls.view(-1, *([1] * (out.dim() - 1))).expand(-1, 1, *out.shape[2:]))
    return picked.reshape(out.shape[0], -1).sum(1)


def predicted(out: torch.Tensor) -> torch.Tensor:
    """Predicted class per sample; for segmentation the most frequent non-background class
    (class 0 is background by convention), or 0 when no pixel predicts anything else."""
    with torch.no_grad():
        if out.dim() == 2:
            return out.argmax(1)
        labels = out.argmax(1).reshape(out.shape[0], -1)
        counts = torch.zeros(out.shape[0], out.shape[1], device=out.device, dtype=torch.long)
        counts.scatter_add_(1, labels, torch.ones_like(labels))
        counts[:, 0] = 0
        best = counts.argmax(1)
        return torch.where(counts.amax(1) > 0, best, torch.zeros_like(best))
