"""Layer attribution: how much each unit of a layer's output carries of a class score, by layer
conductance (Dhamdhere et al., 2018) and by integrated gradients at the layer (Captum's
``LayerConductance`` and ``LayerIntegratedGradients``, same definitions).

Both give a (B, C, h, w) attribution at ``layer``'s output (:func:`layer_attribution`, what the
tests compare to Captum). The registered methods
``"layer-conductance"`` and ``"layer-integrated-gradients"`` show its channel sum (B, h, w),
upsampled bilinearly to the input's (H, W): signed, and additive over positions before the
upsampling (the sum of the unupsampled map is the sum of the attribution).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .. import hooks
from ..hooks import eval_mode, model_lock
from .batching import Progress, auto_batch_size, chunks
from .catalog import describe
from .input_attribution import path_points, resolve_baseline
from .layers import Reshape, check_feature_map, check_reshape, layer_gradients, resolve_layer, upsample
from .registry import Call, method
from .targets import Target, TargetLike, check_input

__all__ = ["layer_attribution", "layer_conductance", "layer_integrated_gradients"]

Baseline = float | Sequence[float] | torch.Tensor | None


class _Path(NamedTuple):
    """The options of a path method (:meth:`checked` checks them)."""

    baseline: Baseline
    steps: int
    rule: str
    batch_size: int | None
    reshape: Reshape | None
    progress: Callable[[float], None] | None

    def checked(self) -> _Path:
        """These options with ``steps`` and ``reshape`` checked (a sentence naming the fix)."""
        steps = self.steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1 (intervals on the path from the baseline), got {steps!r}")
        return self._replace(reshape=check_reshape(self.reshape))


def path_chunks(
    x: torch.Tensor, base: torch.Tensor, alphas: list[float], per_forward: int
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(start, stop, points) over the path ``base + alpha (x - base)`` in chunks of about
    ``per_forward`` rows: the points of alphas [start, stop) stacked copy-major (row ``r*B + b``
    is point ``start + r`` of sample ``b``). ``x`` is an image batch or a layer's output."""
    b = x.shape[0]
    a_all = torch.tensor(alphas, device=x.device, dtype=x.dtype)
    diff = x - base
    for start, stop in chunks(len(alphas), b, per_forward):
        a = a_all[start:stop].view(-1, *([1] * x.dim()))
        yield start, stop, (base + a * diff.unsqueeze(0)).reshape((stop - start) * b, *x.shape[1:])


def _conductance(model: nn.Module, x: torch.Tensor, t: Target, layer: str | nn.Module, o: _Path) -> torch.Tensor:
    """Captum's LayerConductance: sum_k (A(p_k+1) - A(p_k)) * dF/dA(p_k) over the ``steps + 1``
    points p_k of the rule on the straight path."""
    alphas, _ = path_points(o.steps + 1, o.rule)
    base = resolve_baseline(o.baseline, x.detach())
    if t.needs_prediction:  # every point is explained for the image's own predicted class
        with torch.no_grad():
            t = t.fix(hooks.model_output(model(x)))
    b = x.shape[0]
    total: torch.Tensor | None = None
    prev: tuple[torch.Tensor, torch.Tensor] | None = None
    done = Progress(o.progress, len(alphas))
    for start, stop, points in path_chunks(x.detach(), base, alphas, auto_batch_size(x, o.batch_size)):
        k = stop - start
        a, g, _ = layer_gradients(model, points, t, layer, repeats=k, reshape=o.reshape)
        a, g = a.view(k, b, *a.shape[1:]), g.view(k, b, *g.shape[1:])
        if prev is not None:  # why carry the last point: its difference to the next chunk's first
            a, g = torch.cat([prev[0], a]), torch.cat([prev[1], g])
        part = ((a[1:] - a[:-1]) * g[:-1]).sum(0)
        total = part if total is None else total + part
        prev = a[-1:], g[-1:]
        done.advance(k)
    assert total is not None  # steps >= 1: at least two points
    return total


def _layer_output(
    model: nn.Module, x: torch.Tensor, layer: str | nn.Module, reshape: Reshape | None
) -> tuple[torch.Tensor, Reshape | None, torch.Tensor]:
    """(layer's own output, its map to a (B, C, h, w) grid or None, model output), no gradients."""
    with torch.no_grad(), hooks.capture(model, layer, cut=False, reshape=reshape) as cap:
        out = hooks.model_output(model(x))
    raw = cap.raw
    check_feature_map(cap.activations, layer, x.shape[0])  # a sentence for a layer that is no map
    assert raw is not None
    return raw, cap.reshape, out


def _gradient_at_set_layer(
    model: nn.Module, x: torch.Tensor, t: Target, layer: str | nn.Module, value: torch.Tensor, repeats: int
) -> torch.Tensor:
    """d score / d A with ``layer``'s output replaced by ``value`` in a forward of ``x`` (what
    Captum's LayerIntegratedGradients does); the part before the layer runs without a graph."""
    grad_mode = torch.is_grad_enabled()
    leaf = value.detach().requires_grad_(True)

    def head_without_graph(_m, _args):
        torch.set_grad_enabled(False)  # why: its graph would only be thrown away

    def replace(_m, _args, out):
        if not isinstance(out, torch.Tensor) or out.shape != leaf.shape:
            raise ValueError(f"layer {layer!r} returned another shape on the path than on the image; pick a layer")
        torch.set_grad_enabled(True)
        return leaf.clone()  # a copy: an in-place op after the layer must not write into the leaf

    try:
        with hooks.hooked() as placed:
            placed.forward_pre(model, head_without_graph).forward(hooks.get_layer(model, layer), replace)
            out = hooks.model_output(model(x))
        scores = t.scores(out, repeats)
        (g,) = torch.autograd.grad(scores.sum(), leaf)
    finally:
        torch.set_grad_enabled(grad_mode)
    return g


def _layer_ig(model: nn.Module, x: torch.Tensor, t: Target, layer: str | nn.Module, o: _Path) -> torch.Tensor:
    """Captum's LayerIntegratedGradients on the layer's output: (A(x) - A(x0)) * the rule's mean
    of dF/dA along A(x0) + alpha (A(x) - A(x0)), the rest of the forward run on ``x``."""
    alphas, weights = path_points(o.steps, o.rule)
    x = x.detach()
    base = resolve_baseline(o.baseline, x).expand_as(x)
    ax, to_grid, out = _layer_output(model, x, layer, o.reshape)
    a0, _, _ = _layer_output(model, base.contiguous(), layer, o.reshape)
    if t.needs_prediction:
        t = t.fix(out)
    b = x.shape[0]
    w_all = torch.tensor(weights, device=x.device, dtype=x.dtype)
    total = torch.zeros_like(ax)
    done = Progress(o.progress, o.steps)
    for start, stop, path in path_chunks(ax, a0, alphas, auto_batch_size(x, o.batch_size)):
        k = stop - start
        xs = x.repeat(k, *([1] * (x.dim() - 1)))
        g = _gradient_at_set_layer(model, xs, t, layer, path, k)
        total += torch.einsum("k,kb...->b...", w_all[start:stop], g.view(k, b, *ax.shape[1:]))
        done.advance(k)
    attr = (ax - a0) * total
    return check_feature_map(to_grid(attr) if to_grid is not None else attr, layer, b)


Compute = Callable[..., torch.Tensor]  # _conductance or _layer_ig


_COMPUTE: dict[str, Compute] = {}  # method name -> its (B, C, h, w) attribution (filled below)


def layer_attribution(
    model: nn.Module,
    x: torch.Tensor,
    method: str,
    target: TargetLike = None,
    layer: str | nn.Module | None = None,
    *,
    baseline: Baseline = 0.0,
    steps: int = 50,
    rule: str = "gausslegendre",
    batch_size: int | None = None,
    reshape: Reshape | None = None,
    progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """The (B, C, h, w) attribution at ``layer``'s output that the map of ``method`` sums over
    channels: what Captum's ``LayerConductance`` / ``LayerIntegratedGradients`` return.

    ``"layer-conductance"``: sum_k (A(p_k+1) - A(p_k)) * d score / d A (p_k) over the ``steps + 1``
    points p_k of ``rule`` on the straight path from ``baseline`` to ``x``.
    ``"layer-integrated-gradients"``: (A(x) - A(x0)) * sum_i w_i d score / d A at A(x0) + alpha_i
    (A(x) - A(x0)), the layer's output moved from its value on the baseline to its value on ``x``
    while the rest of the forward runs on ``x``; it sums to score(x) - score(x with the layer's
    baseline output) up to the quadrature's error (shrinking with ``steps``), which is
    score(x) - score(baseline) when nothing bypasses the layer.

    Args:
        model: the classifier (run in eval mode, left unchanged).
        x: images (B, C, H, W), checked as for every method.
        method: ``"layer-conductance"`` or ``"layer-integrated-gradients"``.
        target: class as for every method (None: each image's predicted class, at every point).
        layer: a module name or module with a (B, C, h, w) output (None: the default layer).
        baseline: the path's start (see :func:`~guidewidgets.explain.input_attribution.resolve_baseline`).
        steps: intervals (conductance: the rule's ``steps + 1`` points, as Captum) or points (IG).
        rule: the points' rule, Captum's names (``"gausslegendre"`` as Captum's default;
            ``"riemann_trapezoid"`` puts the first and last at the baseline and the image).
        batch_size: images per forward (Captum's ``internal_batch_size``): the path's points
            are run in chunks of this many images; the result is the same for any chunking.
        reshape: the layer's output to (B, C, h, w), for token layouts.
        progress: ``progress(fraction)`` as the chunks finish.

    Returns:
        (B, C, h, w): the attribution of each unit of the layer's (reshaped) output.
    """
    if method not in _COMPUTE:
        raise ValueError(f"layer_attribution computes {' or '.join(map(repr, _COMPUTE))}, got {method!r}")
    x = check_input(model, x)
    with model_lock(model), eval_mode(model):
        where = resolve_layer(model, x, layer)
        options = _Path(baseline, steps, rule, batch_size, reshape, progress).checked()
        return _COMPUTE[method](model, x, Target(target, x.shape[0]), where, options)


def _map(attr: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The channel sum of a (B, C, h, w) layer attribution, upsampled to ``x``'s (H, W)."""
    return upsample(attr.sum(1), x)


_OPTIONS = """

Args:
    baseline: the path's start (see :func:`~guidewidgets.explain.input_attribution.resolve_baseline`).
    steps: intervals (conductance) or points (integrated gradients) on the path.
    rule: the points' rule, Captum's names (Gauss-Legendre by default, as Captum).
    batch_size: images per forward (Captum's ``internal_batch_size``): the path's points are run in
        chunks of this many images; the result is the same for any chunking.
    reshape: the layer's output to (B, C, h, w), for token layouts.

Returns:
    (B, H, W): the (B, C, h, w) attribution summed over channels, upsampled bilinearly.
"""


def _layer_method(compute: Compute, name: str, captum: str) -> Compute:
    """Register ``compute``'s (B, C, h, w) attribution as the map method ``name`` (:func:`_map`, the
    catalog's row ``name``), ``layer_attribution``'s method of the same name; ``captum``: the peer's
    class."""
    _COMPUTE[name] = compute

    def fn(
        c: Call,
        *,
        baseline: Baseline = 0.0,
        steps: int = 50,
        rule: str = "gausslegendre",
        batch_size: int | None = None,
        reshape: Reshape | None = None,
    ) -> torch.Tensor:
        assert c.layer is not None  # uses_layer: the registry resolved it
        options = _Path(baseline, steps, rule, batch_size, reshape, c.progress).checked()
        return _map(compute(c.model, c.x, c.target, c.layer, options), c.x)

    fn.__name__ = fn.__qualname__ = name.replace("-", "_")
    fn.__doc__ = f"{describe(name).title} (Captum's ``{captum}``, see :func:`layer_attribution`) as a map." + _OPTIONS
    return method(name, uses_layer=True, signed=True, slow=True, quick={"steps": 4})(fn)


layer_conductance = _layer_method(_conductance, "layer-conductance", "LayerConductance")
layer_integrated_gradients = _layer_method(_layer_ig, "layer-integrated-gradients", "LayerIntegratedGradients")
