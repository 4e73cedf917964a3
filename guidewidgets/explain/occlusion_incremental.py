"""Incremental and approximate occlusion (Krypton: Nakandala, Kumar, Papakonstantinou, SIGMOD 2019).

An occluding patch changes only part of each feature map: its *projective field*, which grows by
each layer's kernel and shrinks by its stride. The model is traced with ``torch.fx`` (so residual
additions are explicit graph nodes), the unoccluded image is run once with every node's output
kept, and for a batch of patch positions each supported node recomputes only the window of its
output that the patch can reach, reading the rest of its input from the kept activations. The
first node that is not supported (global pooling, flatten, linear, attention ...) gets its inputs
rebuilt in full and runs as usual, as does everything after it; :class:`OcclusionInfo` names it.

Supported in windowed form: ``Conv2d`` (zero padding), ``MaxPool2d``, ``AvgPool2d`` (no
``ceil_mode``), ``BatchNorm2d`` in eval mode, ReLU-family and other elementwise activations,
dropout in eval mode, elementwise ``+ - *`` of two feature maps (residual additions) and
channel concatenation. That covers torchvision's VGG, ResNet (BasicBlock, Bottleneck) and
MobileNetV2 (InvertedResidual) up to their global pooling.

Approximate modes (Krypton's):

* ``tau`` (projective-field threshold, 0 < tau <= 1): a window is never taller or wider than
  ``ceil(tau * side)`` of its feature map; the thin outer part of the projective field is left
  at its unoccluded value. ``tau=1`` is exact.
* ``refine`` (adaptive drill-down, 0 < refine <= 1): the drops are computed on every second patch
  position first, interpolated to the others, and only the ``refine`` fraction of the rest whose
  interpolated drop is largest in magnitude is computed. ``refine=1`` is exact.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..hooks import eval_mode, model_lock, model_output
from .batching import Progress
from .occlusion_rules import _OUT_OF_PLACE, _Full, _gather, _hwbc, _materialize, _pair, _Win, rule_for
from .targets import Target

__all__ = ["OcclusionInfo", "occlusion_plan", "occlusion_drops"]


@dataclasses.dataclass
class OcclusionInfo:
    """How incremental occlusion runs on a model (from :func:`occlusion_plan`).

    ``traced``: torch.fx could trace the model (else plain occlusion runs and ``reason`` says
    why). ``fallback``: the first graph node computed in full (its inputs rebuilt from the
    windows), with ``fallback_op`` its operation, or None when the whole model runs windowed.
    ``windowed``: the nodes computed on windows only, in order. ``region``: for each windowed
    node the fraction of its output's positions recomputed for one patch (1.0 = the whole map).
    """

    traced: bool
    reason: str = ""
    fallback: str | None = None
    fallback_op: str | None = None
    windowed: list[str] = dataclasses.field(default_factory=list)
    region: dict[str, float] = dataclasses.field(default_factory=dict)


class _Engine:
    """A traced model with its unoccluded activations, evaluating batches of patch positions."""

    def __init__(self, model: nn.Module, x: torch.Tensor, tau: float = 1.0) -> None:
        self.model, self.x, self.tau = model, x, tau
        self.gm = fx.symbolic_trace(model)
        self.nodes = list(self.gm.graph.nodes)
        if sum(n.op == "placeholder" for n in self.nodes) != 1:
            raise TypeError("the model's forward takes more than one input")
        self.mods: dict[str, nn.Module] = {}
        for n in self.nodes:
            if n.op == "call_module":
                mod = self.gm.get_submodule(str(n.target))
                if getattr(mod, "inplace", False):
                    # A shallow copy shares the weights; only its own flag changes.
                    mod = copy.copy(mod)
                    setattr(mod, "inplace", False)  # noqa: B010 - the attribute is not declared on Module
                self.mods[n.name] = mod
        self.base: dict[str, Any] = {}
        env: dict[str, Any] = {}
        for n in self.nodes:
            if n.op == "output":
                self.output_base = fx.node.map_arg(n.args[0], lambda a: env[a.name])
                break
            args = fx.node.map_arg(n.args, lambda a: env[a.name])
            kwargs = fx.node.map_arg(n.kwargs, lambda a: env[a.name])
            env[n.name] = self._call(n, args, kwargs)
        self.base = env
        self.padded: dict[str, torch.Tensor] = {}
        self.info = OcclusionInfo(traced=True)

    # Full evaluation of one node (also used after the fallback point).
    def _call(self, n: fx.Node, args: Any, kwargs: Any) -> Any:
        if n.op == "placeholder":
            return self.x if not args else args[0]
        if n.op == "get_attr":
            obj: Any = self.gm
            for part in str(n.target).split("."):
                obj = getattr(obj, part)
            return obj
        if n.op == "call_module":
            return self.mods[n.name](*args, **kwargs)
        kwargs = dict(kwargs)
        if kwargs.get("inplace"):
            kwargs["inplace"] = False
        if n.op == "call_function":
            fn = _OUT_OF_PLACE.get(n.target, n.target)
            return fn(*args, **kwargs)  # type: ignore[operator]
        if n.op == "call_method":
            name = str(n.target)
            if name.endswith("_") and not name.endswith("__") and hasattr(args[0], name[:-1]):
                name = name[:-1]
            return getattr(args[0], name)(*args[1:], **kwargs)
        raise TypeError(f"unknown fx node kind {n.op}")

    def _padded(self, name: str, pad: tuple[int, int] = (0, 0), value: float = 0.0) -> torch.Tensor:
        """The kept activation of ``name``, padded, as (H, W, B, C) for :func:`_gather`."""
        key = f"{name}/{pad}/{value}"
        if key not in self.padded:
            self.padded[key] = _hwbc(F.pad(self.base[name], (pad[1], pad[1], pad[0], pad[0]), value=value))
        return self.padded[key]

    def _fallback(self, n: fx.Node) -> None:
        if self.info.fallback is None:
            self.info.fallback = n.name
            op = n.target if n.op != "call_module" else type(self.mods[n.name]).__name__
            self.info.fallback_op = getattr(op, "__name__", str(op))

    def _windowed(self, n: fx.Node, args: Any, kwargs: Any, states: list[Any]) -> _Win | None:
        """The node's value as a window when its op has a rule (:mod:`.occlusion_rules`), else None."""
        wins = [a for a in states if isinstance(a, _Win)]
        fulls = [a for a in states if isinstance(a, _Full)]
        base = self.base[n.name]
        if fulls or not wins or not isinstance(base, torch.Tensor) or base.dim() != 4:
            return None
        rule = rule_for(n, self.mods)
        return None if rule is None else rule(self, n, args, kwargs, wins)

    def _union(self, hw: Sequence[int], wins: list[_Win]) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        starts, sizes = [], []
        for dim, (offs, ext) in enumerate([(lambda w: w.oy, 2), (lambda w: w.ox, 3)]):
            lo = torch.stack([offs(w) for w in wins]).min(0).values
            hi = torch.stack([offs(w) + w.delta.shape[ext] for w in wins]).max(0).values
            m = int((hi - lo).max())
            starts.append(lo.clamp(0, int(hw[dim]) - m))
            sizes.append(m)
        return starts[0], starts[1], (sizes[0], sizes[1])

    def _gather_win(
        self, name: str, win: _Win, sy: torch.Tensor, sx: torch.Tensor, size: tuple[int, int]
    ) -> torch.Tensor:
        if tuple(win.delta.shape[2:]) == size and torch.equal(win.oy, sy) and torch.equal(win.ox, sx):
            return win.delta
        return _gather(self._padded(name), win, sy, sx, size)

    def run(self, spots: Sequence[tuple[int, int]], window: tuple[int, int], value: torch.Tensor) -> Any:
        """The model's output (as its forward returns it) for the occluded images of ``spots``,
        (K*B, ...) with the K positions outermost, like a batched plain forward."""
        oy, ox, patch = self._patches(spots, window, value)
        env: dict[str, Any] = {}
        windowed: list[str] = []
        for n in self.nodes:
            if n.op == "placeholder":
                env[n.name] = _Win(patch, oy, ox)
                continue
            if n.op == "output":
                self.info.windowed = self.info.windowed or windowed
                return fx.node.map_arg(n.args[0], lambda a: self._full(a.name, env[a.name]))
            if not any(isinstance(env[a.name], (_Win, _Full)) for a in n.all_input_nodes):
                env[n.name] = self.base[n.name]  # does not depend on the image
                continue
            args = fx.node.map_arg(n.args, lambda a: env[a.name])
            kwargs = fx.node.map_arg(n.kwargs, lambda a: env[a.name])
            got = self._windowed(n, args, kwargs, [env[a.name] for a in n.all_input_nodes])
            if got is not None:
                env[n.name] = got
                windowed.append(n.name)
                continue
            if any(isinstance(env[a.name], _Win) for a in n.all_input_nodes):
                self._fallback(n)
            args = fx.node.map_arg(n.args, lambda a: self._full(a.name, env[a.name]))
            kwargs = fx.node.map_arg(n.kwargs, lambda a: self._full(a.name, env[a.name]))
            env[n.name] = _Full(self._call(n, args, kwargs))
        raise TypeError("the traced graph has no output")

    def _patches(
        self, spots: Sequence[tuple[int, int]], window: tuple[int, int], value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Window origins (K,) and contents (K*B, C, wh, ww) of the occluded images of ``spots``.

        A patch cut at the border (the last position when the stride does not tile the image) is
        the same change as a whole window moved inside the image that keeps the image's own pixels
        where the patch does not reach: that is how it is sent, so every layer rule sees whole windows."""
        (b, c, h, w), (wh, ww) = self.x.shape, window
        dev, dtype = self.x.device, self.x.dtype
        fill = value.expand(c, wh, ww).to(dtype)
        inside = [(min(y, h - wh), min(x0, w - ww)) for y, x0 in spots]
        oy = torch.tensor([s[0] for s in inside], device=dev, dtype=torch.long)
        ox = torch.tensor([s[1] for s in inside], device=dev, dtype=torch.long)
        if all(s == t for s, t in zip(spots, inside)):
            return oy, ox, fill.expand(len(spots) * b, c, wh, ww).contiguous()
        patch = torch.empty(len(spots), b, c, wh, ww, device=dev, dtype=dtype)
        for i, ((y, x0), (yc, xc)) in enumerate(zip(spots, inside)):
            patch[i] = self.x[:, :, yc : yc + wh, xc : xc + ww]
            patch[i, :, :, y - yc :, x0 - xc :] = fill[:, y - yc :, x0 - xc :]
        return oy, ox, patch.view(len(spots) * b, c, wh, ww)

    def _full(self, name: str, state: Any) -> Any:
        if isinstance(state, _Win):
            return _materialize(self.base[name], state)
        if isinstance(state, _Full):
            return state.value
        return state


def _hooked(model: nn.Module) -> bool:
    """Per-module forward hooks change what a module returns (a Guide does): a windowed graph
    would skip them. Global hooks (profilers, FLOP counters) only watch, and are not counted."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _engine(model: nn.Module, x: torch.Tensor, tau: float) -> tuple[_Engine | None, OcclusionInfo]:
    """A traced engine, or None with the reason when plain occlusion must run instead."""
    if isinstance(model, torch.jit.ScriptModule):
        return None, OcclusionInfo(False, "a scripted model (torch.jit) cannot be traced by torch.fx")
    if _hooked(model):
        return None, OcclusionInfo(
            False, "the model has forward hooks (e.g. an open Guide), which a traced graph would skip"
        )
    try:
        eng = _Engine(model, x, tau)
    except Exception as e:  # any tracing failure means: run plain occlusion
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, OcclusionInfo(False, f"torch.fx could not trace the model ({type(e).__name__}: {msg[:200]})")
    return eng, eng.info


def occlusion_plan(model: nn.Module, x: torch.Tensor, window: int | Sequence[int] = 16) -> OcclusionInfo:
    """How exact incremental occlusion runs on ``model`` for images like ``x`` (B, C, H, W):
    the windowed nodes, the fallback point (first node computed in full) and the fraction of each
    windowed map one ``window`` patch at the centre recomputes. Runs two forwards; the model is
    left as it was (eval mode is set and restored, no hooks are placed)."""
    wh, ww = _pair(window)
    with torch.no_grad(), model_lock(model), eval_mode(model):
        eng, info = _engine(model, x, 1.0)
        if eng is None:
            return info
        h, w = x.shape[2:]
        if wh > h or ww > w:
            raise ValueError(f"window {(wh, ww)} is larger than the image {(h, w)}; use a smaller window")
        eng.run([((h - wh) // 2, (w - ww) // 2)], (wh, ww), torch.zeros(1, 1, 1, dtype=x.dtype, device=x.device))
        return eng.info


def _interp_matrix(n: int, known: list[int], dev: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n, len(known)) linear interpolation weights from the ``known`` sorted indices."""
    m = torch.zeros(n, len(known), dtype=dtype, device=dev)
    for i in range(n):
        j = max(0, min(len(known) - 2, sum(k <= i for k in known) - 1))
        if len(known) == 1:
            m[i, 0] = 1.0
            continue
        a, b = known[j], known[j + 1]
        t = min(1.0, max(0.0, (i - a) / (b - a)))
        m[i, j], m[i, j + 1] = 1 - t, t
    return m


def occlusion_drops(
    model: nn.Module,
    x: torch.Tensor,
    t: Target,
    base_scores: torch.Tensor,
    grid: tuple[Sequence[int], Sequence[int]],
    window: tuple[int, int],
    value: torch.Tensor,
    positions_per_batch: int,
    done: Progress,
    tau: float = 1.0,
    refine: float = 1.0,
    plain: Callable[[list[tuple[int, int]]], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, OcclusionInfo]:
    """Score drops (positions, B) of occlusion over the patch ``grid`` (row starts, column starts),
    computed incrementally (``tau`` < 1 and ``refine`` < 1 approximate). ``plain(spots)`` gives
    the scores (K, B) by full forwards; it is used when the model cannot be traced. Called by
    :func:`guidewidgets.explain.occlusion` with ``mode='incremental'`` or ``'approximate'``."""
    ys, xs = list(grid[0]), list(grid[1])
    spots = [(y, x0) for y in ys for x0 in xs]
    b = x.shape[0]
    eng, info = _engine(model, x, tau)

    def scores(chunk: list[tuple[int, int]]) -> torch.Tensor:
        if eng is None:
            assert plain is not None
            return plain(chunk)
        return t.scores(model_output(eng.run(chunk, window, value)), len(chunk)).view(len(chunk), b)

    def compute(idx: list[int]) -> torch.Tensor:
        out = torch.empty(len(idx), b, device=x.device, dtype=x.dtype)
        for start in range(0, len(idx), positions_per_batch):
            part = idx[start : start + positions_per_batch]
            out[start : start + len(part)] = base_scores.unsqueeze(0) - scores([spots[i] for i in part])
            done.advance(len(part))
        return out

    drops = torch.empty(len(spots), b, device=x.device, dtype=x.dtype)
    if refine >= 1.0 or len(ys) < 3 or len(xs) < 3:
        drops[:] = compute(list(range(len(spots))))
        return drops, info
    # Adaptive drill-down: every second row and column first (and the last ones), then the
    # positions whose interpolated drop is largest.
    ky = sorted(set(range(0, len(ys), 2)) | {len(ys) - 1})
    kx = sorted(set(range(0, len(xs), 2)) | {len(xs) - 1})
    coarse = [i * len(xs) + j for i in ky for j in kx]
    drops[coarse] = compute(coarse)
    wy = _interp_matrix(len(ys), ky, x.device, x.dtype)
    wx = _interp_matrix(len(xs), kx, x.device, x.dtype)
    known = drops.view(len(ys), len(xs), b)[ky][:, kx]  # (ny_c, nx_c, B)
    est = torch.einsum("ia,abk,jb->ijk", wy, known, wx).reshape(len(spots), b)
    rest = sorted(set(range(len(spots))) - set(coarse))
    n_refine = round(refine * len(rest))
    drops[rest] = est[rest]
    if n_refine:
        order = est[rest].abs().amax(1).argsort(descending=True)[:n_refine].tolist()
        chosen = sorted(rest[i] for i in order)
        drops[chosen] = compute(chosen)
    done.advance(len(rest) - n_refine)
    return drops, info
