"""More class activation maps: Score-CAM, Ablation-CAM, LayerCAM, XGrad-CAM, HiResCAM, Eigen-CAM
and Sharpen Focus.

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
from collections.abc import Callable, Generator, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .. import hooks
from ..hooks import model_output
from .batching import Progress, auto_batch_size, chunks
from .layers import check_feature_map, layer_gradients, recording, resolve_layer, upsample
from .registry import MethodInfo, register
from .targets import Target, TargetLike

__all__ = ["score_cam", "ablation_cam", "layer_cam", "xgrad_cam", "hires_cam", "eigen_cam", "sharpen_focus"]


def _finish(maps: torch.Tensor, x: torch.Tensor, relu: bool) -> torch.Tensor:
    if relu:
        maps = maps.clamp_min(0)
    return upsample(maps, x)


def _info(name: str, title: str, reference: str, summary: str, slow: bool = False) -> MethodInfo:
    return MethodInfo(
        name=name,
        title=title,
        family="cam",
        uses_layer=True,
        signed=False,
        slow=slow,
        has_image=False,
        reference=reference,
        summary=summary,
    )


def _clean_pass(
    model: nn.Module, x: torch.Tensor, t: Target, layer: str | nn.Module, *, replaces: str | None = None
) -> tuple[torch.Tensor, torch.Tensor, Target]:
    """(feature map at ``layer``, output, target fixed to the clean image's classes), no autograd.

    ``replaces``: the name of a method that writes edited maps back into the layer; it needs the
    layer's own output to be a (B, C, h, w) map, not tokens read as one.
    """
    with torch.no_grad(), recording(model, layer) as rec:
        out = model_output(model(x))
    a = check_feature_map(rec.get("out"), layer)
    raw = rec.get("raw")
    if replaces is not None and isinstance(raw, torch.Tensor) and raw.shape != a.shape:
        name = layer if isinstance(layer, str) else type(layer).__name__
        raise ValueError(
            f"{replaces} writes edited (B, C, h, w) maps back into the layer, but layer {name!r} outputs "
            f"{tuple(raw.shape)} (transformer tokens or channels-last), read as {tuple(a.shape)}: use "
            "'grad-cam', 'score-cam' or 'attention-rollout' on this model, or a layer with a (B, C, h, w) output"
        )
    return a, out, t.fix(out)


# --- gradient CAMs ---------------------------------------------------------------------------------


@register(
    _info(
        "layer-cam",
        "LayerCAM",
        "Jiang et al., LayerCAM: Exploring Hierarchical Class Activation Maps for Localization, IEEE TIP 2021",
        "Each activation weighted by its own positive gradient (no spatial averaging): usable at shallow layers.",
    )
)
def layer_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike = None,
    layer: str | nn.Module | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    relu: bool = True,
) -> torch.Tensor:
    """LayerCAM: ReLU(sum_k ReLU(dy/dA_k) * A_k), element-wise weights; one forward, one backward."""
    t = Target(target, x.shape[0])
    layer = resolve_layer(model, x, layer)
    a, g, _ = layer_gradients(model, x, t, layer)
    return _finish((g.clamp_min(0) * a).sum(1), x, relu)


@register(
    _info(
        "xgrad-cam",
        "XGrad-CAM",
        "Fu et al., Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs, BMVC 2020",
        "Grad-CAM with the gradient averaged under the activation's own weights (sensitivity and conservation axioms).",
    )
)
def xgrad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike = None,
    layer: str | nn.Module | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    relu: bool = True,
) -> torch.Tensor:
    """XGrad-CAM: weights w_k = sum_ij A_k(i,j) dy/dA_k(i,j) / sum_ij A_k(i,j)."""
    t = Target(target, x.shape[0])
    layer = resolve_layer(model, x, layer)
    a, g, _ = layer_gradients(model, x, t, layer)
    # Why 1e-7: pytorch-grad-cam's epsilon; all-zero channels then get weight 0.
    w = (g * a).sum((2, 3)) / (a.sum((2, 3)) + 1e-7)
    return _finish(torch.einsum("bc,bchw->bhw", w, a), x, relu)


@register(
    _info(
        "hires-cam",
        "HiResCAM",
        "Draelos & Carin, Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional neural networks, arXiv:2011.08891, 2020",
        "Element-wise gradient x activation summed over channels: faithful to the score for GAP-linear heads.",
    )
)
def hires_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike = None,
    layer: str | nn.Module | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    relu: bool = True,
) -> torch.Tensor:
    """HiResCAM: ReLU(sum_k dy/dA_k * A_k) element-wise (equals Grad-CAM when the head is GAP + linear)."""
    t = Target(target, x.shape[0])
    layer = resolve_layer(model, x, layer)
    a, g, _ = layer_gradients(model, x, t, layer)
    return _finish((g * a).sum(1), x, relu)


@register(
    _info(
        "sharpen-focus",
        "Sharpen Focus",
        "Wang et al., Sharpen Focus: Learning with Attention Separability and Consistency, ICCV 2019 "
        "(as taught in the localization lecture: w_k = 1/(nm) sum_ij ReLU(dy/dA_k(i,j)))",
        "Grad-CAM whose channel weights average only the positive gradients.",
    )
)
def sharpen_focus(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike = None,
    layer: str | nn.Module | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    relu: bool = True,
) -> torch.Tensor:
    """Sharpen Focus attention: ReLU(sum_k mean_ij(ReLU(dy/dA_k)) A_k); Grad-CAM's cost."""
    t = Target(target, x.shape[0])
    layer = resolve_layer(model, x, layer)
    a, g, _ = layer_gradients(model, x, t, layer)
    return _finish(torch.einsum("bc,bchw->bhw", g.clamp_min(0).mean((2, 3)), a), x, relu)


# --- gradient-free CAMs ------------------------------------------------------------------------------


@register(
    _info(
        "eigen-cam",
        "Eigen-CAM",
        "Muhammad & Yeasin, Eigen-CAM: Class Activation Map using Principal Components, IJCNN 2020",
        "First principal component of the layer's activations: class-agnostic (the target is ignored), no gradients.",
    )
)
def eigen_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike = None,
    layer: str | nn.Module | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    relu: bool = True,
) -> torch.Tensor:
    """Eigen-CAM: projection of the (pixels x channels) activations, centred per channel, on their
    first right singular vector. The sign of a singular vector is arbitrary; it is chosen so that
    the map correlates positively with the channel sum of the activations (high where the layer
    fires), which makes the result deterministic across devices and LAPACK builds."""
    t = Target(target, x.shape[0])
    layer = resolve_layer(model, x, layer)
    with torch.no_grad(), recording(model, layer) as rec:
        out = model_output(model(x))
        t.scores(out)  # unused, but a wrong target fails here as it does for every method
    a = check_feature_map(rec.get("out"), layer)
    b, c, h, w = a.shape
    m = a.reshape(b, c, h * w).transpose(1, 2)  # (B, hw, C)
    m = m - m.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(m, full_matrices=False)
    proj = torch.einsum("bpc,bc->bp", m, vh[:, 0])
    total = a.reshape(b, c, h * w).sum(1)
    sign = torch.sign((proj * (total - total.mean(1, keepdim=True))).sum(1, keepdim=True))
    proj = proj * torch.where(sign == 0, torch.ones_like(sign), sign)
    return _finish(proj.reshape(b, h, w), x, relu)


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


@register(
    _info(
        "ablation-cam",
        "Ablation-CAM",
        "Desai & Ramaswamy, Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free Localization, WACV 2020",
        "Feature maps weighted by the relative drop of the class score when each channel is set to zero.",
        slow=True,
    )
)
def ablation_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike = None,
    layer: str | nn.Module | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    relu: bool = True,
    fill: float = 0.0,
    batch_size: int | None = None,
    max_channels: int | None = None,
) -> torch.Tensor:
    """Ablation-CAM: w_k = (y - y_k) / y with y_k the score when channel k is set to ``fill``.

    One forward per channel, batched over channels; only the part of the model after the layer
    is run per channel when the model allows it (see the module's notes).

    Args:
        max_channels: ablate only each image's ``max_channels`` channels of largest mean activation
            at the layer (the others get weight 0): that many forwards per image instead of one
            per channel. The rule needs no gradient, as the method itself. None: every channel.
    """
    b = x.shape[0]
    keep = _check_max_channels(max_channels)
    layer = resolve_layer(model, x, layer)
    a, out, t = _clean_pass(model, x, Target(target, b), layer, replaces="ablation-cam")
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
    done = Progress(progress, n * b)
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
    return _finish(torch.einsum("bc,bchw->bhw", w, _gather(a, chosen)), x, relu)


@register(
    _info(
        "score-cam",
        "Score-CAM",
        "Wang et al., Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks, CVPR 2020 workshops",
        "Feature maps weighted by the softmax over channels of the class score of the image masked by each map.",
        slow=True,
    )
)
def score_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike = None,
    layer: str | nn.Module | None = None,
    *,
    progress: Callable[[float], None] | None = None,
    relu: bool = True,
    batch_size: int | None = None,
    max_channels: int | None = None,
) -> torch.Tensor:
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
    b, _, h, w = x.shape
    keep = _check_max_channels(max_channels)
    layer = resolve_layer(model, x, layer)
    a, _, t = _clean_pass(model, x, Target(target, b), layer)
    a = _gather(a, _channels(a, keep))
    c = a.shape[1]
    _warn_many("score-cam", c, b, keep)
    done = Progress(progress, c * b)
    scores = torch.empty(c, b, device=x.device, dtype=x.dtype)
    with torch.no_grad():
        for start, stop in chunks(c, b, auto_batch_size(x, batch_size)):
            k = stop - start
            up = F.interpolate(a[:, start:stop], size=(h, w), mode="bilinear", align_corners=False)  # (B, k, H, W)
            lo = up.amin((2, 3), keepdim=True)
            span = up.amax((2, 3), keepdim=True) - lo
            up = torch.where(span > 0, (up - lo) / span.clamp_min(1e-12), torch.zeros_like(up))
            masked = x.unsqueeze(0) * up.transpose(0, 1).unsqueeze(2)  # (k, B, 3, H, W)
            out = model_output(model(masked.reshape(k * b, *x.shape[1:])))
            scores[start:stop] = t.scores(out, k).view(k, b)
            done.advance(k * b)
        weights = scores.t().softmax(1)
    return _finish(torch.einsum("bc,bchw->bhw", weights.to(a.dtype), a), x, relu)


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


def _warn_many(method: str, channels: int, images: int, keep: int | None) -> None:
    """Tell before a long run starts: the number of masked forwards, and ``max_channels`` as the cure."""
    forwards = channels * images
    if keep is not None or forwards <= _MANY_FORWARDS:
        return
    warnings.warn(
        f"{method} will run {forwards} masked forwards ({channels} channels x {images} image"
        f"{'s' if images != 1 else ''}), one per channel of the layer; pass max_channels=64 (for example) "
        "to keep only each image's channels of largest mean activation and run that many per image",
        UserWarning,
        stacklevel=4,
    )
