"""DeepLIFT with the rescale rule, and DeepLIFT-SHAP over a set of baselines.

DeepLIFT (Shrikumar et al. 2017) explains ``score(x) - score(r)`` for a reference image ``r``:
it back-propagates like the gradient, except that every nonlinearity ``y = f(z)`` passes back
the *secant* slope ``(f(z_x) - f(z_r)) / (z_x - z_r)`` (the rescale rule; its own derivative where
``z_x`` and ``z_r`` are closer than ``eps``) and every max-pool hands each input the share of the
output's difference it won (the rule Captum uses). Multiplied by ``x - r``, the attribution sums
to ``score(x) - score(r)`` exactly on nets of linear layers, element-wise activations and
max-pools ("summation to delta"); other nonlinear operations (products in squeeze-excitation
blocks, attention) pass the plain gradient, so the sum is then approximate.

How: the image and its reference run as one batch ``[x; r]``, and the activations are intercepted
as function calls (a torch function mode, per thread, gone when the call ends; as
:class:`guidewidgets.hooks.ReLURule` does), not as module hooks. So functional activations
(DenseNet's ``F.relu``), in-place ones and a module used twice (ResNet's ``relu``) all get the
rule; Captum's module hooks skip the first and refuse the last. Activations covered: the ReLU
family (ReLU, ReLU6/hardtanh, LeakyReLU, PReLU, ELU, SELU, CELU), the smooth ones (SiLU, GELU,
Hardswish, Mish, Softplus) and sigmoid, tanh, hardsigmoid. Captum applies the rule only to
``nn.ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus`` modules; on nets of those the two agree.
Where max-pool windows overlap (kernel 3, stride 2), Captum's ``max_unpool`` keeps one of two
contributions to an input that wins in both windows; here they add up, which keeps the
summation exact. And where an ``nn.ReLU`` feeds a max-pool directly (VGG), Captum's ReLU hook
reads its output gradient before the max-pool's hook on the same tensor has rewritten it, so its
sums miss the score difference (-0.0072 for -0.0091 on a conv-ReLU-pool net); with a copy between
the two it agrees with this module to 1e-15.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..hooks import _ACTIVATION_FUNCS, _RELU_FUNCS, _out_of_place, model_output
from .batching import Progress, auto_batch_size, chunks
from .gradient_shap import BaselinesLike, resolve_baselines
from .input_attribution import attribution_map, resolve_baseline, signed_image_method
from .registry import Call
from .targets import Target

__all__ = ["deeplift", "deeplift_shap", "Rescale"]

_SQUASH_FUNCS = {torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid, torch.tanh, torch.Tensor.tanh, F.tanh}
_SQUASH_FUNCS |= {F.softplus, F.hardsigmoid, F.logsigmoid}
_ELEMENTWISE = _RELU_FUNCS | _ACTIVATION_FUNCS | _SQUASH_FUNCS
_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _plain(func: Callable[..., Any]) -> Callable[..., Any]:
    """The out-of-place twin of an in-place activation (``relu_`` -> ``F.relu``)."""
    name = getattr(func, "__name__", "")
    if not name.endswith("_"):
        return func
    return getattr(F, name[:-1], None) or getattr(torch, name[:-1])


def _spread(values: torch.Tensor, index: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Each pooled value added to the input position it came from (overlaps add up)."""
    n, c = shape[0], shape[1]
    flat = values.new_zeros((n, c, shape[2] * shape[3]))
    return flat.scatter_add_(2, index.flatten(2), values.flatten(2)).view(shape)


class _MaxPoolRescale(torch.autograd.Function):
    """Forward: max-pool of ``[x; r]``; backward: DeepLIFT's max-pool rule (Captum's ``maxpool``)."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, pool: dict, eps: float) -> torch.Tensor:  # type: ignore[override]
        out, index = F.max_pool2d(z, **pool, return_indices=True)
        ctx.save_for_backward(z.detach().clone(), out.detach(), index)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        z, out, index = ctx.saved_tensors
        n = z.shape[0] // 2
        top = torch.maximum(out[:n], out[n:])
        # Why the cross maximum: of two windows' maxima, the part up to the reference's maximum is
        # credited where the reference's maximum sits, the rest where the image's does.
        spread = _spread(grad * torch.cat([top - out[n:], out[:n] - top]), index, z.shape)
        spread = spread[:n] + spread[n:]
        din = z[:n] - z[n:]
        small = din.abs() <= ctx.eps
        rescaled = spread / torch.where(small, torch.ones_like(din), din)
        plain = _spread(grad, index, z.shape)
        return torch.where(small.repeat(2, 1, 1, 1), plain, rescaled.repeat(2, 1, 1, 1)), None, None


class Rescale(TorchFunctionMode):
    """``with Rescale(batch) as r: model(torch.cat([x, ref]))``: every element-wise activation and
    2-D max-pool run on the stacked batch back-propagates by DeepLIFT's rescale rule.

    Calls on tensors whose first dimension is not ``2 * batch`` (reshaped tokens) keep their plain
    gradient. ``r.calls`` counts the calls the rule changed.
    """

    def __init__(self, batch: int, eps: float = 1e-10) -> None:
        super().__init__()
        self.batch, self.eps, self.calls = batch, eps, 0

    def _applies(self, args: tuple) -> bool:
        z = args[0] if args else None
        return isinstance(z, torch.Tensor) and z.requires_grad and z.dim() > 0 and z.shape[0] == 2 * self.batch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.max_pool2d and self._applies(args):
            pool = dict(zip(_POOL_ARGS, args)) | kwargs
            z = pool.pop("input")
            if not pool.pop("return_indices", False) and z.dim() == 4:
                self.calls += 1
                return _MaxPoolRescale.apply(z, pool, self.eps)
        if func not in _ELEMENTWISE or not self._applies(args):
            return func(*args, **kwargs)
        self.calls += 1
        pos, kw = _out_of_place(args, kwargs)
        plain = _plain(func)
        z = args[0].detach()
        with torch.enable_grad():
            zz = z.clone().requires_grad_(True)
            fz = plain(zz, *pos[1:], **kw)
            (slope,) = torch.autograd.grad(fz.sum(), zz)
        fz = fz.detach()
        n = self.batch
        din, dout = z[:n] - z[n:], fz[:n] - fz[n:]
        small = (din.abs() <= self.eps).repeat(2, *([1] * (z.dim() - 1)))
        secant = (dout / torch.where(din.abs() <= self.eps, torch.ones_like(din), din)).repeat(
            2, *([1] * (z.dim() - 1))
        )
        slope = torch.where(small, slope, secant)
        # Why this form: its value is f(z) exactly and its gradient with respect to z is the slope.
        return fz + slope * (args[0] - z)


def _check_eps(eps: float) -> float:
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(
            f"eps must be a number >= 0 (where |z_x - z_r| is at most eps, the plain slope is used), got {eps!r}"
        )
    return float(eps)


def _multipliers(
    model: nn.Module, x: torch.Tensor, ref: torch.Tensor, t: Target, eps: float, copies: int = 1
) -> torch.Tensor:
    """DeepLIFT's multipliers d score / d x of ``x`` against ``ref`` (same shape): ``copies``
    copies of the batch ``t`` scores, copy-major, as (copies * B, C, H, W)."""
    if isinstance(model, torch.jit.ScriptModule):
        # Why refuse: a scripted forward makes no Python-level activation calls to intercept, so
        # the result would silently be the plain gradient times (x - baseline).
        raise TypeError(
            "DeepLIFT needs the activations' Python calls inside the forward, which a scripted model "
            "(torch.jit.script/trace) does not make. Explain the original nn.Module"
        )
    b = x.shape[0]
    both = torch.cat([x, ref]).detach().requires_grad_(True)
    with torch.enable_grad():
        with Rescale(b, eps):
            out = model_output(model(both))
        # Why both halves' scores: the max-pool rule reads the reference's gradient too.
        (g,) = torch.autograd.grad(t.scores(out, repeats=2 * copies).sum(), both)
    return g[:b]


@signed_image_method("deeplift")
def deeplift(
    c: Call,
    *,
    raw: bool = False,
    baseline: float | Sequence[float] | torch.Tensor | None = 0.0,
    eps: float = 1e-10,
) -> torch.Tensor:
    """DeepLIFT multipliers times ``x - baseline``, summed over channels (``raw``: per channel).

    ``baseline``: the reference, as for Integrated Gradients (0, black, by default; a number, a
    colour, or an image (C, H, W) or batch (B, C, H, W)). One forward of ``[x; baseline]`` and
    one backward. The class is the image's (predicted or given).
    """
    eps = _check_eps(eps)
    x = c.x.detach()
    ref = resolve_baseline(baseline, x).expand_as(x)
    attr = _multipliers(c.model, x, ref, c.fixed_target(), eps) * (x - ref)
    return attribution_map(attr, raw)


@signed_image_method("deeplift-shap")
def deeplift_shap(
    c: Call,
    *,
    raw: bool = False,
    baselines: BaselinesLike = None,
    eps: float = 1e-10,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The mean of :func:`deeplift` over ``baselines`` (default: black, mid-grey and white images;
    see :func:`guidewidgets.explain.gradient_shap.resolve_baselines`), as Captum's ``DeepLiftShap``;
    ``batch_size``: images per forward (Captum's ``internal_batch_size``: several baselines go in
    one; None: chosen from the image size)."""
    eps = _check_eps(eps)
    x = c.x.detach()
    refs = resolve_baselines(baselines, x)
    t = c.fixed_target()
    total = torch.zeros_like(x)
    done = Progress(c.progress, len(refs))
    b = x.shape[0]
    # Why batched: one forward for several baselines (each costs 2 B images) is cheaper than many.
    for start, stop in chunks(len(refs), 2 * b, auto_batch_size(x, batch_size)):
        k = stop - start
        ref = refs[start:stop].repeat_interleave(b, 0)  # copy-major: copy i is baseline start + i
        xs = x.repeat(k, 1, 1, 1)
        attr = _multipliers(c.model, xs, ref, t, eps, copies=k) * (xs - ref)
        total += attr.view(k, *x.shape).sum(0)
        done.advance(k)
    return attribution_map(total / len(refs), raw)
