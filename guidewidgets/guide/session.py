"""A guiding session for one image: hints in, guided prediction out, the model never changed."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import eval_mode, feature_maps, get_layer, hooked, model_lock, model_output
from .block import GuidingBlock
from .forward import HeadCache, empty_batch
from .hints import Hint, HintTargets, hint_loss, hints_satisfied, rasterize_stroke
from .queries import Query
from .text import TextGuide, load_text_guide

__all__ = ["Guide", "GuideState", "active_guide", "bottleneck_layer", "DEFAULTS", "OPTIMIZERS"]

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


# The open Guide of each model (one guide per model at a time). Weak on both sides: neither the
# model nor the guide is kept alive by this table.
_ACTIVE: weakref.WeakKeyDictionary[nn.Module, weakref.ref[Guide]] = weakref.WeakKeyDictionary()

SUPERSEDED = (
    "this Guide was closed because a newer Guide on the same model took over (one guide per model "
    "at a time, so the model is never guided by a session you can no longer reach); use the newer "
    "Guide, or make a new one"
)


def active_guide(model: nn.Module) -> Guide | None:
    """The open :class:`Guide` whose guiding block is attached to ``model``, or None.

    Why: any forward of a model that carries a guide is guided; explain and the widgets ask here
    before trusting a "plain" forward.
    """
    ref = _ACTIVE.get(model)
    guide = ref() if ref is not None else None
    return guide if guide is not None and not guide.closed else None


def _model_channels(model: nn.Module) -> int:
    # Lazily: explain imports guide lazily too, and a Guide needs only this one helper.
    from ..explain.targets import input_channels

    c = input_channels(model)
    return 3 if c is None else c


def _check_image(image: torch.Tensor, channels: int = 3) -> torch.Tensor:
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


def _check_real(name: str, value: object, *, strict: bool = False, why: str = "") -> float:
    """``value`` as a float if it is a finite real >= 0 (> 0 when ``strict``); else TypeError/ValueError.

    Why refuse instead of convert: NaN turns every comparison false and a negative weight turns a
    penalty into a reward; either way the guide would run and silently return nonsense.
    """
    need = f"a finite number {'>' if strict else '>='} 0" + (f" ({why})" if why else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {need}, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v) or v < 0 or (strict and v == 0):
        raise ValueError(f"{name} must be {need}, got {value!r}")
    return v


def _check_index(value: object, what: str) -> int:
    """``value`` as an int if it is a Python, numpy or 0-d torch integer (not a bool, float or str).

    Why: ``int(2.5)`` and ``int(True)`` would silently put a hint on another pixel or class.
    """
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        if value.dtype is not torch.bool and not value.is_complex():
            return int(value)
    elif not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Integral):
        return int(value)
    fix = "; round it yourself (round(v)) so that the one you mean is used" if isinstance(value, float) else ""
    raise TypeError(f"{what} must be a whole number (an int), got {value!r} ({type(value).__name__}){fix}")


def _check_steps(steps: object, what: str) -> int:
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, numbers.Integral):
        raise TypeError(f"steps must be an int ({what}), got {steps!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0 ({what}), got {steps}")
    return int(steps)


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def bottleneck_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the spatially smallest feature map with the most channels (the paper's advice).

    Used when the model has no ``default_guide_layer``. Ties go to the module that finishes
    last, so a block wins over its last child that returns the same map.
    """
    maps = feature_maps(model, x)
    if not maps:
        raise ValueError(f"{type(model).__name__} has no layer with a (B, C, H, W) output; pass layer=...")
    best = min(range(len(maps)), key=lambda i: (maps[i].grid[0] * maps[i].grid[1], -maps[i].shape[0], -i))
    return maps[best].name


def _options(
    optimizer: str,
    lr: float | None,
    steps: int | None,
    penalty: float | None,
    bias_weight: float | None,
    keep: float | None,
    margin: float | None,
) -> dict[str, Any]:
    """The Guide's numeric options, defaults filled in, each checked (see :class:`Guide`)."""
    steps = _check_steps(DEFAULTS[optimizer]["steps"] if steps is None else steps, "the default step budget of run()")
    pick = lambda v, name: DEFAULTS[name] if v is None else v  # noqa: E731
    return {
        "lr": _check_real("lr", DEFAULTS[optimizer]["lr"] if lr is None else lr, strict=True, why="the step size"),
        "steps": min(steps, LBFGS_MAX_ITER) if optimizer == "lbfgs" else steps,
        "penalty": _check_real("penalty", pick(penalty, "penalty"), why="the weight of the L2 penalty; 0 = none"),
        "bias_weight": _check_real("bias_weight", pick(bias_weight, "bias_weight"), why="how much dearer a bias is"),
        "keep": _check_real("keep", pick(keep, "keep"), why="the weight of the KL term; 0 = the paper's loss"),
        "margin": _check_real(
            "margin", pick(margin, "margin"), why="the logit lead a hint needs; 0 = the argmax agrees"
        ),
    }


@dataclasses.dataclass(frozen=True)
class GuideState:
    """What :meth:`Guide.snapshot` saves and :meth:`Guide.restore` puts back."""

    params: dict[str, torch.Tensor]
    hints: tuple[Hint, ...]
    losses: tuple[float, ...]
    texts: tuple[str, ...] = ()
    text_params: dict[str, torch.Tensor] | None = None


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


_SHIPPED_TEXT_GUIDE: list[TextGuide] = []


def _shipped_text_guide() -> TextGuide:
    # Why cached per process: every new Guide (a re-run cell, a widget's next image) would
    # otherwise read the file again before its first sentence.
    if not _SHIPPED_TEXT_GUIDE:
        _SHIPPED_TEXT_GUIDE.append(load_text_guide("shapes-segmenter"))
    return _SHIPPED_TEXT_GUIDE[0]


def _detach_hooks(handles: list) -> None:
    for h in handles:
        h.remove()
    handles.clear()


class Guide:
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
        options = _options(optimizer, lr, steps, penalty, bias_weight, keep, margin)
        spatial, fast = _check_flag("spatial", spatial), _check_flag("fast", fast)
        image = _check_image(image, _model_channels(model))
        self._handles: list = []
        self._closed_reason: str | None = None
        self._bypass = False  # hooks pass through (while a newer Guide on the model is being made)
        with model_lock(model):
            ref = _ACTIVE.get(model)
            older = ref() if ref is not None else None
            if older is not None and older.closed:
                older = None
            if older is not None:
                # Why bypass first, close later: the new plain forward must not see the old block,
                # yet a failing constructor must leave the old session working as it was.
                older._bypass = True
            try:
                self._setup(model, image, layer, spatial, optimizer, fast, options)
            except BaseException:
                if older is not None:
                    older._bypass = False
                self.close()
                raise
            if older is not None:
                older._supersede()
            _ACTIVE[model] = weakref.ref(self)

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
        self.layer: str = next(n for n, m in model.named_modules() if m is self._module)
        self.optimizer_name = optimizer
        self.lr: float = options["lr"]
        limit = torch.finfo(dtype).max / 10  # Adam's first step moves by up to 10 lr
        if self.lr > limit:
            raise ValueError(
                f"lr={self.lr:g} is too large: one step would overflow the block's {dtype} values; use an "
                f"lr of at most {limit:.3g} (the default is {DEFAULTS[optimizer]['lr']})"
            )
        self.max_steps: int = options["steps"]
        self.penalty: float = options["penalty"]
        self.bias_weight: float = options["bias_weight"]
        self.keep: float = options["keep"]
        self.margin: float = options["margin"]
        self._plain_logp: torch.Tensor | None = None  # what the keep term holds the output near
        self._texts: list[str] = []
        self._text_params: dict[str, torch.Tensor] | None = None
        self._text_mode = "sum"
        self._text_guide: TextGuide | None = None

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
        classes = getattr(model, "classes", None)
        self.classes: list[str] = (
            list(classes)
            if classes is not None and len(classes) == self.num_classes
            else [str(k) for k in range(self.num_classes)]
        )
        _, c, h, w = self._activation.shape
        self.block = GuidingBlock(c, h, w, spatial=spatial, device=device, dtype=self._activation.dtype)
        self._hints: list[Hint] = []
        self._targets = HintTargets([], self.num_classes, self.height, self.width, device)
        self.losses: list[float] = []
        self._opt: _Adam | torch.optim.LBFGS | None = None
        self._version = 0
        self._cached: tuple[int, torch.Tensor] | None = None
        # What the hooks do in the thread running _forward (None elsewhere, and there: apply _view):
        # "replay" substitutes the kept activation at the layer (fast forward), "cut" runs the head
        # without an autograd graph (full forward with gradients), "live" applies the live block.
        self._local = threading.local()
        self._view = self.block.frozen()  # the block as of the last completed change, for other forwards
        self._good = self.block.frozen()  # the last values known to give finite logits (zero: the plain ones)
        self._attach()
        self._finalizer = weakref.finalize(self, _detach_hooks, self._handles)
        self.fast_path = False
        self.fast_path_note = "disabled (fast=False)"
        self._head: HeadCache | None = None
        if fast:
            self._check_fast_path()

    # --- plumbing -------------------------------------------------------------------------------

    @torch.no_grad()
    def _plain_forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        seen: list = []

        def keep(_m, _a, out):
            seen.append(out.detach().clone() if isinstance(out, torch.Tensor) else out)

        with model_lock(self.model), eval_mode(self.model), hooked() as h:
            h.forward(self._module, keep)
            out = self.model(self._x)
        logits = self._as_map(model_output(out))
        if not seen:
            raise ValueError(
                f"layer {self.layer!r} did not run in the model's forward pass; pick a layer the "
                "forward uses (guidewidgets.hooks.layer_names(model) lists them)"
            )
        if len(seen) > 1:
            raise ValueError(
                f"layer {self.layer!r} runs {len(seen)} times per forward (a shared module); "
                "pick a layer that runs once"
            )
        act = seen[0]
        if not isinstance(act, torch.Tensor) or act.dim() != 4:
            what = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
            raise ValueError(
                f"layer {self.layer!r} outputs {what}, not a (B, C, H, W) feature map; the guiding "
                "block scales feature maps: pick a convolutional layer or block (for example "
                f"{getattr(self.model, 'default_guide_layer', None) or 'the encoder’s last block'!r})"
            )
        return act, logits

    def _as_map(self, out: torch.Tensor) -> torch.Tensor:
        if out.dim() != 4:
            raise ValueError(
                f"the model's output has shape {tuple(out.shape)}; a Guide needs a segmentation "
                "output (1, K, H, W) because hints are pixels"
            )
        if tuple(out.shape[-2:]) != (self.height, self.width):
            # Why: hints live in image coordinates; a coarse output is compared at image size.
            out = F.interpolate(out, size=(self.height, self.width), mode="bilinear", align_corners=False)
        return out

    def _mode(self) -> str | None:
        return getattr(self._local, "mode", None)

    def _attach(self) -> None:
        # The guiding block itself acts on every forward of the model while the guide is open (any
        # thread: "one guide per model"); replaying and cutting act only in the thread in _forward.
        ref = weakref.ref(self)

        def pre(_m, args):
            g = ref()
            if g is not None and not g._bypass and g._mode() == "replay":
                return empty_batch(args)
            return None

        def post(_m, _args, out):
            g = ref()
            if g is None or g._bypass:
                return None
            mode = g._mode()
            if mode is None:  # not the guide's own forward: the block as of its last completed step
                if not isinstance(out, torch.Tensor):
                    raise ValueError(f"layer {g.layer!r} returned {type(out).__name__}, not a tensor")
                guided = g._view(out)
                return None if guided is out else guided
            if mode == "cut":
                torch.set_grad_enabled(True)
            src = g._activation if mode == "replay" else out
            if not isinstance(src, torch.Tensor):
                raise ValueError(f"layer {g.layer!r} returned {type(src).__name__}, not a tensor")
            guided = g.block(src)
            if guided is src and mode == "replay":
                guided = guided.clone()  # an in-place op after the layer must not eat the cache
            return guided

        self._handles.append(self._module.register_forward_pre_hook(pre))
        self._handles.append(self._module.register_forward_hook(post))

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        """Hold the model's lock and check that the guide is open.

        Why under the lock: a newer Guide takes over (closing this one) under the same lock, so a
        call racing with it either runs on an open guide or gets the documented RuntimeError.
        """
        with model_lock(self.model):
            self._check_open()
            yield

    def _forward(self, grad: bool, fast: bool | None = None) -> torch.Tensor:
        """Guided logits (1, K, H, W) for the current block; ValueError (block put back) if not finite."""
        with self._session():
            fast = self.fast_path if fast is None else fast
            try:
                with eval_mode(self.model, self._all_modules), torch.set_grad_enabled(grad), hooked() as h:
                    if fast:
                        assert self._head is not None
                        self._local.mode = "replay"
                        with self._head.replaying():
                            out = self.model(self._x)
                    else:
                        if grad:
                            self._local.mode = "cut"

                            def head_without_graph(_m, _a):
                                torch.set_grad_enabled(False)

                            h.forward_pre(self.model, head_without_graph)
                        else:
                            self._local.mode = "live"
                        out = self.model(self._x)
            finally:
                self._local.mode = None
            logits = self._as_map(model_output(out))
            # One float64 sum instead of isfinite(): a NaN or inf anywhere makes it non-finite.
            if not _finite(float(logits.detach().sum(dtype=torch.float64))):
                self._rollback()
                raise ValueError(
                    f"the guide's block made the model's output NaN or infinite (lr={self.lr:g} is too "
                    "large for this model, or the hints pull too hard); the block is back at its last "
                    "finite values: make the Guide with a smaller lr, or call reset()"
                )
            return logits

    def _rollback(self) -> None:
        with torch.no_grad():
            for p, good in zip(self._block_tensors(), self._tensors_of(self._good)):
                p.copy_(good)
                p.grad = None
        self._opt = None
        self._block_changed()

    def _block_tensors(self) -> tuple[torch.Tensor, ...]:
        return self._tensors_of(self.block)

    @staticmethod
    def _tensors_of(block: GuidingBlock) -> tuple[torch.Tensor, ...]:
        return (block.alpha, block.beta, block.gamma_s, block.gamma_b)

    def _block_changed(self) -> None:
        """After every change of the block: new cache key, and other forwards see the new values."""
        self._version += 1
        self._cached = None
        self._view = self.block.frozen()

    def _check_fast_path(self) -> None:
        """Use the cached head only if it reproduces full forwards, at zero and off zero."""
        try:
            with model_lock(self.model), eval_mode(self.model):
                self._head = HeadCache(self.model, self._module, self._x)
            with torch.no_grad():
                zero = self._forward(grad=False, fast=True)
                ok = torch.allclose(zero, self._plain, rtol=1e-4, atol=1e-5)
                if ok:
                    gen = torch.Generator(device="cpu").manual_seed(0)
                    for p in self.block.parameters():
                        p.copy_(0.1 * torch.randn(p.shape, generator=gen).to(p))
                    fast = self._forward(grad=False, fast=True)
                    full = self._forward(grad=False, fast=False)
                    scale = full.abs().max().clamp_min(1.0)
                    ok = torch.allclose(fast, full, rtol=1e-4, atol=1e-5 * float(scale))
                    ok = ok and not torch.allclose(fast, zero)  # the guide must reach the output
        except Exception as err:
            ok, note = False, f"off: replaying the head failed ({type(err).__name__}: {err})"
        else:
            note = "on: head computed once" if ok else "off: replaying the head changed the output"
        finally:
            self.block.zero_()
        self.fast_path, self.fast_path_note = ok, note
        if not ok:
            self._head = None

    def _check_open(self) -> None:
        if self._closed_reason is not None or not self._handles:
            raise RuntimeError(self._closed_reason or "this Guide is closed; make a new one")

    def _supersede(self) -> None:
        # Called under the model's lock by the newer Guide: the reason is set before the hooks go.
        self._closed_reason = SUPERSEDED
        self.close()

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
        if not _finite(float(loss), *(float(p.detach().sum()) for p in params)):
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

    def _check_pixel(self, y: object, x: object, what: str = "hint") -> tuple[int, int]:
        yi, xi = _check_index(y, f"the {what}'s y coordinate"), _check_index(x, f"the {what}'s x coordinate")
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
            k = _check_index(cls, "class")
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

    def plain_logits(self) -> torch.Tensor:
        """(1, K, H, W) logits of the unguided model (computed once)."""
        return self._plain.clone()

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        """(1, K, H, W) logits with the current guide; at zero exactly the plain logits."""
        with self._session():
            if self.block.is_zero():
                return self._plain.clone()
            if self._cached is None or self._cached[0] != self._version:
                self._cached = (self._version, self._forward(grad=False))
            return self._cached[1].clone()

    def prediction(self) -> torch.Tensor:
        """(H, W) int64 guided class map."""
        return self.logits().argmax(1)[0]

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
            neg = _check_flag("negative", negative)
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
            r = _check_index(radius, "radius")
            if r < 0:
                raise ValueError(f"radius must be >= 0 (the brush radius in pixels), got {r}")
            neg = _check_flag("negative", negative)
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

    def snapshot(self) -> GuideState:
        """The session's state now (block parameters, hints, loss history), for :meth:`restore`.

        Why: undo in a widget must bring back exactly the previous prediction, not re-optimise.
        """
        with model_lock(self.model):  # a consistent copy, even while another thread steps
            return GuideState(
                params={k: v.clone() for k, v in self.block.as_dict().items()},
                hints=tuple(self._hints),
                losses=tuple(self.losses),
                texts=tuple(self._texts),
                text_params=None if self._text_params is None else {k: v.clone() for k, v in self._text_params.items()},
            )

    def _check_state(self, state: object) -> GuideState:
        if not isinstance(state, GuideState):
            raise TypeError(f"restore() takes what snapshot() returned, got {type(state).__name__}")
        names = ("alpha", "beta", "gamma_s", "gamma_b")
        for name, p in zip(names, self._block_tensors()):
            value = state.params.get(name) if isinstance(state.params, dict) else None
            if not isinstance(value, torch.Tensor) or value.shape != p.shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(
                    f"that snapshot is of another guide: {name} has shape {got}, this block's has {tuple(p.shape)}"
                )
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"that snapshot's {name} holds NaN or infinite values; take a new snapshot()")
        for hint in state.hints:
            px = getattr(hint, "pixels", None)
            inside = (
                isinstance(px, torch.Tensor)
                and px.dim() == 2
                and px.shape[1] == 2
                and bool(((px >= 0) & (px < torch.tensor([self.height, self.width], device=px.device))).all())
            )
            if not (isinstance(hint, Hint) and 0 <= hint.cls < self.num_classes and inside):
                raise ValueError(
                    "that snapshot is of another guide: its hints do not fit this image's "
                    f"{self.height}x{self.width} pixels and {self.num_classes} classes"
                )
        return state

    @torch.no_grad()
    def restore(self, state: GuideState) -> None:
        """Put back a :meth:`snapshot`: the same parameters, hints and losses, so the same prediction."""
        with self._session():
            state = self._check_state(state)  # all checked before anything changes
            for p, value in zip(
                self._block_tensors(), (state.params[k] for k in ("alpha", "beta", "gamma_s", "gamma_b"))
            ):
                p.copy_(value)
            self._hints = list(state.hints)
            self._hints_changed()
            self.losses[:] = list(state.losses)
            self._texts = list(state.texts)
            self._text_params = (
                None if state.text_params is None else {k: v.clone() for k, v in state.text_params.items()}
            )
            self._plain_logp = None
            self._block_changed()

    # --- text hints (Guide Me's "Learning to Guide with Text") ---------------------------------

    def _text_guide_for(self, text_guide: TextGuide | None) -> TextGuide:
        if text_guide is None:
            # Only the shipped default is remembered; a guide passed in is used for that call.
            if self._text_guide is None:
                from ..zoo.models import ShapeSegmenter

                if not isinstance(self.model, ShapeSegmenter):
                    raise ValueError(
                        f"no text guide ships for {type(self.model).__name__}; train one with "
                        "`python -m guidewidgets.guide.train_text` (or guidewidgets.guide.train_text.train) "
                        "and pass it: guide.add_text(sentence, text_guide=TextGuide.load(path))"
                    )
                self._text_guide = _shipped_text_guide()
            text_guide = self._text_guide
        if not isinstance(text_guide, TextGuide):
            raise TypeError(f"text_guide must be a TextGuide, got {type(text_guide).__name__}")
        if text_guide.layer != self.layer or tuple(text_guide.shape) != tuple(self.block.shape):
            raise ValueError(
                f"the text guide was trained for layer {text_guide.layer!r} (block {tuple(text_guide.shape)}) but "
                f"this Guide's block is at {self.layer!r} {tuple(self.block.shape)}; make the Guide with "
                f"layer={text_guide.layer!r} or train a text guide for {self.layer!r}"
            )
        if list(text_guide.tokenizer.classes) != list(self.classes):
            raise ValueError(
                f"the text guide knows the classes {text_guide.tokenizer.classes}, the model "
                f"{self.classes}: it was trained for another model"
            )
        if not self.block.spatial:
            raise ValueError("a text guide predicts alpha and beta too: make the Guide with spatial=True")
        return text_guide

    @torch.no_grad()
    def add_text(self, sentence: str, text_guide: TextGuide | None = None, mode: str = "sum") -> Query:
        """Give a hint in words, e.g. ``"there is no ellipse in this image"``; returns the parsed query.

        The text guide (a GRU over the words, trained with the query generator; the shipped one
        for the embedded segmenter by default) predicts the block's parameters, which are
        applied at once: no optimisation. Several sentences combine: ``mode="sum"`` adds each
        sentence's parameters, ``"sequence"`` lets the GRU read them joined by "and". Clicks
        added later start from the text's parameters (their penalty and keep term are measured
        from the text-guided state). Unknown words, a class the model lacks, a location outside
        the template and an empty sentence raise ValueError naming the fix.
        """
        with self._session():
            tg = self._text_guide_for(text_guide)
            query = tg.tokenizer.parse(sentence)
            texts = [*self._texts, query.text]
            new = {k: v.to(self.block.alpha) for k, v in tg.params(texts, mode).items()}
            old = self._text_params
            for name, p in zip(("alpha", "beta", "gamma_s", "gamma_b"), self._block_tensors()):
                p.add_(new[name] - (old[name] if old is not None else 0))
            self._texts, self._text_params, self._text_mode = texts, new, mode
            self._opt = None
            self._block_changed()
            # Later clicks keep close to the text-guided prediction (set lazily by the next objective).
            self._plain_logp = None
            return query

    @property
    def texts(self) -> list[str]:
        """The text hints given so far (as parsed: lower case, template words)."""
        return list(self._texts)

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
        budget = self.max_steps if steps is None else _check_steps(steps, "the most optimiser steps to take")
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

    def close(self) -> None:
        """Remove the guiding block from the model (safe to call twice)."""
        with model_lock(self.model) if hasattr(self, "model") else contextlib.nullcontext():
            _detach_hooks(self._handles)
            self._head = None
            if self._closed_reason is None:
                self._closed_reason = "this Guide is closed; make a new one"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran or a newer Guide on the same model took over."""
        return self._closed_reason is not None or not self._handles

    @property
    def closed_reason(self) -> str | None:
        """None while open; otherwise a sentence a widget can show (closed, or superseded)."""
        return self._closed_reason

    def __enter__(self) -> Guide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Guide(layer={self.layer!r}, block={self.block.shape}, spatial={self.block.spatial}, "
            f"optimizer={self.optimizer_name!r}, hints={len(self._hints)}, fast_path={self.fast_path})"
        )
