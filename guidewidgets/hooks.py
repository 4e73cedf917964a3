"""Find layers by name, capture their activations and gradients, swap the backward rule of
ReLU-family activations, collect attention weights, run in eval mode, and read a model's logits:
what the explanation methods and the guide share.

Everything here leaves the model exactly as it was: hooks are removed in ``finally`` blocks, no
module is replaced, no flag is flipped, and parameter ``.grad`` fields are never written (callers
take gradients with :func:`torch.autograd.grad`, never ``.backward()``). Hooks placed here act only
in the thread that placed them (:func:`owned`), and :func:`model_lock` serialises callers that
place hooks or flip flags on one model. Transformer outputs (tokens (B, N, D), channels-last
(B, h, w, C)) are read as (B, C, h, w) maps by :func:`grid_transform`.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

# Why re-exported here: callers import every hook-side tool from guidewidgets.hooks.
from .relu_rules import _ACTIVATION_FUNCS as _ACTIVATION_FUNCS
from .relu_rules import _RELU_FUNCS as _RELU_FUNCS
from .relu_rules import ReLURule, relu_backward
from .relu_rules import _out_of_place as _out_of_place
from .token_grids import Reshape, _has_attention, _is_attention, grid_transform, token_grid

__all__ = [
    "layer_names",
    "get_layer",
    "Capture",
    "capture",
    "relu_backward",
    "ReLURule",
    "last_conv_layer",
    "FeatureMap",
    "feature_maps",
    "model_lock",
    "eval_mode",
    "model_output",
    "owned",
    "hooked",
    "Hooks",
    "grid_transform",
    "token_grid",
    "attention_weights",
]


def owned(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` made to act only in the thread that calls ``owned`` (where it is placed).

    Why: a module hook is seen by every thread that runs the model. A user's own ``model(x)`` in
    another thread (or a second explain call) must not be cut, recorded or re-routed by hooks an
    explain call placed for itself. A forward (pre-)hook that returns None changes nothing.
    """
    owner = threading.get_ident()

    @functools.wraps(hook)
    def only_owner(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() != owner:
            return None
        return hook(*args, **kwargs)

    return only_owner


class Hooks:
    """Module hooks placed for one block of work: each acts only in the placing thread
    (:func:`owned`) and :meth:`remove` takes them all off. Use it through :func:`hooked`, which
    removes them in ``finally``; the one way the package places a hook on a user's model.
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []

    def forward(self, module: nn.Module, fn: Callable[..., Any], *, with_kwargs: bool = False) -> Hooks:
        """``fn(module, args, output)`` after ``module`` runs (in this thread); returns self."""
        self._handles.append(module.register_forward_hook(owned(fn), with_kwargs=with_kwargs))
        return self

    def forward_pre(self, module: nn.Module, fn: Callable[..., Any], *, with_kwargs: bool = False) -> Hooks:
        """``fn(module, args)`` before ``module`` runs (in this thread); returns self."""
        self._handles.append(module.register_forward_pre_hook(owned(fn), with_kwargs=with_kwargs))
        return self

    def remove(self) -> None:
        """Take every hook placed through this object off its module (safe to call twice)."""
        while self._handles:
            self._handles.pop().remove()

    def __len__(self) -> int:
        return len(self._handles)


@contextlib.contextmanager
def hooked() -> Iterator[Hooks]:
    """``with hooked() as h: h.forward(module, fn); model(x)``: thread-owned hooks, removed on exit
    even when the block raises."""
    placed = Hooks()
    try:
        yield placed
    finally:
        placed.remove()


def layer_names(model: nn.Module) -> list[str]:
    """Dotted names of every sub-module of ``model`` (the model itself excluded)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str | nn.Module) -> nn.Module:
    """Return the sub-module called ``name`` (dotted, as in ``model.named_modules()``).

    A module passed instead of a name is returned as is if it belongs to ``model``. An unknown
    name raises ``ValueError`` listing the closest names, so a typo names its own fix.
    """
    if isinstance(name, nn.Module):
        if any(m is name for m in model.modules()):
            return name
        raise ValueError("that layer is not a sub-module of this model; pass one of its names")
    if not isinstance(name, str):
        raise TypeError(f"layer must be a module name (str), got {type(name).__name__}")
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    names = layer_names(model)
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    if not close:  # fall back to names that share the last component (e.g. "layer4" in "net.layer4")
        close = [n for n in names if n.split(".")[-1] == name.split(".")[-1]][:5]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(
        f"No layer named {name!r} in {type(model).__name__}.{hint} "
        f"guidewidgets.hooks.layer_names(model) lists all {len(names)} names."
    )


class Capture:
    """What :func:`capture` recorded during the forward passes run inside its ``with`` block.

    ``activations`` is the layer's output of the last forward as a (B, C, h, w) map: token outputs
    of transformers (B, N, D) and channels-last maps (B, h, w, C) are reshaped to it (see
    :func:`grid_transform`, or the ``reshape`` given to :func:`capture`). With ``cut=True`` the
    layer's raw output is a leaf tensor and :meth:`grad` differentiates scores with respect to it
    (returned in the same (B, C, h, w) layout); the backward pass then stops at the layer
    (nothing before it, and no weight gradient, is computed).
    """

    def __init__(self) -> None:
        self.activations: torch.Tensor | None = None
        self.raw: torch.Tensor | None = None  # the layer's own output (the leaf with cut=True)
        self.reshape: Reshape | None = None

    def grad(self, scores: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        """d(sum of scores)/d(activations); samples are independent, so row b is sample b's gradient."""
        if self.raw is None:
            raise RuntimeError("the layer was not run: call the model inside the capture block")
        if not self.raw.requires_grad:
            raise RuntimeError("capture(..., cut=True) is needed to take gradients at the layer")
        (g,) = torch.autograd.grad(scores.sum(), self.raw, retain_graph=retain_graph)
        return self.reshape(g) if self.reshape is not None else g


@contextlib.contextmanager
def capture(
    model: nn.Module, layer: str | nn.Module, cut: bool = True, reshape: Reshape | None = None
) -> Iterator[Capture]:
    """Record ``layer``'s output during forwards run in the block (by the calling thread only).

    ``cut=True`` (what the CAM family needs) runs the layers before ``layer`` without building an
    autograd graph and restarts the graph at the layer's output, so the model's output is
    differentiable with respect to ``cap.activations`` and a backward never goes further back.
    The layer's output is handed on as a copy so that an in-place op after it (an
    ``nn.ReLU(inplace=True)``) cannot overwrite what was captured. ``reshape`` maps the layer's
    output to (B, C, h, w) (default: :func:`grid_transform` decides from the output's layout).
    """
    module = get_layer(model, layer)
    if reshape is not None and not callable(reshape):
        raise TypeError("reshape must be a callable(layer output) -> (B, C, h, w) tensor, or None")
    cap = Capture()
    grad_mode = torch.is_grad_enabled()
    size: list[tuple[int, ...] | None] = [None]

    def head_without_graph(_m, args):
        if args and isinstance(args[0], torch.Tensor):
            size[0] = tuple(args[0].shape)  # the grid of token outputs depends on the image size
        if cut:
            # Why: the head's graph would only be thrown away; skipping it is the floor of Grad-CAM.
            torch.set_grad_enabled(False)

    def hook(_m, _args, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"layer {layer!r} returns {type(output).__name__}, not a tensor; pick a layer "
                "whose output is a feature map"
            )
        cap.reshape = reshape if reshape is not None else grid_transform(model, output, size[0])
        if not cut:
            cap.raw = output.detach()
            cap.activations = cap.reshape(cap.raw) if cap.reshape is not None else cap.raw
            # Why a copy downstream: an in-place op after the layer would overwrite the capture.
            return output.clone()
        torch.set_grad_enabled(True)
        leaf = output.detach().requires_grad_(True)
        cap.raw = leaf
        cap.activations = cap.reshape(leaf.detach()) if cap.reshape is not None else leaf
        return leaf.clone()

    try:
        with hooked() as h:
            h.forward_pre(model, head_without_graph).forward(module, hook)
            yield cap
    finally:
        torch.set_grad_enabled(grad_mode)


@contextlib.contextmanager
def eval_mode(model: nn.Module, modules: list[nn.Module] | None = None) -> Iterator[None]:
    """Run the block with every module in eval mode; restore each module's own flag afterwards.

    Why: in training mode BatchNorm would update its running statistics (changing the
    state_dict) and Dropout would make maps random. ``modules`` (``list(model.modules())``,
    cached by a caller that enters this often) saves walking the tree each time.
    """
    training = [m for m in (modules if modules is not None else model.modules()) if m.training]
    try:
        for m in training:
            m.training = False
        yield
    finally:
        for m in training:
            m.training = True


def model_output(out: object) -> torch.Tensor:
    """The logits tensor of a model's output (torchvision segmenters return ``{"out": ...}``)."""
    if isinstance(out, Mapping) and "out" in out:
        out = out["out"]
    if not isinstance(out, torch.Tensor) or out.dim() < 2:
        raise TypeError(
            "the model must return logits: a tensor (B, K) for classification or (B, K, H, W) "
            f"for segmentation, got {type(out).__name__}"
            + (f" of shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else "")
        )
    return out


# --- default layer --------------------------------------------------------------------------------


class FeatureMap(NamedTuple):
    """A module whose output is a spatial feature map: its dotted name and output shape (C, h, w)."""

    name: str
    shape: tuple[int, int, int]

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the map."""
        return self.shape[1], self.shape[2]

    @property
    def label(self) -> str:
        """``"layer3 (14 x 14)"``: what a layer menu shows."""
        return f"{self.name} ({self.shape[1]} x {self.shape[2]})"


def _has_conv(m: nn.Module) -> bool:
    # Why: a module without a conv inside (normalisation, pooling, an activation) adds nothing
    # to explain; VGG's AdaptiveAvgPool2d after the last block is no feature map of its own.
    return any(isinstance(s, nn.modules.conv._ConvNd) for s in m.modules())


def feature_maps(model: nn.Module, x: torch.Tensor) -> list[FeatureMap]:
    """Every module (with a conv or an attention inside) whose output is a spatial map, h*w > 1.

    Found by one forward on ``x[:1]`` in eval mode without gradients, listed in the order the
    forward finishes them (shallow to deep), each module once (its first call). When modules
    return the very same tensor (a block and its last child, ``layer4.1.relu`` and ``layer4``),
    only the outermost is listed. Transformer outputs count too: tokens (B, N, D) on their
    patch grid and channels-last (B, h, w, C) maps (see :func:`grid_transform`); ``shape`` is
    always (C, h, w). The one scan that layer menus, default layers and the guide's layer
    choices share.
    """
    found: dict[str, tuple[torch.Tensor, tuple[int, int, int]]] = {}
    size = (1, *x.shape[1:])

    def make(name: str):
        def hook(_m, _a, out):
            if name in found or not isinstance(out, torch.Tensor) or out.dim() not in (3, 4):
                return
            reshape = grid_transform(model, out, size)
            if reshape is not None:
                grid = reshape(out)
            elif out.dim() == 4:
                grid = out
            else:
                return
            if grid.shape[-2] * grid.shape[-1] <= 1:
                return
            for other, (t, _) in list(found.items()):
                if t is out:  # the same tensor from an inner module: the outer name wins
                    del found[other]
            found[name] = (out, tuple(grid.shape[1:]))

        return hook

    with hooked() as h:
        for name, m in model.named_modules():
            if name and not _is_attention(m) and (_has_conv(m) or _has_attention(m)):
                h.forward(m, make(name))
        with torch.no_grad(), eval_mode(model):
            model(x[:1])
    return [FeatureMap(name, shape) for name, (_, shape) in found.items()]


_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The one re-entrant lock of ``model``: hold it while hooks are on the model or its flags
    are flipped, so that concurrent calls (a widget's background job and the user's own cell)
    never see each other's hooks."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


def last_conv_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the module producing the last spatial feature map (B, C, h, w) with h*w > 1.

    Found by :func:`feature_maps` (one forward pass); when a block and its last child return
    the same map, the outermost name wins (e.g. ``layer4`` rather than ``layer4.1.relu``). A
    model's own ``default_explain_layer`` attribute, when present, is used instead.

    Transformers with a class token (ViT, DeiT) read the prediction from that token only, so
    the last block's output has no gradient at the patch tokens; their default is the first
    LayerNorm of the last attention block (``encoder.layers.encoder_layer_11.ln_1`` in
    torchvision's ViT, ``blocks[-1].norm1`` in timm's), the layer pytorch-grad-cam's docs use.
    """
    named = getattr(model, "default_explain_layer", None)
    if named:
        return named
    maps = feature_maps(model, x)
    if not maps:
        raise ValueError(
            f"{type(model).__name__} has no layer with a spatial (B, C, H, W) output; pass layer=... explicitly"
        )
    last = maps[-1].name
    block = _last_attention_block(model)
    if block is not None:
        with torch.no_grad(), eval_mode(model), capture(model, last, cut=False) as cap:
            model(x[:1])
        raw = cap.raw
        if raw is not None and raw.dim() == 3:
            found = token_grid(model, raw.shape[1], tuple(x.shape[-2:]))  # type: ignore[arg-type]
            if found is not None and found[0] > 0:
                return block
    return last


def _last_attention_block(model: nn.Module) -> str | None:
    """The first LayerNorm of the last module that has an attention module as a direct child."""
    blocks = [(n, m) for n, m in model.named_modules() if any(_is_attention(c) for c in m.children())]
    if not blocks:
        return None
    name, block = blocks[-1]
    for child_name, child in block.named_children():
        if isinstance(child, nn.LayerNorm):
            return f"{name}.{child_name}" if name else child_name
    return None


@contextlib.contextmanager
def attention_weights(model: nn.Module, average: bool = True) -> Iterator[list[torch.Tensor]]:
    """Collect the attention weights (B, N, N), averaged over heads (``average=False``: per head,
    (B, heads, N, N)), of every ``nn.MultiheadAttention`` run in the block (by the calling
    thread), in call order.

    Why hooks: torchvision's ViT calls its attention with ``need_weights=False``. A forward
    pre-hook asks for the weights for this call only and a forward hook takes them out again
    (the caller gets ``(output, None)`` as with ``need_weights=False``); both are removed on
    exit, so the model is unchanged.
    """
    found: list[torch.Tensor] = []

    def ask(_m, args, kwargs):
        kwargs = dict(kwargs)
        kwargs["need_weights"] = True
        kwargs["average_attn_weights"] = average
        return args, kwargs

    def take(_m, _args, out):
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], torch.Tensor):
            found.append(out[1])
            return (out[0], None)
        return None

    with hooked() as h:
        for m in model.modules():
            if isinstance(m, nn.MultiheadAttention):
                h.forward_pre(m, ask, with_kwargs=True).forward(m, take)
        yield found
