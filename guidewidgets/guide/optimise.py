"""The Guide's optimisation: the objective (hint loss, L2 penalty, KL to the plain prediction),
one optimiser step with its NaN guard, and ``run`` until every hint holds.

Only the block's few parameters are differentiated, with ``torch.autograd.grad``: the model's
weights never get gradients. The optimiser's memory restarts whenever the hints change (a warm
start: the block keeps its values).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .checks import LBFGS_MAX_ITER, check_steps, finite
from .guided_forward import _Forwarding
from .hints import Hint, HintTargets, hint_loss, hints_satisfied

__all__: list[str] = []


class _Adam:
    """Adam (Kingma & Ba) for a handful of tensors.

    Why not ``torch.optim.Adam``: building the first torch optimiser in a process costs ~2.5 s
    of imports on a laptop CPU, which a user would feel on their first hint.
    """

    def __init__(
        self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8, plain: bool = False
    ):
        self.params, self.lr, self.betas, self.eps, self.plain = params, lr, betas, eps, plain
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            if self.plain:
                p.add_(p.grad, alpha=-self.lr)
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(self.eps), value=-self.lr / c1)


class _Optimising(_Forwarding):
    """The part of a Guide that fits the block to the hints."""

    optimizer_name: str
    max_steps: int
    penalty: float
    bias_weight: float
    keep: float
    margin: float
    num_classes: int
    losses: list[float]
    _hints: list[Hint]
    _targets: HintTargets
    _opt: _Adam | torch.optim.LBFGS | None
    _plain_logp: torch.Tensor | None  # what the keep term holds the output near
    _text_params: dict[str, torch.Tensor] | None  # the text hints' share of the block

    def _new_optimizer(self) -> None:
        params = self.block.parameters()
        if self.optimizer_name == "adam":
            self._opt = _Adam(params, lr=self.lr)
        elif self.optimizer_name == "sgd":
            self._opt = _Adam(params, lr=self.lr, plain=True)
        else:
            self._opt = torch.optim.LBFGS(
                params, lr=self.lr, max_iter=1, max_eval=25, history_size=10, line_search_fn="strong_wolfe"
            )

    def _objective(self, logits: torch.Tensor) -> torch.Tensor:
        # After a text hint the clicks refine the words' parameters: the penalty measures the
        # distance from them and the keep term holds the output near the text-guided prediction.
        loss = hint_loss(logits, self._targets) + self.penalty * self.block.penalty(self.bias_weight, self._text_params)
        if self.keep:
            if self._plain_logp is None:
                # After text hints the reference is the text-guided prediction, which the block
                # still holds at the first step after them (hints do not move the block).
                ref = self._plain if self._text_params is None else logits.detach()
                self._plain_logp = ref.log_softmax(1)
            # KL(plain || guided) over the image: changes far from the hints cost something.
            kl = (self._plain_logp.exp() * (self._plain_logp - logits.log_softmax(1))).sum(1).mean()
            loss = loss + self.keep * kl
        return loss

    def _grad_step(self, logits: torch.Tensor) -> float:
        """One optimiser update from logits computed at the current block (with graph)."""
        if self._opt is None:
            self._new_optimizer()
        params = self.block.parameters()
        first = [logits]
        # The logits were finite at these values (_forward checks), which _view holds (it is
        # replaced, never changed, at every change of the block): the state to fall back to.
        self._good = self._view

        def closure() -> torch.Tensor:
            lg = first.pop() if first else self._forward(grad=True)
            loss = self._objective(lg)
            grads = torch.autograd.grad(loss, params)
            for p, g in zip(params, grads):
                p.grad = g
            return loss.detach()

        try:
            if isinstance(self._opt, _Adam):
                loss = closure()
                self._opt.step()
            else:
                assert self._opt is not None
                loss = self._opt.step(closure)
        finally:
            for p in params:
                p.grad = None
        if not finite(float(loss), *(float(p.detach().sum()) for p in params)):
            self._rollback()
            raise ValueError(
                f"the optimiser step made the guide's block NaN or infinite (lr={self.lr:g} is too large "
                "for this model); the block is back at its last finite values: make the Guide with a "
                "smaller lr, or call reset()"
            )
        self._block_changed()
        value = float(loss)
        self.losses.append(value)
        return value

    def _hints_changed(self, added: Hint | None = None) -> None:
        if added is not None:
            # Why incremental: rebuilding from every hint made add_hint quadratic (800 hints ~11 s).
            self._targets.add(added)
        else:
            self._targets = HintTargets(self._hints, self.num_classes, self.height, self.width, self.image.device)
        self._opt = None  # warm start: keep the block, restart the optimiser's memory

    def step(self) -> float | None:
        """One optimiser step on the hints; returns the objective before the step.

        With no hints there is nothing to fit: the block does not move and None is returned (the
        penalty and the keep term alone would only pull an earlier guide back towards zero).
        """
        with self._session():
            if self._targets.count == 0:
                return None
            return self._grad_step(self._forward(grad=True))

    def satisfied(self) -> bool:
        """True when the guided prediction agrees with every hint."""
        with self._session():
            return hints_satisfied(self.logits(), self._targets)

    def run(self, steps: int | None = None, callback: Callable[[int, float], None] | None = None) -> int:
        """Optimise until every hint holds or ``steps`` steps are spent; returns steps taken.

        A hint holds when its pixel predicts the hinted class with a lead of ``margin`` logits
        over the next class (``margin=0``: as soon as the argmax agrees). A margin the model
        cannot reach (e.g. a net with random weights and flat logits) spends the whole budget.

        ``callback(step, loss)`` is called after each step (a widget redraws there). The model's
        lock is held for one step at a time, so other callers (a background explain) get in between.
        """
        budget = self.max_steps if steps is None else check_steps(steps, "the most optimiser steps to take")
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be a function callback(step, loss) or None, got {type(callback).__name__}")
        if self.optimizer_name == "lbfgs":
            budget = min(budget, LBFGS_MAX_ITER)
        with self._session():
            if self._targets.count == 0:
                return 0
        for i in range(budget):
            with self._session():
                logits = self._forward(grad=True)
                if hints_satisfied(logits.detach(), self._targets, self.margin):
                    self._cached = (self._version, logits.detach())
                    return i
                loss = self._grad_step(logits)
            if callback is not None:
                callback(i, loss)
        return budget
