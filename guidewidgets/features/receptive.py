"""Receptive fields: which input pixels a position of a layer's map can see.

Analytically from the chain of convolutions and poolings when the model up to the layer is such a
chain (each module feeding the next, every other module acting per position, such as BatchNorm,
ReLU or an input normalisation), by the gradient otherwise (residual additions, concatenations,
adaptive pooling): the bounding box of the input pixels with a non-zero gradient of the position's
activations, summed over channels and over a few random inputs so that no ReLU or max-pool gate
hides a pixel.

For a chain of layers with kernel k, stride s, padding p and dilation d (effective kernel
k' = d (k - 1) + 1), with jump J and size R of the input seen by one unit so far:
R <- R + (k' - 1) J, P <- P + p J, J <- J s. Unit u then sees input pixels u J - P ... u J - P + R - 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from .. import hooks
from ._common import forward_to, locked_eval, model_device

__all__ = ["ReceptiveField", "receptive_field", "gradient_box", "box_of", "chain_of"]

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a layer's units: ``size`` (rh, rw), ``stride`` (jy, jx) and ``padding``
    (py, px), so that unit (i, j) sees rows ``i*jy - py`` to ``i*jy - py + rh - 1`` (and columns
    likewise). ``map_size`` is the layer's (h, w) for ``image_size`` (H, W)."""

    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    image_size: tuple[int, int]
    map_size: tuple[int, int]

    def box(self, i: int, j: int, clip: bool = False) -> Box:
        """``[x0, y0, x1, y1]`` (exclusive ends, as ShapeScenes boxes) of unit (i, j) in the input;
        with ``clip=True`` cut to the image (the unclipped box may start at negative coordinates)."""
        h, w = self.map_size
        if not (-h <= i < h and -w <= j < w):
            raise ValueError(f"position ({i}, {j}) is outside the layer's {h} x {w} map")
        i, j = i % h, j % w
        y0 = i * self.stride[0] - self.padding[0]
        x0 = j * self.stride[1] - self.padding[1]
        y1, x1 = y0 + self.size[0], x0 + self.size[1]
        if clip:
            H, W = self.image_size
            return max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        return x0, y0, x1, y1


def _pair(v: Any) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _geometry(m: nn.Module) -> tuple[tuple[int, int], ...] | None:
    """(kernel, stride, padding, dilation) of a conv or pooling module; None for anything else."""
    if isinstance(m, nn.Conv2d):
        if isinstance(m.padding, str):
            return None  # "same"/"valid": resolved by torch at run time; leave it to the gradient
        return _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation)
    if isinstance(m, nn.MaxPool2d) and not m.ceil_mode:
        stride = m.stride if m.stride is not None else m.kernel_size
        return _pair(m.kernel_size), _pair(stride), _pair(m.padding), _pair(m.dilation)
    if isinstance(m, nn.AvgPool2d) and not m.ceil_mode:
        stride = m.stride if m.stride is not None else m.kernel_size
        return _pair(m.kernel_size), _pair(stride), _pair(m.padding), (1, 1)
    return None


def _acts_per_position(m: nn.Module, x: torch.Tensor, out: torch.Tensor) -> bool:
    """Probe: does ``m`` act on each position alone? Change one position of its input and check
    that only that position of its output moves (BatchNorm, activations, normalisations pass)."""
    if x.dim() != 4 or out.shape[-2:] != x.shape[-2:] or out.dim() != 4:
        return False
    probe = x[:1].detach().clone()
    i, j = probe.shape[-2] // 2, probe.shape[-1] // 2
    base = m(probe.clone())
    if not isinstance(base, torch.Tensor) or base.shape[-2:] != probe.shape[-2:]:
        return False
    probe[..., i, j] += 1.0 + probe[..., i, j].abs()
    moved = (m(probe.clone()) - base).abs().sum(1)[0] > 0
    moved[i, j] = False
    return not bool(moved.any())


def chain_of(model: nn.Module, layer: str | nn.Module, x: torch.Tensor) -> list[tuple[tuple[int, int], ...]] | None:
    """Geometry (kernel, stride, padding, dilation) of each conv/pool from the input to ``layer``,
    or None when the model up to the layer is not one chain of such modules and per-position ones."""
    target = hooks.get_layer(model, layer)
    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    # (module, input, input's version when called, output, output's version when returned)
    record: list[tuple[nn.Module, torch.Tensor, int, torch.Tensor, int]] = []
    ends: list[tuple[torch.Tensor, int]] = []

    def on_leaf(m: nn.Module, args: Any, out: Any) -> None:
        if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            # Only identities and versions are compared later; the probe re-runs on a clone.
            record.append((m, args[0], pre.pop(id(m), args[0]._version), out, out._version))

    pre: dict[int, int] = {}

    def before_leaf(m: nn.Module, args: Any) -> None:
        if args and isinstance(args[0], torch.Tensor):
            pre[id(m)] = args[0]._version  # an in-place module bumps it before the forward hook runs

    def on_layer(_m: nn.Module, _a: Any, out: Any) -> None:
        ends.append((out, out._version))

    with hooks.hooked() as h:
        for m in leaves:
            if m is not target:
                h.forward(m, on_leaf)
        for m in leaves:
            h.forward_pre(m, before_leaf)
        h.forward(target, on_leaf if not any(True for _ in target.children()) else on_layer)
        with torch.no_grad():
            forward_to(model, layer, x[:1])
    if not record:
        return None
    end, end_version = ends[0] if ends else (record[-1][3], record[-1][4])
    geometry: list[tuple[tuple[int, int], ...]] = []
    current: torch.Tensor = x[:1]
    current_version = -1
    first = True
    for m, inp, inp_version, out, out_version in record:
        # The chain: each module's input is the tensor the previous one returned (or the image),
        # unchanged since (an in-place residual "out += identity" keeps the object, not the version).
        if first:
            if inp is not current and not (inp.shape == x[:1].shape and torch.equal(inp, x[:1])):
                return None
        elif inp is not current or inp_version != current_version:
            return None
        first = False
        g = _geometry(m)
        if g is not None:
            geometry.append(g)
        elif not _acts_per_position(m, inp, out):
            return None
        current, current_version = out, out_version
    if current is not end or current_version != end_version:
        return None
    return geometry


def receptive_field(
    model: nn.Module, layer: str | nn.Module, x: torch.Tensor | tuple[int, int] = (96, 96)
) -> ReceptiveField | None:
    """The analytic receptive field of ``layer`` for images like ``x`` (a batch, an image or
    its (H, W)), or None when the model up to the layer is no conv/pool chain (then use
    :func:`gradient_box`, or :func:`box_of`, which picks the route)."""
    xs = _example(model, x)
    with locked_eval(model):
        geometry = chain_of(model, layer, xs)
        with torch.no_grad():
            h, w = forward_to(model, layer, xs).shape[-2:]
    if geometry is None:
        return None
    r, p, jump = [1, 1], [0, 0], [1, 1]
    for k, s, pad, d in geometry:
        for a in (0, 1):
            r[a] += (d[a] * (k[a] - 1)) * jump[a]
            p[a] += pad[a] * jump[a]
            jump[a] *= s[a]
    return ReceptiveField((r[0], r[1]), (jump[0], jump[1]), (p[0], p[1]), tuple(xs.shape[-2:]), (int(h), int(w)))  # type: ignore[arg-type]


def _example(model: nn.Module, x: torch.Tensor | tuple[int, int]) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        xs = x[None] if x.dim() == 3 else x
        return xs[:1].to(model_device(model)).float()
    H, W = _pair(x)
    return torch.full((1, 3, H, W), 0.5, device=model_device(model))


def gradient_box(
    model: nn.Module,
    layer: str | nn.Module,
    position: tuple[int, int],
    x: torch.Tensor | tuple[int, int] = (96, 96),
    samples: int = 8,
    seed: int = 0,
) -> Box:
    """``[x0, y0, x1, y1]`` (exclusive ends, inside the image) of the input pixels that reach
    unit ``position`` of ``layer``: non-zero gradient of the unit's channels (summed) for any of
    ``samples`` random images of the size of ``x``. Works for any differentiable model."""
    size = tuple(_example(model, x).shape[-2:])
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand((samples, 3, *size), generator=g).to(model_device(model)).requires_grad_(True)
    i, j = position
    with locked_eval(model), torch.enable_grad():
        a = forward_to(model, layer, xs)
        h, w = a.shape[-2:]
        if not (-h <= i < h and -w <= j < w):
            raise ValueError(f"position ({i}, {j}) is outside the layer's {h} x {w} map")
        (grad,) = torch.autograd.grad(a[:, :, i, j].sum(), xs)
    seen = grad.abs().sum((0, 1)) > 0
    rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
    if len(rows) == 0:
        raise ValueError(f"no input pixel reaches position ({i}, {j}) of layer {layer!r} (all gradients are zero)")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_of(
    model: nn.Module,
    layer: str | nn.Module,
    position: tuple[int, int],
    x: torch.Tensor | tuple[int, int] = (96, 96),
    method: Literal["auto", "analytic", "gradient"] = "auto",
) -> Box:
    """Input box (clipped to the image) of unit ``position``: analytic where the chain allows it."""
    if method not in ("auto", "analytic", "gradient"):
        raise ValueError(f"method must be 'auto', 'analytic' or 'gradient', got {method!r}")
    if method != "gradient":
        rf = receptive_field(model, layer, x)
        if rf is not None:
            return rf.box(*position, clip=True)
        if method == "analytic":
            raise ValueError(f"the model up to {layer!r} is no conv/pool chain; use method='gradient'")
    return gradient_box(model, layer, position, x)
