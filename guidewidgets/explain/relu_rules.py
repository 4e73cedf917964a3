"""ReLU backward rules for guided backprop and deconvnet, and a count of the ReLUs run.

Like :func:`guidewidgets.hooks.relu_backward` this intercepts the ReLU calls themselves (a
TorchFunctionMode), so nothing in the model changes and functional ReLUs are reached too. The
guided rule here lets the model's own ReLU run (in place if the model asked for it) and only
rectifies the gradient arriving at its output, which costs one clamp per ReLU in the backward:
measured on ResNet-18 (CPU, 1 thread) about 10 % less than a custom autograd Function that
re-implements the ReLU.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["ReLURule"]

_RELUS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}


def _positive(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp_min(0)


class _DeconvReLU(torch.autograd.Function):
    """Forward ReLU; backward rectifies the gradient itself, ignoring the forward input."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp_min(0)


class ReLURule(TorchFunctionMode):
    """``with ReLURule(rule) as r:`` every ReLU in the block back-propagates by ``rule``:

    - ``"guided"``: the ReLU's own backward (gradient through positive inputs) applied to the
      rectified incoming gradient, i.e. only positive gradients through positive inputs;
    - ``"deconv"``: the rectified incoming gradient, whatever the forward input was;
    - ``None``: unchanged.

    ``r.calls`` counts the ReLUs run so far.
    """

    def __init__(self, rule: Literal["guided", "deconv"] | None) -> None:
        super().__init__()
        if rule not in ("guided", "deconv", None):
            raise ValueError(f"unknown ReLU rule {rule!r}; use 'guided', 'deconv' or None")
        self.rule = rule
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _RELUS:
            return func(*args, **kwargs)
        self.calls += 1
        if self.rule == "deconv":
            # Out of place even for inplace=True: every caller uses the returned tensor.
            return _DeconvReLU.apply(args[0])
        out = func(*args, **kwargs)
        if self.rule == "guided" and isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(_positive)
        return out
