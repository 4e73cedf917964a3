"""Incremental occlusion's windows and per-op rules (see :mod:`.occlusion_incremental`).

A node's value in a batch of occluded images is a :class:`_Win` (equal to the unoccluded value
outside one window per patch position) or a :class:`_Full` value. Each supported op has a rule in
one of three tables (modules, functions, tensor methods) that computes its output window from its
inputs' windows and the kept unoccluded activations.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

# --- what is supported ---------------------------------------------------------------------------

_UNARY_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.Hardtanh,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.ELU,
    nn.Mish,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)
_UNARY_FUNCTIONS: set[Any] = {
    F.relu,
    torch.relu,
    F.relu6,
    F.hardtanh,
    F.leaky_relu,
    F.silu,
    F.gelu,
    F.sigmoid,
    torch.sigmoid,
    F.tanh,
    torch.tanh,
    F.hardswish,
    F.hardsigmoid,
    F.elu,
    F.mish,
    F.dropout,
}
_UNARY_METHODS = {"relu", "sigmoid", "tanh", "contiguous"}
_BINARY_FUNCTIONS: set[Any] = {
    operator.add,
    operator.sub,
    operator.mul,
    operator.truediv,
    torch.add,
    torch.sub,
    torch.mul,
    torch.div,
}
_BINARY_METHODS = {"add", "sub", "mul", "div"}
# In-place forms run out of place: the kept activations must never change.
_OUT_OF_PLACE: dict[Any, Any] = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    torch.relu_: torch.relu,
}


def _pad_value(mod: nn.Module) -> float:
    return -math.inf if isinstance(mod, nn.MaxPool2d) else 0.0


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _spatial(mod: nn.Module) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]] | None:
    """(kernel, stride, padding, dilation) of a windowable spatial module, else None."""
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros" or (isinstance(mod.padding, str) and mod.padding != "valid"):
            return None
        pad = (0, 0) if isinstance(mod.padding, str) else _pair(mod.padding)
        return _pair(mod.kernel_size), _pair(mod.stride), pad, _pair(mod.dilation)
    if isinstance(mod, nn.MaxPool2d):
        if mod.ceil_mode or mod.return_indices:
            return None
        return _pair(mod.kernel_size), _pair(mod.stride or mod.kernel_size), _pair(mod.padding), _pair(mod.dilation)
    if isinstance(mod, nn.AvgPool2d):
        pad = _pair(mod.padding)
        if mod.ceil_mode or mod.divisor_override is not None or (not mod.count_include_pad and pad != (0, 0)):
            return None
        return _pair(mod.kernel_size), _pair(mod.stride or mod.kernel_size), pad, (1, 1)
    return None


def _unary_module(mod: nn.Module) -> bool:
    if isinstance(mod, nn.BatchNorm2d):
        return not mod.training and mod.running_mean is not None
    if isinstance(mod, (nn.Dropout, nn.Dropout2d)):
        return not mod.training
    return isinstance(mod, _UNARY_MODULES)


# --- states of a node's value in the batch of occluded images -------------------------------------


@dataclasses.dataclass
class _Win:
    """Values equal the unoccluded ones outside a window per patch position: ``delta`` is
    (K*B, C, h, w), the window of position k starts at row ``oy[k]``, column ``ox[k]``."""

    delta: torch.Tensor
    oy: torch.Tensor
    ox: torch.Tensor


@dataclasses.dataclass
class _Full:
    """The value for all K*B occluded images (any object: a tensor, a shape ...)."""

    value: Any


def _gather(base: torch.Tensor, win: _Win, sy: torch.Tensor, sx: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per position k, rows ``sy[k]:sy[k]+h`` and columns ``sx[k]:...`` of the occluded value:
    the window's delta where it lies, ``base`` elsewhere. ``base`` is (H', W', B, C) contiguous
    (see :func:`_hwbc`): rows of B*C values gather fast."""
    b, c = base.shape[2:]
    k = win.oy.shape[0]
    ih, iw = size
    dev = base.device
    rows = sy[:, None] + torch.arange(ih, device=dev)
    cols = sx[:, None] + torch.arange(iw, device=dev)
    out = base[rows[:, :, None], cols[:, None, :]]  # (K, ih, iw, B, C)
    dh, dw = win.delta.shape[2:]
    ry = rows - win.oy[:, None]
    rx = cols - win.ox[:, None]
    my = (ry >= 0) & (ry < dh)
    mx = (rx >= 0) & (rx < dw)
    # No "any cell inside?" test first: it would make the host wait for the device on every node
    # of every batch, and an all-false mask leaves ``out`` unchanged anyway.
    d = win.delta.view(k, b, c, dh, dw).permute(0, 3, 4, 1, 2).contiguous()
    idx = torch.arange(k, device=dev)[:, None, None]
    dg = d[idx, ry.clamp(0, dh - 1)[:, :, None], rx.clamp(0, dw - 1)[:, None, :]]
    out = torch.where((my[:, :, None] & mx[:, None, :])[..., None, None], dg, out)
    return out.permute(0, 3, 4, 1, 2).reshape(k * b, c, ih, iw)


def _hwbc(t: torch.Tensor) -> torch.Tensor:
    return t.permute(2, 3, 0, 1).contiguous()


def _materialize(base: torch.Tensor, win: _Win) -> torch.Tensor:
    """The full (K*B, C, H, W) value: ``base`` with each position's window written in."""
    b, c, h, w = base.shape
    k = win.oy.shape[0]
    dh, dw = win.delta.shape[2:]
    full = base.unsqueeze(0).repeat(k, 1, 1, 1, 1)
    dev = base.device
    rows = win.oy[:, None] + torch.arange(dh, device=dev)
    cols = win.ox[:, None] + torch.arange(dw, device=dev)
    view = full.permute(0, 3, 4, 1, 2)
    view[torch.arange(k, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]] = win.delta.view(
        k, b, c, dh, dw
    ).permute(0, 3, 4, 1, 2)
    return full.view(k * b, c, h, w)


def _out_window(
    lo: torch.Tensor, n: torch.Tensor, k: int, s: int, p: int, d: int, size_in: int, size_out: int, tau: float
) -> tuple[torch.Tensor, int]:
    """Output rows a spatial op must recompute when input rows lo..lo+n-1 changed: per-position
    start and one shared length (clamped into the map; capped by ``tau``)."""
    ke = (k - 1) * d + 1
    first = torch.div(lo + p - ke + 1 + s - 1, s, rounding_mode="floor").clamp_min(0)
    last = torch.div(lo + n - 1 + p, s, rounding_mode="floor").clamp_max(size_out - 1)
    length = (last - first + 1).clamp_min(1)
    if tau < 1.0:
        cap = max(1, math.ceil(tau * size_out))
        over = (length - cap).clamp_min(0)
        first = first + torch.div(over, 2, rounding_mode="floor")
        length = length.clamp_max(cap)
    m = int(length.max())
    return first.clamp(0, size_out - m), m


# --- the rules: how each op computes its output window from its inputs' windows ------------------
# A rule gets the engine (its kept activations ``e.base``, modules ``e.mods``, ``e._call``), the node,
# its arguments (windows, kept tensors or constants) and the windows among them; it returns the
# node's output window, or None when the op cannot run windowed (the node is then computed in full).

Rule = Callable[[Any, fx.Node, Any, Any, list[_Win]], "_Win | None"]


def _spatial_op(e: Any, n: fx.Node, src: str, mod: nn.Module, geo: Any, win: _Win) -> _Win:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geo
    bin_, bout = e.base[src], e.base[n.name]
    h, w = bin_.shape[2:]
    ho, wo = bout.shape[2:]
    oy, mh = _out_window(win.oy, torch.full_like(win.oy, win.delta.shape[2]), kh, sh, ph, dh, h, ho, e.tau)
    ox, mw = _out_window(win.ox, torch.full_like(win.ox, win.delta.shape[3]), kw, sw, pw, dw, w, wo, e.tau)
    e.info.region.setdefault(n.name, (mh * mw) / (ho * wo))
    ih, iw = (mh - 1) * sh + (kh - 1) * dh + 1, (mw - 1) * sw + (kw - 1) * dw + 1
    padded = e._padded(src, (ph, pw), _pad_value(mod))
    # Output row o reads padded rows o*s ... o*s + (k-1)*d; the window moves by the padding.
    inp = _gather(padded, _Win(win.delta, win.oy + ph, win.ox + pw), oy * sh, ox * sw, (ih, iw))
    if isinstance(mod, nn.Conv2d):
        out = F.conv2d(inp, mod.weight, mod.bias, mod.stride, 0, mod.dilation, mod.groups)
    elif isinstance(mod, nn.MaxPool2d):
        out = F.max_pool2d(inp, (kh, kw), (sh, sw), 0, (dh, dw))
    else:
        out = F.avg_pool2d(inp, (kh, kw), (sh, sw), 0)
    return _Win(out, oy, ox)


def _spatial_rule(e: Any, n: fx.Node, args: Any, kwargs: Any, wins: list[_Win]) -> _Win | None:
    mod = e.mods[n.name]
    geo = _spatial(mod)
    if geo is None or len(args) != 1 or kwargs or not isinstance(args[0], _Win):
        return None
    return _spatial_op(e, n, n.all_input_nodes[0].name, mod, geo, args[0])


def _unary_module_rule(e: Any, n: fx.Node, args: Any, kwargs: Any, wins: list[_Win]) -> _Win | None:
    mod = e.mods[n.name]
    if not _unary_module(mod) or len(args) != 1 or kwargs or not isinstance(args[0], _Win):
        return None
    return _Win(mod(args[0].delta), args[0].oy, args[0].ox)


def _unary_rule(e: Any, n: fx.Node, args: Any, kwargs: Any, wins: list[_Win]) -> _Win | None:
    if not args or not isinstance(args[0], _Win) or len(wins) != 1:
        return None
    a0 = args[0]
    return _Win(e._call(n, (a0.delta, *args[1:]), kwargs), a0.oy, a0.ox)


def _dropout_rule(e: Any, n: fx.Node, args: Any, kwargs: Any, wins: list[_Win]) -> _Win | None:
    if kwargs.get("training", args[2] if len(args) > 2 else True):
        return None  # training dropout draws a new mask per image: not a window op
    return _unary_rule(e, n, args, kwargs, wins)


def _per_channel(other: Any) -> bool:
    """A constant per channel (e.g. a normalising mean) acts the same on every window."""
    if not isinstance(other, torch.Tensor):
        return True
    return 2 <= other.dim() <= 4 and all(v == 1 for v in other.shape[-2:]) and (other.dim() < 4 or other.shape[0] == 1)


def _binary_rule(e: Any, n: fx.Node, args: Any, kwargs: Any, wins: list[_Win]) -> _Win | None:
    if len(args) != 2:
        return None
    base = e.base[n.name]
    names = [a.name if isinstance(a, fx.Node) else "" for a in n.args]
    if any(tuple(e.base[m].shape) != tuple(base.shape) for m, a in zip(names, args) if isinstance(a, _Win)):
        return None  # broadcasting (e.g. a squeeze-excitation scale): not a window op
    if all(isinstance(a, _Win) for a in args):
        union = e._union(base.shape[2:], [args[0], args[1]])
        parts = [e._gather_win(str(m), a, *union) for m, a in zip(names, args)]
        return _Win(e._call(n, tuple(parts), kwargs), union[0], union[1])
    if not _per_channel(args[1] if isinstance(args[0], _Win) else args[0]):
        return None
    a = wins[0]
    new = tuple(a.delta if isinstance(v, _Win) else v for v in args)
    return _Win(e._call(n, new, kwargs), a.oy, a.ox)


def _cat_rule(e: Any, n: fx.Node, args: Any, kwargs: Any, wins: list[_Win]) -> _Win | None:
    if not n.args or not isinstance(n.args[0], (list, tuple)):
        return None
    tensors = args[0]
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if dim not in (1, -3) or not all(isinstance(t, _Win) for t in tensors):
        return None
    names = [a.name if isinstance(a, fx.Node) else "" for a in n.args[0]]
    sy, sx, size = e._union(e.base[n.name].shape[2:], list(tensors))
    parts = [e._gather_win(name, t, sy, sx, size) for name, t in zip(names, tensors, strict=True)]
    return _Win(torch.cat(parts, 1), sy, sx)


#: Module class -> rule (looked up along the module's MRO, so subclasses follow their parent).
MODULE_RULES: dict[type[nn.Module], Rule] = {
    nn.Conv2d: _spatial_rule,
    nn.MaxPool2d: _spatial_rule,
    nn.AvgPool2d: _spatial_rule,
    nn.BatchNorm2d: _unary_module_rule,
    **dict.fromkeys(_UNARY_MODULES, _unary_module_rule),
}
#: Function (in-place forms mapped to their out-of-place ones first) -> rule.
FUNCTION_RULES: dict[Any, Rule] = {
    **dict.fromkeys(_UNARY_FUNCTIONS, _unary_rule),
    F.dropout: _dropout_rule,
    **dict.fromkeys(_BINARY_FUNCTIONS, _binary_rule),
    torch.cat: _cat_rule,
}
#: Tensor method name -> rule.
METHOD_RULES: dict[str, Rule] = {
    **dict.fromkeys(_UNARY_METHODS, _unary_rule),
    **dict.fromkeys(_BINARY_METHODS, _binary_rule),
}


def rule_for(n: fx.Node, mods: dict[str, nn.Module]) -> Rule | None:
    """The rule of node ``n``'s op, or None when it has none (it is computed in full)."""
    if n.op == "call_module":
        return next((MODULE_RULES[c] for c in type(mods[n.name]).__mro__ if c in MODULE_RULES), None)
    if n.op == "call_function":
        return FUNCTION_RULES.get(_OUT_OF_PLACE.get(n.target, n.target))
    if n.op == "call_method":
        return METHOD_RULES.get(str(n.target))
    return None
