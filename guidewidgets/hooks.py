"""Find layers by name, capture their activations and gradients, swap ReLU's backward rule, run
in eval mode, and read a model's logits: what the explanation methods and the guide share.

Everything here leaves the model exactly as it was: hooks are removed in ``finally`` blocks, no
module is replaced, no flag is flipped, and parameter ``.grad`` fields are never written (callers
take gradients with :func:`torch.autograd.grad`, never ``.backward()``).
"""

from __future__ import annotations

import contextlib
import difflib
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

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
]


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

    ``activations`` is the layer's output of the last forward. With ``cut=True`` it is a leaf
    tensor and :meth:`grad` differentiates scores with respect to it; the backward pass then
    stops at the layer (nothing before it, and no weight gradient, is computed).
    """

    def __init__(self) -> None:
        self.activations: torch.Tensor | None = None

    def grad(self, scores: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        """d(sum of scores)/d(activations); samples are independent, so row b is sample b's gradient."""
        if self.activations is None:
            raise RuntimeError("the layer was not run: call the model inside the capture block")
        if not self.activations.requires_grad:
            raise RuntimeError("capture(..., cut=True) is needed to take gradients at the layer")
        (g,) = torch.autograd.grad(scores.sum(), self.activations, retain_graph=retain_graph)
        return g


@contextlib.contextmanager
def capture(model: nn.Module, layer: str | nn.Module, cut: bool = True) -> Iterator[Capture]:
    """Record ``layer``'s output during forwards run in the block.

    ``cut=True`` (what the CAM family needs) runs the layers before ``layer`` without building an
    autograd graph and restarts the graph at the layer's output, so the model's output is
    differentiable with respect to ``cap.activations`` and a backward never goes further back.
    The layer's output is handed on as a copy so that an in-place op after it (an
    ``nn.ReLU(inplace=True)``) cannot overwrite what was captured.
    """
    module = get_layer(model, layer)
    cap = Capture()
    grad_mode = torch.is_grad_enabled()

    def head_without_graph(_m, _args):
        # Why: the head's graph would only be thrown away; skipping it is the floor of Grad-CAM.
        torch.set_grad_enabled(False)

    def hook(_m, _args, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"layer {layer!r} returns {type(output).__name__}, not a tensor; pick a layer "
                "whose output is a feature map"
            )
        if not cut:
            cap.activations = output.detach()
            # Why a copy downstream: an in-place op after the layer would overwrite the capture.
            return output.clone()
        torch.set_grad_enabled(True)
        leaf = output.detach().requires_grad_(True)
        cap.activations = leaf
        return leaf.clone()

    handles = []
    try:
        if cut:
            handles.append(model.register_forward_pre_hook(head_without_graph))
        handles.append(module.register_forward_hook(hook))
        yield cap
    finally:
        for h in handles:
            h.remove()
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


# --- ReLU backward rules (guided backprop, deconvnet) -------------------------------------------


class _DeconvReLU(torch.autograd.Function):
    """Forward ReLU; backward rectifies the gradient itself, ignoring the forward input."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp_min(0)


def _positive(grad: torch.Tensor) -> torch.Tensor:
    return grad.clamp_min(0)


_RELU_FUNCS = {F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_}


class ReLURule(TorchFunctionMode):
    """``with ReLURule(rule) as r:`` every ReLU run in the block back-propagates by ``rule``.

    - ``"guided"``: the ReLU's own backward (gradient through positive inputs) applied to the
      rectified incoming gradient: only positive gradients through positive inputs. The model's
      ReLU itself still runs (in place if it asked), so this costs one clamp per ReLU in the
      backward (measured about 10 % cheaper on ResNet-18 than re-implementing the ReLU);
    - ``"deconv"``: the rectified incoming gradient, whatever the forward input was (run out of
      place even for ``inplace=True``: every caller uses the returned tensor);
    - ``None``: unchanged, only counted.

    ``r.calls`` counts the ReLUs run so far. Nothing in the model is touched: the ReLU calls
    themselves are intercepted, so functional ReLUs (torchvision's DenseNet) are reached too, and
    the rule is gone when the block exits, even on error.
    """

    def __init__(self, rule: Literal["guided", "deconv"] | None) -> None:
        super().__init__()
        if rule not in ("guided", "deconv", None):
            raise ValueError(f"unknown ReLU rule {rule!r}; use 'guided', 'deconv' or None")
        self.rule = rule
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _RELU_FUNCS:
            return func(*args, **kwargs)
        self.calls += 1
        if self.rule == "deconv":
            return _DeconvReLU.apply(args[0])
        out = func(*args, **kwargs)
        if self.rule == "guided" and isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(_positive)
        return out


def relu_backward(rule: Literal["guided", "deconv"]) -> ReLURule:
    """Context manager: within the block every ReLU back-propagates by ``rule`` (see ReLURule)."""
    if rule not in ("guided", "deconv"):
        raise ValueError(f"unknown ReLU rule {rule!r}; use 'guided' or 'deconv'")
    return ReLURule(rule)


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
    """Every module (with a conv inside) whose output is a spatial map (B, C, h, w), h*w > 1.

    Found by one forward on ``x[:1]`` in eval mode without gradients, listed in the order the
    forward finishes them (shallow to deep), each module once (its first call). When modules
    return the very same tensor (a block and its last child, ``layer4.1.relu`` and ``layer4``),
    only the outermost is listed. The one scan that layer menus, default layers and the guide's
    layer choices share.
    """
    found: dict[str, tuple[torch.Tensor, tuple[int, int, int]]] = {}
    handles = []

    def make(name: str):
        def hook(_m, _a, out):
            if name in found or not isinstance(out, torch.Tensor) or out.dim() != 4:
                return
            if out.shape[-2] * out.shape[-1] <= 1:
                return
            for other, (t, _) in list(found.items()):
                if t is out:  # the same tensor from an inner module: the outer name wins
                    del found[other]
            found[name] = (out, tuple(out.shape[1:]))

        return hook

    try:
        for name, m in model.named_modules():
            if name and _has_conv(m):
                handles.append(m.register_forward_hook(make(name)))
        with torch.no_grad(), eval_mode(model):
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
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
    """
    named = getattr(model, "default_explain_layer", None)
    if named:
        return named
    maps = feature_maps(model, x)
    if not maps:
        raise ValueError(
            f"{type(model).__name__} has no layer with a spatial (B, C, H, W) output; pass layer=... explicitly"
        )
    return maps[-1].name
