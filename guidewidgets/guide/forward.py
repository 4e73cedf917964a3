"""Run a model with the guiding block at one layer, computing the head only once per image.

The guide optimises only the tail (guiding layer -> output), so re-running the head on every
step would be wasted work. A forward hook cannot skip the modules before it, and cutting the
model into two callables needs surgery that breaks on skip connections. Instead:

1. One recording forward notes, with hooks on every module, which module calls end before the
   guiding layer starts (the *head* calls) and keeps the outputs of the outermost ones.
2. A *fast* forward runs the model on the real image with hooks on those modules: their inputs
   are swapped for empty (batch 0) tensors, so they cost almost nothing, and their outputs are
   swapped for the kept ones. Skip connections from the head into the tail still see the true
   head outputs, and the model's own code between modules runs as written.
3. Once per image the fast forward is checked against a full forward, at zero and with a random
   guide; if it differs or fails (a module that cannot take an empty batch, data-dependent
   control flow) every step falls back to full forwards, which are always correct.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..hooks import hooked

__all__ = ["HeadCache", "empty_batch"]


def empty_batch(obj: Any) -> Any:
    """The same structure with every tensor cut to batch size 0 (so a module computes nothing)."""
    if isinstance(obj, torch.Tensor):
        return obj[:0] if obj.dim() > 0 else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(empty_batch(o) for o in obj)
    return obj


def _clone(obj: Any) -> Any:
    # Why clone on replay: an in-place op in the tail (ReLU(inplace=True)) must not eat the cache.
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_clone(o) for o in obj)
    if isinstance(obj, dict):
        return type(obj)((k, _clone(v)) for k, v in obj.items())
    return obj


class HeadCache:
    """Outputs of the head's outermost module calls for one image, and the hooks that replay them."""

    def __init__(self, model: nn.Module, layer: nn.Module, x: torch.Tensor) -> None:
        self.model, self.layer = model, layer
        self.skip: dict[nn.Module, set[int]] = {}
        self.outputs: dict[tuple[int, int], Any] = {}
        self.layer_calls = 0
        self._plan(x)

    @torch.no_grad()
    def _plan(self, x: torch.Tensor) -> None:
        records: list[list] = []  # [module, call index, start tick, end tick]
        stack: list[list] = []
        counts: dict[nn.Module, int] = {}
        tick = [0]

        def pre(m, _args):
            rec = [m, counts.get(m, 0), tick[0], None]
            counts[m] = rec[1] + 1
            tick[0] += 1
            stack.append(rec)
            records.append(rec)

        def post(m, _args, _out):
            rec = stack.pop()
            rec[3] = tick[0]
            tick[0] += 1

        with hooked() as h:
            for m in self.model.modules():
                if m is not self.model:
                    h.forward_pre(m, pre).forward(m, post)
            self.model(x)
        self.layer_calls = counts.get(self.layer, 0)
        start = next((r[2] for r in records if r[0] is self.layer), None)
        if start is None:
            return
        head_end = -1
        for m, k, s, e in records:  # records are in start order; keep calls not nested in another
            if e is not None and e < start and s > head_end:
                self.skip.setdefault(m, set()).add(k)
                head_end = e
        # Second pass keeps only the outermost outputs (a copy per call: later in-place ops).
        counts.clear()

        def keep(m, _args, out):
            k = counts.get(m, 0)
            counts[m] = k + 1
            if k in self.skip[m]:
                self.outputs[(id(m), k)] = _clone(out)

        with hooked() as h:
            for m in self.skip:
                h.forward(m, keep)
            self.model(x)

    @contextlib.contextmanager
    def replaying(self) -> Iterator[None]:
        """Within the block, head modules return their kept outputs without computing."""
        counts: dict[nn.Module, int] = {}
        marks: list[int] = []

        def pre(m, args):
            k = counts.get(m, 0)
            counts[m] = k + 1
            hit = k in self.skip[m]
            marks.append(k if hit else -1)
            return empty_batch(args) if hit else None

        def post(m, _args, out):
            k = marks.pop()
            if k >= 0:
                return _clone(self.outputs[(id(m), k)])
            return None

        with hooked() as h:
            for m in self.skip:
                h.forward_pre(m, pre).forward(m, post)
            yield
