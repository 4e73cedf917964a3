"""Gradient-free class activation maps: Eigen-CAM, and the perturbation CAMs Score-CAM and
Ablation-CAM, on the base of :mod:`guidewidgets.explain.cam_base`.

Same conventions as :mod:`guidewidgets.explain.cam`: the map at the layer's resolution, ReLU'd
unless ``relu=False``, upsampled bilinearly to the input's size and not normalised. The two
perturbation CAMs (Score-CAM, Ablation-CAM) run one forward per channel, batched over channels:
a layer of 1024 channels (DenseNet-121) or 768 (ViT, Swin) means that many forwards per image.
They warn before more than 256 such forwards start, ``max_channels=k`` keeps only each image's k
channels of largest mean activation, and ``progress`` counts the masked forwards.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Generator, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .. import hooks
from ..hooks import model_output
from .batching import Progress, auto_batch_size, chunks
from .cam_base import CamCall, cam_method, clean_pass
from .layers import check_feature_map, recording
from .targets import Target

__all__ = ["score_cam", "ablation_cam", "eigen_cam"]


@cam_method("eigen-cam")
def eigen_cam(c: CamCall) -> torch.Tensor:
    """Eigen-CAM: projection of the (pixels x channels) activations, centred per channel, on their
    first right singular vector. The sign of a singular vector is arbitrary; it is chosen so that
    the map correlates positively with the channel sum of the activations (high where the layer
    fires), which makes the result deterministic across devices and LAPACK builds."""
    with torch.no_grad(), recording(c.model, c.layer, c.reshape) as rec:
        out = model_output(c.model(c.x))
        c.target.scores(out)  # unused, but a wrong target fails here as it does for every method
    a = check_feature_map(rec.get("out"), c.layer)
    b, n, h, w = a.shape
    m = a.reshape(b, n, h * w).transpose(1, 2)  # (B, hw, C)
    m = m - m.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    proj = torch.einsum("bpc,bc->bp", m, vh[:, 0])
    total = a.reshape(b, n, h * w).sum(1)
    sign = torch.sign((proj * (total - total.mean(1, keepdim=True))).sum(1, keepdim=True))
    proj = proj * torch.where(sign == 0, torch.ones_like(sign), sign)
    return proj.reshape(b, h, w)


def _tail_scores(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | nn.Module,
    t: Target,
    replacements: Iterator[tuple[torch.Tensor, int]],
    state: dict,
) -> Generator[torch.Tensor, None, None]:
    """For each (feature maps (k*B, C, h, w) copy-major, k), the target scores (k, B) of the model
    with ``layer``'s output replaced by them.

    Why the fast path: the part before the layer does not depend on the replacement, so it runs
    on the B images once per batch and only the tail sees k*B rows. A model whose tail mixes in
    tensors from before the layer (skip connections) breaks the row count or raises; then (and
    from there on) the images are repeated k times instead.
    """
    module = hooks.get_layer(model, layer)
    b = x.shape[0]
    current: dict = {}

    def hook(_m, _args, out):
        return current["a"]

    # Why hooked(): a user's own model(x) in another thread must not get these replacements.
    with hooks.hooked() as placed, torch.no_grad():
        placed.forward(module, hook)
        for a_rep, k in replacements:
            current["a"] = a_rep
            out = None
            if state.get("fast", True):
                try:
                    out = model_output(model(x))
                    if out.shape[0] != k * b:
                        out = None
                except (RuntimeError, ValueError):
                    out = None
                if out is None:
                    state["fast"] = False
            if out is None:
                xs = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
                out = model_output(model(xs))
            yield t.scores(out, k).view(k, b)


@cam_method("ablation-cam", slow=True, quick={"max_channels": 8}, channel_weights=True)
def ablation_cam(
    c: CamCall, *, fill: float = 0.0, batch_size: int | None = None, max_channels: int | None = None
) -> torch.Tensor:
    """Ablation-CAM: w_k = (y - y_k) / y with y_k the score when channel k is set to ``fill``.

    One forward per channel, batched over channels; only the part of the model after the layer
    is run per channel when the model allows it (see the module's notes).

    Args:
        max_channels: ablate only each image's ``max_channels`` channels of largest mean activation
            at the layer (the others get weight 0): that many forwards per image instead of one
            per channel. The rule needs no gradient, as the method itself. None: every channel.
    """
    model, x, layer, b = c.model, c.x, c.layer, c.x.shape[0]
    keep = _check_max_channels(max_channels)
    a, out, t = clean_pass(c, replaces="ablation-cam")
    base = t.scores(out)
    zero = (base == 0).nonzero().flatten().tolist()
    if zero:  # the relative drop (y - y_k) / y would be NaN or infinite
        raise ValueError(
            f"the target score is exactly 0 for image {zero[0]}, and Ablation-CAM divides by it; "
            "pick another target, or use 'score-cam' or 'grad-cam' for this one"
        )
    chosen = _channels(a, keep)  # (B, K) channel indices of each image
    n = chosen.shape[1]
    _warn_many("ablation-cam", n, b, keep)
    done = Progress(c.progress, n * b)
    rows = torch.arange(b, device=a.device)

    def ablated() -> Iterator[tuple[torch.Tensor, int]]:
        for start, stop in chunks(n, b, auto_batch_size(x, batch_size)):
            k = stop - start
            rep = a.unsqueeze(0).repeat(k, 1, 1, 1, 1)  # (k, B, C, h, w)
            idx = torch.arange(k, device=a.device)
            rep[idx[:, None], rows[None, :], chosen[:, start:stop].t()] = fill  # copy i: image b's channel i off
            yield rep.view(k * b, *a.shape[1:]), k

    drops = torch.empty(n, b, device=x.device, dtype=a.dtype)
    start = 0
    with contextlib.closing(_tail_scores(model, x, layer, t, ablated(), {})) as tails:
        for scores in tails:
            k = scores.shape[0]
            drops[start : start + k] = base.unsqueeze(0) - scores
            start += k
            done.advance(k * b)
    w = (drops / base.unsqueeze(0)).t()  # (B, K); the paper's relative drop
    return c.combine(w, _gather(a, chosen))


@cam_method("score-cam", slow=True, quick={"max_channels": 8}, channel_weights=True)
def score_cam(c: CamCall, *, batch_size: int | None = None, max_channels: int | None = None) -> torch.Tensor:
    """Score-CAM: each channel, upsampled and min-max normalised, masks the image; the target
    scores (logits, as pytorch-grad-cam) of the C masked images, softmax'd over channels, weight
    the channels. Subtracting the baseline score, as the paper writes it, does not change a
    softmax. C forwards, batched over channels.

    Each image is computed on its own (per-image masks, a softmax per image), so a batch gives
    the single-image maps up to float rounding. In float32 that rounding can show: on a random
    network the C scores are nearly equal, the weights nearly 1/C, and the signed channels cancel
    to a near-flat map, so forwards batched differently (other kernels, other summation order)
    move it visibly (measured: 5 % of the map's maximum on a random ConvNeXt-tiny, 1e-9 in float64).

    Args:
        max_channels: keep only each image's ``max_channels`` channels of largest mean activation
            at the layer: that many masked forwards per image, and the softmax runs over the kept
            channels only. None: every channel (the paper's method).
    """
    model, x = c.model, c.x
    b, _, h, w = x.shape
    keep = _check_max_channels(max_channels)
    a, _, t = clean_pass(c)
    a = _gather(a, _channels(a, keep))
    n = a.shape[1]
    _warn_many("score-cam", n, b, keep)
    done = Progress(c.progress, n * b)
    scores = torch.empty(n, b, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        for start, stop in chunks(n, b, auto_batch_size(x, batch_size)):
            k = stop - start
            up = unit_masks(a[:, start:stop], (h, w))  # (B, k, H, W)
            masked = x.unsqueeze(0) * up.transpose(0, 1).unsqueeze(2)  # (k, B, 3, H, W)
            out = model_output(model(masked.reshape(k * b, *x.shape[1:])))
            scores[start:stop] = t.scores(out, k).view(k, b)
            done.advance(k * b)
        weights = scores.t().softmax(1)
    return c.combine(weights, a)


def unit_masks(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Score-CAM's masks: feature maps (B, k, h, w) upsampled bilinearly to ``size`` and min-max
    normalised per map to [0, 1] (a flat map gives 0), (B, k, H, W)."""
    up = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    lo = up.amin((2, 3), keepdim=True)
    span = up.amax((2, 3), keepdim=True) - lo
    return torch.where(span > 0, (up - lo) / span.clamp_min(1e-12), torch.zeros_like(up))


# Masked forwards (channels x images) above which the perturbation CAMs warn before they start.
_MANY_FORWARDS = 256


def _check_max_channels(max_channels: object) -> int | None:
    """``max_channels`` as an int >= 1, or None; anything else refused with the fix."""
    if max_channels is None:
        return None
    if isinstance(max_channels, bool) or not isinstance(max_channels, numbers.Integral):
        raise TypeError(
            "max_channels must be None (every channel) or a whole number of channels to keep per image, "
            f"e.g. max_channels=64; got {max_channels!r} ({type(max_channels).__name__})"
        )
    if max_channels < 1:
        raise ValueError(
            f"max_channels must be at least 1 (the number of channels kept per image), got {max_channels}; "
            "use None for every channel"
        )
    return int(max_channels)


def _channels(a: torch.Tensor, keep: int | None) -> torch.Tensor:
    """(B, K) channel indices of each image's ``keep`` channels of largest spatial mean, in
    channel order (all C channels when ``keep`` is None or >= C). Per image, so that a batch
    picks what each image alone would."""
    b, c = a.shape[:2]
    if keep is None or keep >= c:
        return torch.arange(c, device=a.device).expand(b, c)
    return a.mean((2, 3)).topk(keep, dim=1).indices.sort(1).values


def _gather(a: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """The (B, K, h, w) maps of the chosen channels of each image (``a`` itself when all are chosen)."""
    if chosen.shape[1] == a.shape[1]:
        return a
    return a.gather(1, chosen[:, :, None, None].expand(-1, -1, *a.shape[2:]))


def _warn_many(method: str, channels: int, images: int, keep: int | None, copies: int = 1, stacklevel: int = 5) -> None:
    """Tell before a long run starts: the number of masked forwards, and ``max_channels`` as the cure
    (``copies``: masked forwards per channel and image, e.g. noisy or scaled copies; ``stacklevel``:
    frames up to the user's call, through the method and the two registry wrappers)."""
    forwards = channels * images * copies
    if keep is not None or forwards <= _MANY_FORWARDS:
        return
    per = f" x {copies} copies" if copies != 1 else ""
    warnings.warn(
        f"{method} will run {forwards} masked forwards ({channels} channels x {images} image"
        f"{'s' if images != 1 else ''}{per}), {copies if copies != 1 else 'one'} per channel of the layer; "
        "pass max_channels=64 (for example) "
        "to keep only each image's channels of largest mean activation and run that many per image",
        UserWarning,
        stacklevel=stacklevel,
    )
