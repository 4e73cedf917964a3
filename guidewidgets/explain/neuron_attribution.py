"""Neuron attribution: which pixels drive one unit of a layer, by its gradient, its guided
backprop and its integrated gradients (Captum's ``NeuronGradient``, ``NeuronGuidedBackprop``
and ``NeuronIntegratedGradients``).

The unit is a :class:`Neuron` of ``layer``'s (B, C, h, w) map, passed as ``target=``:

- ``Neuron(c, (i, j))``: the value at channel ``c``, row ``i``, column ``j``;
- ``Neuron(c)`` or the int ``c``: the channel, its values *summed* over the h x w positions
  (what Captum computes for the selector ``(c, slice(None), slice(None))``);
- a sequence of ints or Neurons: one unit per sample;
- None: each sample's most active channel (largest sum over positions) on the image itself.

A callable on the model's output names a class score, not a unit, and is refused. The forward
stops at the layer (what comes after it cannot change the unit), so these cost less than a
class-score gradient. ``layer`` is a module called once per forward; if it is called several
times, its first call is the unit's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import nn

from .. import hooks
from ..hooks import ReLURule
from .batching import Progress, auto_batch_size
from .input_attribution import path_points, resolve_baseline
from .layer_attribution import path_chunks
from .layers import Reshape, check_feature_map, check_reshape
from .registry import Call, method

__all__ = ["Neuron", "NeuronTarget", "neuron_gradient", "neuron_guided_backprop", "neuron_integrated_gradients"]


def _index(v: object, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"a neuron's {what} must be an int, got {v!r}")
    return int(v)


@dataclasses.dataclass(frozen=True)
class Neuron:
    """One unit of a layer's (C, h, w) map: a channel, or a channel at one position.

    Args:
        channel: the channel index (0 to C - 1).
        position: ``(row, column)`` in the h x w map, or None for the whole channel (its values
            summed over positions).
    """

    channel: int
    position: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel", _index(self.channel, "channel"))
        if self.position is not None:
            pos = self.position
            if isinstance(pos, torch.Tensor) or not isinstance(pos, Sequence) or len(pos) != 2:
                raise TypeError(f"a neuron's position must be a pair (row, column) of ints or None, got {pos!r}")
            object.__setattr__(self, "position", (_index(pos[0], "row"), _index(pos[1], "column")))

    def __str__(self) -> str:
        where = "" if self.position is None else f" at ({self.position[0]}, {self.position[1]})"
        return f"channel {self.channel}{where}"


NeuronTarget = None | int | Neuron | Sequence[int | Neuron] | torch.Tensor


def _units(target: NeuronTarget, batch: int) -> list[Neuron] | None:
    """``target`` as one Neuron per sample (None: the most active channel, decided later)."""
    if type(target).__module__ == "numpy" and hasattr(target, "tolist"):
        target = target.tolist()  # type: ignore[union-attr]  # numpy ints and integer arrays
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dim() > 1:
            raise TypeError(f"a tensor target must hold integer channel indices, shape (B,), got {tuple(target.shape)}")
        target = target.tolist()
    if target is None:
        return None
    if callable(target):
        raise TypeError(
            "a neuron method explains a unit of the layer, not a score of the model's output, so a "
            "callable target has no meaning here: pass target=Neuron(channel, (row, column)), a channel "
            "int, or one per sample; for a callable score use 'saliency' or 'integrated-gradients'"
        )
    if isinstance(target, (Neuron, numbers.Integral)) and not isinstance(target, bool):
        one = target if isinstance(target, Neuron) else Neuron(int(target))
        return [one] * batch
    if isinstance(target, Sequence) and not isinstance(target, str):
        units = [v if isinstance(v, Neuron) else Neuron(v) for v in target]  # type: ignore[arg-type]
        if len(units) != batch:
            raise ValueError(
                f"target has {len(units)} neurons but x has {batch} samples; give one per sample, or one for all"
            )
        return units
    raise TypeError(
        "target must be None (each sample's most active channel), a channel int, a "
        f"Neuron(channel, (row, column)) or one of those per sample; got {type(target).__name__}"
    )


def _check_units(units: list[Neuron], grid: torch.Tensor, layer: str | nn.Module) -> None:
    _, c, h, w = grid.shape
    name = layer if isinstance(layer, str) else type(layer).__name__
    for u in units:
        if not 0 <= u.channel < c:
            raise ValueError(
                f"channel {u.channel} is outside layer {name!r}, which has {c} channels: use a channel from 0 to {c - 1}"
            )
        if u.position is not None and not (0 <= u.position[0] < h and 0 <= u.position[1] < w):
            raise ValueError(
                f"position {u.position} is outside the {h} x {w} map of layer {name!r}: use a row from 0 "
                f"to {h - 1} and a column from 0 to {w - 1}"
            )


def _selection(units: list[Neuron], grid: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) of ones on each sample's unit: the unit's value is the masked sum."""
    mask = torch.zeros((len(units), *grid.shape[1:]), device=grid.device, dtype=grid.dtype)
    for b, u in enumerate(units):
        if u.position is None:
            mask[b, u.channel] = 1
        else:
            mask[b, u.channel, u.position[0], u.position[1]] = 1
    return mask


class _Reached(BaseException):
    """Raised at the layer to end the forward there. A BaseException: a model's own
    ``except Exception`` must not swallow it."""


def _forward_to_layer(
    model: nn.Module, x: torch.Tensor, layer: str | nn.Module, reshape: Reshape | None
) -> torch.Tensor:
    """``layer``'s output on ``x`` as a (B, C, h, w) map (differentiable when x is); the forward
    ends at the layer's first call."""
    store: dict = {}

    def stop(_m, _args, out):
        store["out"] = out
        raise _Reached

    with hooks.hooked() as placed:
        placed.forward(hooks.get_layer(model, layer), stop)
        with contextlib.suppress(_Reached):
            model(x)
    out = store.get("out")
    grid = out
    if isinstance(out, torch.Tensor):
        to_grid = reshape or hooks.grid_transform(model, out, tuple(x.shape))
        grid = to_grid(out) if to_grid is not None else out
    return check_feature_map(grid, layer, x.shape[0])


def _unit_gradient(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | nn.Module,
    target: NeuronTarget,
    reshape: Reshape | None,
    rule: str | None = None,
    repeats: int = 1,
) -> tuple[torch.Tensor, list[Neuron]]:
    """(d unit / d x, the units) for ``x`` of ``repeats`` copies of a batch; ReLUs back-propagate
    by ``rule`` (None: plain). ``target`` may be the resolved units already."""
    b = x.shape[0] // repeats
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        relus = ReLURule(rule) if rule is not None else None  # type: ignore[arg-type]
        with relus if relus is not None else contextlib.nullcontext():
            grid = _forward_to_layer(model, xg, layer, reshape)
        units = _units(target, b)
        if units is None:  # the most active channel of each sample, on the first copy
            units = [Neuron(int(c)) for c in grid.detach()[:b].sum((2, 3)).argmax(1).tolist()]
        _check_units(units, grid, layer)
        mask = _selection(units, grid).repeat(repeats, 1, 1, 1)
        (g,) = torch.autograd.grad((grid * mask).sum(), xg)
    if relus is not None and relus.calls == 0:
        warnings.warn(
            f"{type(model).__name__} ran no ReLU-family activation before layer {layer!r}, so the "
            f"{rule!r} rule changed nothing and the result is the plain neuron gradient",
            UserWarning,
            stacklevel=5,
        )
    return g, units


def _neuron_method(name: str, **more: Any) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """:func:`~guidewidgets.explain.registry.method` for the catalog's neuron method ``name``:
    ``c.target`` is the units (one :class:`Neuron` per sample, or None for each sample's most active
    channel)."""
    return method(name, uses_layer=True, has_image=True, target_kind="neuron", check_target=_units, **more)


def _gradient_method(name: str, rule: str | None, doc: str) -> Callable[..., torch.Tensor]:
    """The own part of a neuron's gradient image with ReLUs back-propagating by ``rule`` (None: plain)."""

    def fn(c: Call, *, raw: bool = False, reshape: Reshape | None = None) -> torch.Tensor:
        assert c.layer is not None  # uses_layer: the registry resolved it
        units = cast("list[Neuron] | None", c.target)  # what _units (check_target) gave
        g, _ = _unit_gradient(c.model, c.x, c.layer, units, check_reshape(reshape), rule)
        return g if raw else g.abs().amax(1)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return fn


_ARGS = """

Args:
    model: the network (run in eval mode up to ``layer``, left unchanged).
    x: images (B, C, H, W), checked as for every method.
    target: the unit: a :class:`Neuron`, a channel int (its sum over positions), one of those per
        sample, or None (each sample's most active channel at the layer).
    layer: a module name or module with a (B, C, h, w) output (None: the default layer).
    progress: ``progress(fraction)``; called with 1.0 at the end.
    raw: return the signed (B, C, H, W) image instead of the map.
    reshape: the layer's output to (B, C, h, w), for token layouts.

Returns:
    (B, H, W): the image's largest absolute value over colour channels (``raw=True``: the image).
"""

neuron_gradient = _neuron_method("neuron-gradient")(
    _gradient_method("neuron_gradient", None, "Gradient of one unit of ``layer`` with respect to the pixels." + _ARGS)
)

neuron_guided_backprop = _neuron_method("neuron-guided-backprop")(
    _gradient_method(
        "neuron_guided_backprop",
        "guided",
        "Guided backprop of one unit of ``layer``: every ReLU-family activation before it passes back only "
        "positive gradients through positive inputs." + _ARGS,
    )
)


@_neuron_method("neuron-integrated-gradients", signed=True, slow=True, quick={"steps": 4})
def neuron_integrated_gradients(
    c: Call,
    *,
    raw: bool = False,
    reshape: Reshape | None = None,
    baseline: float | Sequence[float] | torch.Tensor | None = 0.0,
    steps: int = 50,
    rule: str = "gausslegendre",
    batch_size: int | None = None,
) -> torch.Tensor:
    """(x - baseline) * sum_i w_i d unit / d x at baseline + alpha_i (x - baseline), summed over
    colour channels (``raw=True``: the (B, C, H, W) attribution).

    Args:
        target: a Neuron, a channel int (its sum over positions), one per sample, or None (each
            sample's most active channel on the image itself, kept along the path).
        baseline: the path's start (see :func:`~guidewidgets.explain.input_attribution.resolve_baseline`).
        steps: points of the quadrature ``rule`` (Captum's names; Gauss-Legendre by default).
        batch_size: images per forward (Captum's ``internal_batch_size``): the path's points are
            run in chunks of this many images; the result is the same for any chunking.
        reshape: the layer's output to (B, C, h, w), for token layouts.
        model, x, layer, progress, raw, rule: as for :func:`neuron_gradient` and
            :func:`~guidewidgets.explain.input_attribution.integrated_gradients`.

    Returns:
        (B, H, W): the attribution summed over colour channels; it sums to unit(x) -
        unit(baseline) up to the quadrature's error (``raw=True``: the (B, C, H, W) attribution).
    """
    alphas, weights = path_points(steps, rule)
    model, layer, progress = c.model, c.layer, c.progress
    units = cast("list[Neuron] | None", c.target)  # what _units (check_target) gave
    assert layer is not None  # uses_layer: the registry resolved it
    reshape = check_reshape(reshape)
    x = c.x.detach()
    b = x.shape[0]
    if units is None:
        with torch.no_grad():
            top = _forward_to_layer(model, x, layer, reshape).sum((2, 3)).argmax(1)
        units = [Neuron(int(ch)) for ch in top.tolist()]
    base = resolve_baseline(baseline, x)
    total = torch.zeros_like(x)
    w_all = torch.tensor(weights, device=x.device, dtype=x.dtype)
    done = Progress(progress, steps)
    for start, stop, points in path_chunks(x, base, alphas, auto_batch_size(x, batch_size)):
        k = stop - start
        g, _ = _unit_gradient(model, points, layer, units, reshape, repeats=k)
        total += torch.einsum("k,kbchw->bchw", w_all[start:stop], g.view(k, b, *x.shape[1:]))
        done.advance(k)
    attr = total * (x - base)
    return attr if raw else attr.sum(1)
