"""A guiding session for one image: hints in, guided prediction out, the model never changed.

:class:`Guide` is put together from one part per job, each in its own module: taking the model
over and closing (``ownership.py``), running the model with the block (``guided_forward.py``),
fitting the block to the hints (``optimise.py``), snapshots and text hints (``state.py``); the
defaults and argument checks are in ``checks.py``. This module adds the hints, the questions and
the constructor, and keeps every name the package imported from here before the split.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import owners
from ..hooks import feature_maps, get_layer
from .block import GuidingBlock
from .checks import (
    DEFAULTS,
    LBFGS_MAX_ITER,
    OPTIMIZERS,
    check_flag,
    check_image,
    check_index,
    check_options,
    model_channels,
)
from .hints import Hint, HintTargets, rasterize_stroke
from .ownership import SUPERSEDED
from .state import GuideState, _Stateful

__all__ = [
    "Guide",
    "GuideState",
    "active_guide",
    "bottleneck_layer",
    "DEFAULTS",
    "OPTIMIZERS",
    "LBFGS_MAX_ITER",
    "SUPERSEDED",
]


def active_guide(model: nn.Module) -> Guide | None:
    """The open :class:`Guide` whose guiding block is attached to ``model``, or None.

    Why: any forward of a model that carries a guide is guided; the widgets ask here before
    trusting a "plain" forward (explain asks :func:`guidewidgets.owners.owner_of`, the same table).

    Args:
        model: the segmenter.

    Returns:
        The open Guide on ``model``, or None.
    """
    owner = owners.owner_of(model)
    return owner if isinstance(owner, Guide) and not owner.closed else None


def bottleneck_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the spatially smallest feature map with the most channels (the paper's advice).

    Used when the model has no ``default_guide_layer``. Ties go to the module that finishes
    last, so a block wins over its last child that returns the same map.

    Args:
        model: the segmenter.
        x: (1, C, H, W) an input the model takes.

    Returns:
        The layer's dotted name.
    """
    maps = feature_maps(model, x)
    if not maps:
        raise ValueError(f"{type(model).__name__} has no layer with a (B, C, H, W) output; pass layer=...")
    best = min(range(len(maps)), key=lambda i: (maps[i].grid[0] * maps[i].grid[1], -maps[i].shape[0], -i))
    return maps[best].name


class Guide(_Stateful):
    """Guide Me on one image: a guiding block at ``layer``, hints, and the optimiser that fits them.

    The block is attached with hooks for the life of the session (``close()`` or the end of a
    ``with`` block removes it; so does garbage collection). One guide per model at a time: a new
    Guide on a model that still carries an open one closes the older one (its methods then raise
    RuntimeError, and :attr:`closed_reason` says why); :func:`active_guide` tells whether a model
    is guided. Every call holds :func:`guidewidgets.hooks.model_lock` (``run`` one step at a time),
    so a background explain and a guide step never interleave hooks, and a call racing with a
    takeover gets that RuntimeError, nothing else. While the guide is open the block applies to
    every forward of the model, in any thread; a forward outside the guide's own calls (a plain
    ``model(x)``, another thread) sees the block as of the last completed step, of any batch
    size, and is never cut or replayed. The model's weights never get
    gradients: only the block's parameters are differentiated, with ``torch.autograd.grad``.
    Bad options, hints and images raise ValueError/TypeError naming the fix (a float or bool
    where an int is needed is refused, not rounded); a step whose output would turn NaN raises
    ValueError and puts the block back at its last finite values.

    Args:
        model: a segmenter taking (B, 3, H, W) in [0, 1] and returning (B, K, H, W) logits (or a
            dict with ``"out"``, as torchvision's).
        image: (3, H, W) (or (1, 3, H, W)) float tensor in [0, 1], finite (NaN/inf refused); a
            model whose first conv takes C channels gets (C, H, W). It is
            copied to the model's device and cast to the dtype of the model's parameters (a
            float16 image on a float32 model runs in float32; a float64 model gets float64).
        layer: dotted module name; ``None`` = ``model.default_guide_layer`` or the bottleneck.
        spatial: optimise alpha and beta too (False = channel-only block, as f-BRS).
        optimizer: ``"adam"`` (default), ``"lbfgs"`` (one L-BFGS iteration per step, at most 40,
            as f-BRS) or ``"sgd"`` (plain gradient descent).
        lr, steps: optimiser step size (> 0) and the default step budget of :meth:`run` (an int >= 0).
        penalty: weight (>= 0) of the L2 penalty on the block (bias terms count ``bias_weight`` times).
        keep: weight (>= 0) of KL(plain || guided) averaged over the image; 0 is the paper's loss. It
            makes the smallest change *in the output* that satisfies the hints, so a hint fixes
            its neighbourhood without flipping pixels far away.
        margin: logit lead (>= 0) a hinted pixel needs before :meth:`run` stops (0 = the argmax agrees).
        fast: reuse the head's outputs between steps (checked once; falls back to full forwards).

    Defaults are in :data:`DEFAULTS` (tuned on ShapeScenes seeds 5001 and 6001).
    """

    def __init__(
        self,
        model: nn.Module,
        image: torch.Tensor,
        layer: str | None = None,
        *,
        spatial: bool = True,
        optimizer: str = "adam",
        lr: float | None = None,
        steps: int | None = None,
        penalty: float | None = None,
        bias_weight: float | None = None,
        fast: bool = True,
        keep: float | None = None,
        margin: float | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be 'adam' (default), 'lbfgs' or 'sgd', got {optimizer!r}")
        options = check_options(optimizer, lr, steps, penalty, bias_weight, keep, margin)
        spatial, fast = check_flag("spatial", spatial), check_flag("fast", fast)
        image = check_image(image, model_channels(model))
        self._take_over(model, lambda: self._setup(model, image, layer, spatial, optimizer, fast, options))

    def _setup(
        self,
        model: nn.Module,
        image: torch.Tensor,
        layer: str | None,
        spatial: bool,
        optimizer: str,
        fast: bool,
        options: dict[str, Any],
    ) -> None:
        """Everything the guide holds, from the image on the model's device to the attached block."""
        param = next(model.parameters(), None)
        device = param.device if param is not None else image.device
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        self.model = model
        self._all_modules = list(model.modules())
        self.image = image.detach().to(device=device, dtype=dtype)
        self._x = self.image.unsqueeze(0)
        self.height, self.width = self.image.shape[-2:]
        if layer is None:
            layer = getattr(model, "default_guide_layer", None) or bottleneck_layer(model, self._x)
        self._module = get_layer(model, layer)
        self.layer = next(n for n, m in model.named_modules() if m is self._module)
        self._set_options(optimizer, options, dtype)
        self._set_plain_output()
        _, c, h, w = self._activation.shape
        self.block = GuidingBlock(c, h, w, spatial=spatial, device=device, dtype=self._activation.dtype)
        self._hints = []
        self._targets = HintTargets([], self.num_classes, self.height, self.width, device)
        self.losses = []
        self._opt = None
        self._version = 0
        self._cached = None
        self._local = threading.local()
        self._view = self.block.frozen()
        self._good = self.block.frozen()
        self._attach()
        self.fast_path = False
        self.fast_path_note = "disabled (fast=False)"
        self._head = None
        if fast:
            self._check_fast_path()

    def _set_options(self, optimizer: str, options: dict[str, Any], dtype: torch.dtype) -> None:
        self.optimizer_name = optimizer
        self.lr = options["lr"]
        limit = torch.finfo(dtype).max / 10  # Adam's first step moves by up to 10 lr
        if self.lr > limit:
            raise ValueError(
                f"lr={self.lr:g} is too large: one step would overflow the block's {dtype} values; use an "
                f"lr of at most {limit:.3g} (the default is {DEFAULTS[optimizer]['lr']})"
            )
        self.max_steps = options["steps"]
        self.penalty = options["penalty"]
        self.bias_weight = options["bias_weight"]
        self.keep = options["keep"]
        self.margin = options["margin"]
        self._plain_logp = None
        self._texts = []
        self._text_params = None
        self._text_mode = "sum"
        self._text_guide = None

    def _set_plain_output(self) -> None:
        """The layer's plain activation and the plain logits, checked to be something to steer."""
        self._activation, plain = self._plain_forward()
        if not bool(torch.isfinite(plain).all()):
            raise ValueError(
                "the model's output for this image holds NaN or infinite logits, so there is nothing a "
                "guide can steer; check the model's weights and the image (the plain model fails on it)"
            )
        if plain.shape[1] < 2:
            raise ValueError(
                f"the model returns {plain.shape[1]} class map; a guide needs a (1, K, H, W) output with "
                "K >= 2 classes (for one foreground logit, return torch.cat([-z, z], 1))"
            )
        self._plain = plain
        self.num_classes = plain.shape[1]
        classes = getattr(self.model, "classes", None)
        self.classes = (
            list(classes)
            if classes is not None and len(classes) == self.num_classes
            else [str(k) for k in range(self.num_classes)]
        )

    def _check_pixel(self, y: object, x: object, what: str = "hint") -> tuple[int, int]:
        yi, xi = check_index(y, f"the {what}'s y coordinate"), check_index(x, f"the {what}'s x coordinate")
        if not (0 <= yi < self.height and 0 <= xi < self.width):
            raise ValueError(
                f"{what} at (y={yi}, x={xi}) lies outside the {self.height}x{self.width} image; "
                f"y must be in [0, {self.height - 1}] and x in [0, {self.width - 1}]"
            )
        return yi, xi

    def _check_class(self, cls: object) -> int:
        if isinstance(cls, str):
            if cls not in self.classes:
                raise ValueError(f"unknown class {cls!r}; the model's classes are {self.classes}")
            return self.classes.index(cls)
        try:
            k = check_index(cls, "class")
        except TypeError:
            raise TypeError(
                f"class must be an int index (0..{self.num_classes - 1}) or a class name "
                f"({', '.join(map(repr, self.classes))}), got {cls!r} ({type(cls).__name__})"
            ) from None
        if not 0 <= k < self.num_classes:
            raise ValueError(
                f"class index {k} is outside the model's {self.num_classes} classes "
                f"(0..{self.num_classes - 1}: {', '.join(self.classes)})"
            )
        return k

    def _check_points(self, points: object) -> list[tuple[int, int]]:
        example = "e.g. [(3, 4), (3, 10)]; for one point [(3, 4)]"
        if isinstance(points, (str, bytes)) or not isinstance(points, Iterable):
            raise TypeError(f"points must be a sequence of (y, x) pairs, {example}; got {type(points).__name__}")
        pts = []
        for p in points:
            if isinstance(p, (np.ndarray, torch.Tensor)):
                pair = p.ndim == 1 and p.shape[0] == 2
            else:
                pair = isinstance(p, Sequence) and not isinstance(p, (str, bytes)) and len(p) == 2
            if not pair:
                raise ValueError(f"points must be a sequence of (y, x) pairs, {example}; got the item {p!r}")
            pts.append(self._check_pixel(p[0], p[1], "stroke point"))  # type: ignore[index]
        if not pts:
            raise ValueError(f"points must hold at least one (y, x) pair, {example}")
        return pts

    # --- public API -----------------------------------------------------------------------------

    @property
    def params(self) -> dict[str, torch.Tensor]:
        """The block's current alpha (H), beta (W), gamma_s (C), gamma_b (C), detached."""
        return self.block.as_dict()

    @property
    def hints(self) -> list[Hint]:
        """The hints given so far, oldest first."""
        return list(self._hints)

    @property
    def targets(self) -> HintTargets:
        """The hints as the paper's y_hat / m_hat (and n_hat for negative hints)."""
        return self._targets

    def add_hint(self, y: int, x: int, cls: int | str, negative: bool = False) -> Hint:
        """Say "pixel (y, x) is class ``cls``" (``negative=True``: "class ``cls`` is not here").

        ``y``, ``x`` and an index ``cls`` are whole numbers (Python, numpy or 0-d torch integers);
        a float or bool is refused rather than rounded onto another pixel or class.
        """
        with self._session():
            yi, xi = self._check_pixel(y, x)
            k = self._check_class(cls)
            neg = check_flag("negative", negative)
            pixels = torch.tensor([[yi, xi]], dtype=torch.long, device=self.image.device)
            hint = Hint(points=((yi, xi),), cls=k, negative=neg, radius=0, pixels=pixels)
            self._hints.append(hint)
            self._hints_changed(hint)
            return hint

    def add_stroke(
        self, points: Sequence[tuple[int, int]], cls: int | str, radius: int = 1, negative: bool = False
    ) -> Hint:
        """A brush stroke through ``points`` [(y, x), ...] with ``radius`` (pixels) as one hint."""
        with self._session():
            pts = self._check_points(points)
            k = self._check_class(cls)
            r = check_index(radius, "radius")
            if r < 0:
                raise ValueError(f"radius must be >= 0 (the brush radius in pixels), got {r}")
            neg = check_flag("negative", negative)
            mask = rasterize_stroke(pts, r, self.height, self.width, self.image.device)
            hint = Hint(points=tuple(pts), cls=k, negative=neg, radius=r, pixels=mask.nonzero())
            self._hints.append(hint)
            self._hints_changed(hint)
            return hint

    def clear_hints(self) -> None:
        """Forget every hint (the block keeps its values; call :meth:`reset` to zero it)."""
        with self._session():
            self._hints.clear()
            self._hints_changed()

    def reset(self, clear_hints: bool = False) -> None:
        """Set the block back to zero (the plain prediction) and forget the loss history and texts."""
        with self._session():
            self.block.zero_()
            self._texts, self._text_params, self._plain_logp = [], None, None
            self._opt = None
            self._block_changed()
            self.losses.clear()
            if clear_hints:
                self.clear_hints()

    @torch.no_grad()
    def margins(self) -> torch.Tensor:
        """(H, W) difference between the two most probable classes (small = uncertain)."""
        top2 = self.logits().softmax(1).topk(2, dim=1).values[0]
        return top2[0] - top2[1]

    def ask(self, exclude: torch.Tensor | None = None) -> tuple[int, int]:
        """The pixel the network wants labelled: smallest top-2 probability margin, not yet hinted.

        ``exclude``: optional (H, W) bool map of pixels the user cannot answer (e.g. the void
        band of a PASCAL VOC ground truth); they are never asked.
        """
        if exclude is not None:
            self._check_exclude(exclude)
        with self._session():
            margin = self.margins().masked_fill(self._targets.hinted, math.inf)
            if exclude is not None:
                margin = margin.masked_fill(exclude.to(margin.device), math.inf)
            idx = int(margin.argmin())
            if math.isinf(float(margin.view(-1)[idx])):
                raise RuntimeError("every pixel already has a hint; there is nothing left to ask")
            return idx // self.width, idx % self.width

    def _check_exclude(self, exclude: object) -> None:
        want = f"exclude must be an (H, W) bool tensor of the image's size ({self.height}, {self.width})"
        if not isinstance(exclude, torch.Tensor):
            fix = "; use torch.from_numpy(exclude)" if isinstance(exclude, np.ndarray) else ""
            raise TypeError(f"{want}, got {type(exclude).__name__}{fix}")
        if tuple(exclude.shape) != (self.height, self.width):
            raise ValueError(f"{want}, got shape {tuple(exclude.shape)}")
        if exclude.dtype != torch.bool:
            raise TypeError(f"{want}, got dtype {exclude.dtype}; for a 0/1 mask use exclude == 1")

    def __enter__(self) -> Guide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Guide(layer={self.layer!r}, block={self.block.shape}, spatial={self.block.spatial}, "
            f"optimizer={self.optimizer_name!r}, hints={len(self._hints)}, fast_path={self.fast_path})"
        )
