"""Activation maximization: the image that a channel, a neuron or a class score "wants".

Gradient ascent on the input for ``S(I) - l2 ||I - 0.5||^2 - tv TV(I)``, where S is a channel's
mean activation, one neuron, or a class score taken before the softmax (the lecture's
argmax_I S_c(I) - lambda ||I||^2, with the image centred on mid-grey since the models take
[0, 1] images). Regularisers from the literature: random jitter (translation) at every step,
Gaussian blur of the pixels every few steps (Yosinski et al. 2015), total variation, and the
Fourier parametrisation with decorrelated colours of Olah et al. (Distill 2017, as in lucid/lucent):
the image is a spectrum scaled by 1/frequency, mapped through a colour-decorrelation matrix and a
sigmoid. Every image of the batch has its own target, so 16 channels are optimised at once.
Seeded: the same arguments give the same bytes on the same machine.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import hooks
from ..checks import check_int, check_number
from ..explain.targets import input_channels
from ._common import Progress, check_channels, forward_to, locked_eval, model_device

__all__ = ["Maximized", "maximize"]

# lucid's colour correlation (square root of the covariance of ImageNet colours, by SVD).
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


@dataclass
class Maximized:
    """``images`` (B, C, H, W) in [0, 1] (C: the model's input channels), one per target; ``history``
    (steps, B): the target's value at each step (on the jittered image the step saw); ``final`` (B,):
    its value on the result."""

    images: torch.Tensor
    targets: list[int]
    kind: str
    history: torch.Tensor
    final: torch.Tensor


class _Image(nn.Module):
    """The parametrised batch of images: ``forward()`` gives (B, C, H, W) in [0, 1]."""

    scale: torch.Tensor

    def __init__(
        self, b: int, size: tuple[int, int], param: str, decorrelate: bool, g: torch.Generator, channels: int = 3
    ) -> None:
        super().__init__()
        h, w = size
        self.size, self.param, self.decorrelate = size, param, decorrelate
        if param == "fourier":
            fy = torch.fft.fftfreq(h)[:, None]
            fx = torch.fft.rfftfreq(w)[None, :]
            freqs = (fx * fx + fy * fy).sqrt()
            self.register_buffer("scale", 1.0 / freqs.clamp_min(1.0 / max(h, w)))
            self.coeffs = nn.Parameter(torch.randn((b, channels, h, w // 2 + 1, 2), generator=g) * 0.01)
        else:
            self.coeffs = nn.Parameter(torch.randn((b, channels, h, w), generator=g) * 0.01)

    def logits(self) -> torch.Tensor:
        if self.param == "fourier":
            spectrum = torch.view_as_complex(self.coeffs * self.scale[..., None])
            z = torch.fft.irfft2(spectrum, s=self.size, norm="ortho") / 4.0  # lucid's "magic" 4
        else:
            z = self.coeffs
        if self.decorrelate:
            z = torch.einsum("bchw,dc->bdhw", z, _COLOR.to(z.device))
        return z

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits())


def _pair(value: object, name: str, low: int) -> tuple[int, int]:
    """``value`` as a pair of ints >= ``low`` (refused, not truncated, when it is not one)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(f"{name} must be a pair of ints (height, width) or (row, col), got {value!r}")
    return check_int(value[0], f"{name}[0]", low), check_int(value[1], f"{name}[1]", low)


def _targets(targets: object) -> list:
    """``targets`` as a list (its entries are checked against the layer by ``check_channels``)."""
    if isinstance(targets, torch.Tensor) and not targets.is_floating_point() and targets.dim() <= 1:
        return targets.reshape(-1).tolist()
    if isinstance(targets, numbers.Integral):
        return [targets]
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence):
        raise TypeError(f"targets must be an index or a sequence of indices, got {targets!r}")
    return list(targets)


def _gaussian(sigma: float) -> torch.Tensor:
    r = max(1, int(math.ceil(2 * sigma)))
    # Why float64 and t / sigma: a tiny sigma (1e-200) is 0 in float32, and 0 / 0 is NaN.
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).float()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = _gaussian(sigma).to(x.device)
    c, r = x.shape[1], len(k) // 2
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _tv(x: torch.Tensor) -> torch.Tensor:
    """Total variation per image (sum of squared neighbour differences), (B,)."""
    dy = (x[:, :, 1:] - x[:, :, :-1]).pow(2).sum((1, 2, 3))
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).sum((1, 2, 3))
    return dx + dy


@dataclass(frozen=True)
class _Ascent:
    """The checked knobs of one gradient ascent (their meaning: ``maximize``)."""

    steps: int
    lr: float
    optimizer: str
    l2: float
    tv: float
    blur: float
    blur_every: int
    jitter: int
    param: str


def _check_ascent(size: object, **knobs: object) -> tuple[tuple[int, int], _Ascent]:
    """``size`` as (h, w) and the ascent's knobs, each checked with a sentence that names it."""
    param, optimizer = knobs["param"], knobs["optimizer"]
    if param not in ("pixel", "fourier"):
        raise ValueError(f"param must be 'pixel' or 'fourier', got {param!r}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    steps = check_int(knobs["steps"], "steps", 1)
    h, w = _pair(size, "size", 1)
    lr = check_number(knobs["lr"], "lr", 0.0, low_open=True)
    # Why refuse NaN and negatives: NaN weights are silently skipped (NaN > 0 is false), and a
    # negative one rewards noise instead of penalising it.
    l2, tv = check_number(knobs["l2"], "l2", 0.0), check_number(knobs["tv"], "tv", 0.0)
    # Why the bound: the blur pads by reflection, which needs its radius (2 sigma) below the side.
    blur = check_number(knobs["blur"], f"blur (sigma, px) for a {h} x {w} image", 0.0, (min(h, w) - 1) / 2)
    blur_every = check_int(knobs["blur_every"], "blur_every", 1)
    jitter = check_int(knobs["jitter"], "jitter (pixels)", 0)
    return (h, w), _Ascent(steps, lr, str(optimizer), l2, tv, blur, blur_every, jitter, str(param))


def _probe(
    model: nn.Module, probe: torch.Tensor, kind: str, layer: str | nn.Module | None, position: tuple[int, int] | None
) -> tuple[int, tuple[int, int] | None]:
    """How many targets there are (classes or channels) and the neuron's position, checked on one image."""
    with torch.no_grad():
        if kind == "class":
            return hooks.model_output(model(probe)).shape[1], position
        assert layer is not None
        a = forward_to(model, layer, probe)
        if position is None:
            position = (a.shape[2] // 2, a.shape[3] // 2)
        if not (0 <= position[0] < a.shape[2] and 0 <= position[1] < a.shape[3]):
            raise ValueError(f"position {position} is outside the layer's {a.shape[2]} x {a.shape[3]} map")
        return a.shape[1], position


def _scorer(
    model: nn.Module,
    kind: str,
    layer: str | nn.Module | None,
    position: tuple[int, int] | None,
    chans: list[int],
    device: torch.device,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The score of each image's own target, (B,): a class logit, a channel's mean or one unit."""
    index = torch.tensor(chans, device=device)
    rows = torch.arange(len(chans), device=device)

    def score(x: torch.Tensor) -> torch.Tensor:
        if kind == "class":
            out = hooks.model_output(model(x))
            out = out.flatten(2).mean(2) if out.dim() > 2 else out
            return out[rows, index]
        assert layer is not None
        a = forward_to(model, layer, x)
        if kind == "channel":
            return a[rows, index].mean((1, 2))
        assert position is not None
        return a[rows, index, position[0], position[1]]

    return score


def _ascend(
    image: _Image,
    score: Callable[[torch.Tensor], torch.Tensor],
    knobs: _Ascent,
    g: torch.Generator,
    progress: Progress | None,
) -> torch.Tensor:
    """Steps ``image``'s parameters up the regularised objective; returns the history (steps, B)."""
    params = list(image.parameters())
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=knobs.lr) if knobs.optimizer == "adam" else torch.optim.SGD(params, lr=knobs.lr)
    )
    history = torch.zeros((knobs.steps, params[0].shape[0]))
    jitter = knobs.jitter
    with torch.enable_grad():
        for step in range(knobs.steps):
            x = image()
            seen = x
            if jitter > 0:
                dy, dx = (int(v) for v in torch.randint(-jitter, jitter + 1, (2,), generator=g))
                seen = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            s = score(seen)
            objective = s.sum()
            if knobs.l2 > 0:
                objective = objective - knobs.l2 * (x - 0.5).pow(2).sum()
            if knobs.tv > 0:
                objective = objective - knobs.tv * _tv(x).sum()
            history[step] = s.detach().float().cpu()
            (grad,) = torch.autograd.grad(objective, params)
            params[0].grad = -grad  # ascent; the optimiser's own parameter, never the model's
            opt.step()
            params[0].grad = None
            if knobs.blur > 0 and knobs.param == "pixel" and (step + 1) % knobs.blur_every == 0:
                with torch.no_grad():
                    params[0].copy_(_blur(params[0], knobs.blur))
            if progress is not None:
                progress(step + 1, knobs.steps)
    return history


def maximize(
    model: nn.Module,
    targets: int | Sequence[int],
    kind: Literal["class", "channel", "neuron"] = "class",
    layer: str | nn.Module | None = None,
    position: tuple[int, int] | None = None,
    size: tuple[int, int] = (96, 96),
    steps: int = 128,
    lr: float = 0.05,
    optimizer: Literal["adam", "sgd"] = "adam",
    l2: float = 1e-3,
    tv: float = 0.0,
    blur: float = 0.0,
    blur_every: int = 4,
    jitter: int = 0,
    param: Literal["pixel", "fourier"] = "pixel",
    decorrelate: bool = False,
    seed: int = 0,
    progress: Progress | None = None,
) -> Maximized:
    """One image per target, each raising its target by gradient ascent (see the module docs).

    ``kind="class"``: ``targets`` are class indices, the score is the model's output before any
    softmax (averaged over pixels for a segmenter). ``"channel"``: channels of ``layer``, the
    score is the channel's mean. ``"neuron"``: the channel's unit at ``position`` (default: the
    map's centre). ``l2`` weighs ``||I - 0.5||^2`` (summed over pixels), ``tv`` the total
    variation, ``blur`` is a Gaussian sigma (pixels, applied every ``blur_every`` steps, pixel
    parametrisation only), ``jitter`` the largest random shift in pixels. ``progress(step, steps)``.
    """
    if kind not in ("class", "channel", "neuron"):
        raise ValueError(f"kind must be 'class', 'channel' or 'neuron', got {kind!r}")
    knobs = dict(steps=steps, lr=lr, optimizer=optimizer, l2=l2, tv=tv, blur=blur, blur_every=blur_every)
    (h, w), ascent = _check_ascent(size, jitter=jitter, param=param, **knobs)
    if kind != "class" and layer is None:
        raise ValueError(f"kind={kind!r} needs layer=... (a feature-map layer, see hooks.feature_maps)")
    if position is not None:
        position = _pair(position, "position", 0)
    seed = check_int(seed, "seed", 0)
    device = model_device(model)
    g = torch.Generator().manual_seed(seed)
    tlist = _targets(targets)
    # Why the model's own channel count: a grey model takes (B, 1, H, W) images.
    channels = input_channels(model) or 3
    if decorrelate and channels != 3:
        raise ValueError(f"decorrelate=True mixes RGB colours, but this model takes {channels}-channel images")
    image = _Image(len(tlist), (h, w), param, decorrelate, g, channels).to(device)

    with locked_eval(model):
        # Check targets and find the map size once, before any step.
        count, position = _probe(model, image()[:1].detach(), kind, layer, position)
        chans = check_channels(tlist, count, "class" if kind == "class" else "channel")
        score = _scorer(model, kind, layer, position, chans, device)
        history = _ascend(image, score, ascent, g, progress)
        with torch.no_grad():
            final_images = image().detach()
            final = score(final_images).float().cpu()
    return Maximized(final_images.cpu(), chans, kind, history, final)
