"""What every training recipe of the package shares: its knobs, its threads, its optimiser step.

The recipes (``zoo.train``, ``attend.train_stn``, ``attend.train_captioner``) differ in their data
and losses; these helpers are the parts that were written out the same in each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

__all__ = ["recipe", "printer", "torch_threads", "step"]


def recipe(base: Mapping[str, Any], overrides: Mapping[str, Any], word: str = "entries") -> dict[str, Any]:
    """``base`` with ``overrides`` replacing its entries; a key ``base`` lacks is refused.

    Args:
        base: the recipe's own hyper-parameters.
        overrides: the caller's replacements.
        word: what the error calls the keys ("entries", "keys").

    Returns:
        A new dict, ``{**base, **overrides}``.
    """
    unknown = set(overrides) - set(base)
    if unknown:
        raise ValueError(f"unknown recipe {word} {sorted(unknown)}; known: {sorted(base)}")
    return {**base, **overrides}


def printer(log: Callable[[str], None] | None) -> Callable[[str], None]:
    """``log``, or a ``print`` that flushes (a recipe run from a terminal shows each epoch at once)."""
    return log or (lambda msg: print(msg, flush=True))


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Runs the block on ``threads`` intra-op threads, then restores the previous count.

    Why: the shipped weights are bit-for-bit reproducible only for a given thread count.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def step(
    opt: torch.optim.Optimizer,
    loss: torch.Tensor,
    sched: torch.optim.lr_scheduler.LRScheduler | None = None,
    clip: tuple[Iterable[torch.Tensor], float] | None = None,
) -> None:
    """One optimiser step on ``loss``: zero the gradients, backpropagate, clip, step, schedule.

    Args:
        opt: the optimiser.
        loss: a scalar.
        sched: a per-step learning-rate schedule, stepped after the optimiser.
        clip: ``(parameters, max_norm)`` for gradient-norm clipping, or None.
    """
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip[0], clip[1])
    opt.step()
    if sched is not None:
        sched.step()
