"""The refiners of the NoC table: four ways to turn clicks into a new prediction of one frozen
segmenter, with the same loss, optimiser and stopping rule (see ``noc.py`` and :data:`SETTINGS`).

- :class:`NoRefinement` (``none``): clicks change nothing; the baseline.
- :class:`InputRefiner` (``brs``): BRS on the input, an additive correction of the image.
- :class:`GuideRefiner` with ``spatial=False`` (``f-brs-b``): f-BRS-B's per-channel scale and bias.
- :class:`GuideRefiner` with ``spatial=True`` (``guide-me``): the paper's guiding block.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import eval_mode, hooked, model_lock, model_output
from .checks import DEFAULTS, check_image, check_index, check_options, model_channels
from .clicker import Click
from .hints import Hint, HintTargets, hint_loss, hints_satisfied
from .session import Guide, active_guide

__all__ = [
    "Refiner",
    "NoRefinement",
    "GuideRefiner",
    "InputRefiner",
    "REFINERS",
    "SETTINGS",
    "make_refiner",
]

#: The shared optimisation settings of the three refiners (see the module docstring).
SETTINGS: dict[str, Any] = {
    "steps": DEFAULTS["lbfgs"]["steps"],  # L-BFGS iterations per click (f-BRS: 20 evaluations)
    "lr": DEFAULTS["lbfgs"]["lr"],
    "penalty": DEFAULTS["penalty"],  # f-BRS's reg_weight 1e-3 (RGB-BRS: 1e-3 sum(delta^2))
    "bias_weight": DEFAULTS["bias_weight"],  # f-BRS's reg_bias_weight 10
    "margin": DEFAULTS["margin"],
    # The package's KL term to the plain prediction (the papers' losses have none: keep=0). Checked
    # on noc.TUNING_SEED (44 objects, 20 clicks), mean over the three refiners: keep 0 -> 2 took NoC@85
    # 9.3 -> 8.5 and NoC@90 13.2 -> 13.0, and the pixels a click broke outside its object 4.6 % -> 0.6 %.
    "keep": DEFAULTS["keep"],
}


def _as_map(out: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if out.dim() != 4:
        raise ValueError(f"the model's output has shape {tuple(out.shape)}; clicks need a (1, K, H, W) segmentation")
    if tuple(out.shape[-2:]) != (height, width):
        out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
    return out


class Refiner:
    """A way to turn clicks into a new prediction of a frozen segmenter, for one image.

    ``click(y, x, cls, positive)`` adds a click and refines; ``logits()`` / ``prediction()`` read
    the result; ``reset()`` goes back to zero (the plain prediction); ``close()`` (or the end of a
    ``with`` block) leaves the model as it was.
    """

    name = "refiner"
    model: nn.Module

    def click(self, y: int, x: int, cls: int, positive: bool = True) -> int:
        """Add a click and refine; returns the optimiser steps taken."""
        raise NotImplementedError

    def logits(self) -> torch.Tensor:
        """(1, K, H, W) logits after the clicks so far."""
        raise NotImplementedError

    def prediction(self) -> torch.Tensor:
        """(H, W) int64 class map after the clicks so far."""
        return self.logits().argmax(1)[0]

    def reset(self) -> None:
        """Forget the clicks and go back to the plain prediction."""

    def close(self) -> None:
        """Leave the model as it was (safe to call twice)."""

    def __enter__(self) -> Refiner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_positive(positive: object) -> bool:
    if not isinstance(positive, (bool, np.bool_)):
        raise TypeError(f"positive must be True or False, got {positive!r} ({type(positive).__name__})")
    return bool(positive)


class _Plain(Refiner):
    """Holds the model, the image and its plain logits; checks clicks like ``Guide.add_hint``."""

    def __init__(self, model: nn.Module, image: torch.Tensor) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if active_guide(model) is not None:
            raise ValueError(
                "this model carries an open Guide, whose block would act on every forward here; "
                "close it (guide.close() or leave its `with` block) before scoring another refiner"
            )
        image = check_image(image, model_channels(model))
        param = next(model.parameters(), None)
        device = param.device if param is not None else image.device
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        self.model = model
        self._modules = list(model.modules())
        self._x = image.detach().to(device=device, dtype=dtype)[None]
        self.height, self.width = int(image.shape[-2]), int(image.shape[-1])
        with torch.no_grad():
            self._plain = self._run(None)
        self.num_classes = int(self._plain.shape[1])

    def _run(self, delta: torch.Tensor | None) -> torch.Tensor:
        """The model's logits on the image, plus ``delta`` added to its input by a pre-hook."""
        with model_lock(self.model), eval_mode(self.model, self._modules), hooked() as h:
            if delta is not None:
                h.forward_pre(self.model, lambda _m, args: (args[0] + delta, *args[1:]))
            out = self.model(self._x)
        return _as_map(model_output(out), self.height, self.width)

    def _check_click(self, y: object, x: object, cls: object, positive: object) -> Click:
        yi, xi = check_index(y, "the click's y coordinate"), check_index(x, "the click's x coordinate")
        if not (0 <= yi < self.height and 0 <= xi < self.width):
            raise ValueError(
                f"click at (y={yi}, x={xi}) lies outside the {self.height}x{self.width} image; "
                f"y must be in [0, {self.height - 1}] and x in [0, {self.width - 1}]"
            )
        k = check_index(cls, "the click's class")
        if not 0 <= k < self.num_classes:
            raise ValueError(
                f"class index {k} is outside the model's {self.num_classes} classes (0..{self.num_classes - 1})"
            )
        return Click(yi, xi, k, _check_positive(positive))

    def logits(self) -> torch.Tensor:
        return self._plain.clone()


class NoRefinement(_Plain):
    """The baseline: clicks are checked (as the other refiners check them) but change nothing."""

    name = "none"

    def click(self, y: int, x: int, cls: int, positive: bool = True) -> int:
        self._check_click(y, x, cls, positive)
        return 0


class GuideRefiner(Refiner):
    """The guiding block through a :class:`Guide`: ``spatial=True`` is Guide Me's alpha, beta and
    gamma; ``spatial=False`` the channel-only block, f-BRS-B's per-channel scale and bias.

    Args:
        model, image, layer: as :class:`Guide` (``layer=None``: the model's guide layer).
        spatial: optimise alpha and beta too.
        steps, lr, penalty, bias_weight, margin, keep: as :class:`Guide` (defaults: :data:`SETTINGS`).
        optimizer: as :class:`Guide` (default ``"lbfgs"``, as f-BRS).
    """

    def __init__(
        self,
        model: nn.Module,
        image: torch.Tensor,
        *,
        spatial: bool,
        layer: str | None = None,
        optimizer: str = "lbfgs",
        **options: Any,
    ) -> None:
        opts = {**SETTINGS, **options}
        self.name = "guide-me" if spatial else "f-brs-b"
        self.model = model
        self.guide = Guide(model, image, layer, spatial=spatial, optimizer=optimizer, **opts)

    def click(self, y: int, x: int, cls: int, positive: bool = True) -> int:
        self.guide.add_hint(y, x, cls, negative=not _check_positive(positive))
        return self.guide.run()

    def logits(self) -> torch.Tensor:
        return self.guide.logits()

    def reset(self) -> None:
        self.guide.reset(clear_hints=True)

    def close(self) -> None:
        self.guide.close()


class InputRefiner(_Plain):
    """BRS on the input ("RGB-BRS" in f-BRS): an additive correction ``delta`` of the image.

    ``delta`` (1, C, H, W) is added to the model's input by a forward pre-hook placed through
    :func:`guidewidgets.hooks.hooked` for each forward (so nothing stays on the model), and is
    optimised with L-BFGS on the hint loss plus ``penalty * sum(delta^2)`` (BRS's inertia term).
    The corrected image may leave [0, 1], as in BRS: clamping would stop the gradient there.
    At zero no hook is placed: the prediction is the plain one, bit for bit.
    """

    name = "brs"

    def __init__(
        self,
        model: nn.Module,
        image: torch.Tensor,
        *,
        steps: int = SETTINGS["steps"],
        lr: float = SETTINGS["lr"],
        penalty: float = SETTINGS["penalty"],
        margin: float = SETTINGS["margin"],
        keep: float = SETTINGS["keep"],
        bias_weight: float | None = None,
        layer: str | None = None,
    ) -> None:
        super().__init__(model, image)
        # Checked as the Guide checks its own options, so both refuse the same bad values.
        # (bias_weight and layer are the blocks' options; the input correction has neither.)
        opts = check_options("lbfgs", lr, steps, penalty, bias_weight, keep, margin)
        self.steps, self.lr, self.penalty = opts["steps"], opts["lr"], opts["penalty"]
        self.margin, self.keep = opts["margin"], opts["keep"]
        self.delta = torch.zeros_like(self._x, requires_grad=True)
        self._targets = HintTargets([], self.num_classes, self.height, self.width, self._x.device)
        self._plain_logp = self._plain.log_softmax(1)
        self._cached: torch.Tensor | None = None

    def _forward(self, grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            if not grad and not bool(self.delta.detach().any()):
                return self._plain.clone()
            return self._run(self.delta)

    def _objective(self, logits: torch.Tensor) -> torch.Tensor:
        loss = hint_loss(logits, self._targets) + self.penalty * self.delta.square().sum()
        if self.keep:
            kl = (self._plain_logp.exp() * (self._plain_logp - logits.log_softmax(1))).sum(1).mean()
            loss = loss + self.keep * kl
        return loss

    def click(self, y: int, x: int, cls: int, positive: bool = True) -> int:
        c = self._check_click(y, x, cls, positive)
        pixels = torch.tensor([[c.y, c.x]], dtype=torch.long, device=self._x.device)
        self._targets.add(Hint(points=((c.y, c.x),), cls=c.cls, negative=not c.positive, radius=0, pixels=pixels))
        self._cached = None
        # Warm start: delta stays; the optimiser's memory restarts with each click (as the Guide).
        opt = torch.optim.LBFGS(
            [self.delta], lr=self.lr, max_iter=1, max_eval=25, history_size=10, line_search_fn="strong_wolfe"
        )
        for i in range(self.steps):
            logits = self._forward(grad=True)
            if hints_satisfied(logits.detach(), self._targets, self.margin):
                self._cached = logits.detach()
                return i
            self._step(opt, logits)
        return self.steps

    def _step(self, opt: torch.optim.LBFGS, logits: torch.Tensor) -> None:
        first = [logits]
        good = self.delta.detach().clone()

        def closure() -> torch.Tensor:
            loss = self._objective(first.pop() if first else self._forward(grad=True))
            (self.delta.grad,) = torch.autograd.grad(loss, [self.delta])
            return loss.detach()

        try:
            loss = float(opt.step(closure))
        finally:
            self.delta.grad = None
        if not (math.isfinite(loss) and bool(torch.isfinite(self.delta).all())):
            with torch.no_grad():
                self.delta.copy_(good)
            raise ValueError(
                f"the input correction turned NaN or infinite (lr={self.lr:g} is too large for this model); "
                "it is back at its last finite values: use a smaller lr, or call reset()"
            )

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        if self._cached is None:
            self._cached = self._forward(grad=False)
        return self._cached.clone()

    @torch.no_grad()
    def reset(self) -> None:
        self.delta.zero_()
        self._targets = HintTargets([], self.num_classes, self.height, self.width, self._x.device)
        self._cached = None


#: The refiners of the table, in its order: name -> one line for the table's legend.
REFINERS: dict[str, str] = {
    "none": "no refinement: clicks change nothing (the baseline)",
    "brs": "BRS on the input (f-BRS's RGB-BRS): an additive correction of the image",
    "f-brs-b": "f-BRS-B: per-channel scale and bias at the guide layer (Guide(spatial=False))",
    "guide-me": "Guide Me: the guiding block alpha (rows), beta (columns), gamma (channels) at the same layer",
}


def make_refiner(name: str, model: nn.Module, image: torch.Tensor, **options: Any) -> Refiner:
    """The refiner called ``name`` (one of :data:`REFINERS`) on ``image``; ``options`` override
    :data:`SETTINGS` (``steps``, ``lr``, ``penalty``, ``margin``, ``keep``; ``layer`` for the blocks)."""
    if name not in REFINERS:
        raise ValueError(f"unknown refiner {name!r}; pick one of {', '.join(map(repr, REFINERS))}")
    if name == "none":
        return NoRefinement(model, image)
    if name == "brs":
        return InputRefiner(model, image, **{**SETTINGS, **options})
    return GuideRefiner(model, image, spatial=name == "guide-me", **options)
