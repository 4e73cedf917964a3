"""Class activation maps: CAM and the gradient CAMs (Grad-CAM, Grad-CAM++, Smooth Grad-CAM++,
LayerCAM, XGrad-CAM, HiResCAM, Grad-CAM element-wise, Sharpen Focus), built on :mod:`guidewidgets.explain.cam_base`.

All return the map at the layer's resolution upsampled bilinearly to the input's, ReLU'd unless
``relu=False``, and not normalised (so scales can be compared; render.normalize does display).
Transformer layers work too: token outputs (B, N, D) are laid on their patch grid (class token
dropped) and Swin's channels-last (B, h, w, C) maps are permuted
(:func:`guidewidgets.hooks.grid_transform`); ``reshape=callable(output) -> (B, C, h, w)``
handles any other layout.
"""

from __future__ import annotations

import torch
from torch import nn

from ..hooks import hooked, model_output
from .batching import Progress, auto_batch_size
from .cam_base import CamCall, cam_method, clean_pass, finish, gradient_cam
from .layers import Reshape, check_feature_map, check_reshape, layer_gradients, recording, resolve_layer
from .noise import noisy_copies

__all__ = [
    "cam",
    "cam_all_classes",
    "grad_cam",
    "grad_cam_pp",
    "smooth_grad_cam_pp",
    "layer_cam",
    "xgrad_cam",
    "hires_cam",
    "grad_cam_elementwise",
    "sharpen_focus",
]

_NO_GAP = (
    "CAM (Zhou et al. 2016) needs the layer's feature map to reach the logits through global "
    "average pooling and one nn.Linear (or a 1x1 nn.Conv2d on the pooled map), and {why}. Use "
    "method 'grad-cam': it works on any CNN and equals CAM (up to scale) where CAM applies."
)


def _is_head(m: nn.Module) -> bool:
    """An nn.Linear, or a 1x1 nn.Conv2d that acts as one on a pooled (B, C, 1, 1) map (torchcam's case)."""
    if isinstance(m, nn.Linear):
        return True
    return (
        isinstance(m, nn.Conv2d)
        and m.kernel_size == (1, 1)
        and m.groups == 1
        and m.stride == (1, 1)
        and m.padding in ((0, 0), "valid")
    )


def _gap_linear_weights(heads: list, a: torch.Tensor, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight matrix (K, C), feature map the head averages) or a ValueError saying why not.

    ``heads``: (module, input, output) of the last nn.Linear / 1x1 conv on a pooled map the
    forward ran; it is the head if its output is the model's logits."""
    if out.dim() != 2:
        raise ValueError(_NO_GAP.format(why=f"this model outputs {tuple(out.shape)}, not (B, K) logits"))
    found = None
    for m, feats, head_out in reversed(heads):
        if feats is None or head_out.shape[0] != out.shape[0] or head_out.numel() != out.numel():
            continue
        if (isinstance(m, nn.Linear) and feats.dim() != 2) or not torch.equal(head_out.reshape(out.shape), out):
            continue
        found = (m, feats.flatten(1))
        break
    if found is None:
        raise ValueError(_NO_GAP.format(why="this model's output does not come straight from one"))
    head, feats = found
    if feats.shape[1] != a.shape[1]:
        raise ValueError(
            _NO_GAP.format(why=f"its head takes {feats.shape[1]} features, not the {a.shape[1]} channels of this layer")
        )
    tol = 1e-4 * float(feats.abs().max()) + 1e-6
    for fmap in (a, a.clamp_min(0)):  # DenseNet applies a ReLU between its features and the pool
        if torch.allclose(fmap.mean((2, 3)), feats, rtol=1e-4, atol=tol):
            return head.weight.reshape(head.weight.shape[0], -1), fmap
    raise ValueError(
        _NO_GAP.format(
            why="here the head's input is not the spatial mean of this layer's output "
            "(is there another layer between them? then pass that one as layer=...)"
        )
    )


@cam_method("cam", channel_weights=True)
def cam(c: CamCall) -> torch.Tensor:
    """CAM: sum_k w[c, k] A_k with w the final linear layer's weights (one forward, no backward)."""
    out, weight, fmap = _cam_parts(c.model, c.x, c.layer, c.reshape)
    cls = c.target.classes(out) if out.dim() == 2 else None
    with torch.no_grad():
        return c.combine(weight[cls], fmap)


def cam_all_classes(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | nn.Module | None = None,
    *,
    relu: bool = True,
    reshape: Reshape | None = None,
) -> torch.Tensor:
    """CAM of every class at once, (B, K, H, W), from one forward (what weak supervision needs:
    one map per class of each image). Same conditions and errors as :func:`cam`."""
    _, weight, fmap = _cam_parts(model, x, layer, reshape)
    with torch.no_grad():
        maps = torch.einsum("kc,bchw->bkhw", weight.to(fmap.dtype), fmap)
    b, k = maps.shape[:2]
    return finish(maps.flatten(0, 1), x, relu).view(b, k, *x.shape[-2:])


def _cam_parts(
    model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None, reshape: Reshape | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward: the logits, the head's weight matrix (K, C) and the feature map it averages."""
    layer = resolve_layer(model, x, layer)
    reshape = check_reshape(reshape)
    heads: list = []

    def on_head(m, args, out):
        feats = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if isinstance(m, nn.Conv2d) and (feats is None or feats.dim() != 4 or feats.shape[-2:] != (1, 1)):
            return  # a 1x1 conv over a spatial map is a layer, not the head
        # Why keep only the last call: the head is the last one the forward runs (and a model with
        # many layers must not keep every output alive).
        heads[:] = [(m, feats, out)]

    with hooked() as h:
        for m in model.modules():
            if _is_head(m):
                h.forward(m, on_head)
        with torch.no_grad(), recording(model, layer, reshape) as rec:
            out = model_output(model(x))
    a = check_feature_map(rec.get("out"), layer, x.shape[0])
    weight, fmap = _gap_linear_weights(heads, a, out)
    return out, weight, fmap


@gradient_cam("grad-cam")
def grad_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: ReLU(sum_k mean_ij(dy/dA_k) A_k); one forward and a backward to the layer only."""
    return g.mean((2, 3))


def _grad_cam_pp_weights(a: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor) -> torch.Tensor:
    # Eq. 19 of Chattopadhyay et al. (exponential score): alpha = g^2 / (2 g^2 + sum(A) g^3).
    denom = 2 * g2 + a.sum((2, 3), keepdim=True) * g3 + 1e-6
    alpha = torch.where(g2 > 0, g2 / denom, torch.zeros_like(g2))
    return (alpha * g1.clamp_min(0)).sum((2, 3))


@gradient_cam("grad-cam++")
def grad_cam_pp(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (same cost as Grad-CAM)."""
    g2 = g * g
    return _grad_cam_pp_weights(a, g, g2, g2 * g)


@cam_method("smooth-grad-cam++", slow=True, quick={"samples": 2}, channel_weights=True)
def smooth_grad_cam_pp(
    c: CamCall, *, samples: int = 25, noise: float = 0.15, seed: int = 0, batch_size: int | None = None
) -> torch.Tensor:
    """Smooth Grad-CAM++: 1st/2nd/3rd-order gradients averaged over ``samples`` noisy copies
    (Gaussian, std ``noise`` x the image's value range), applied to the clean image's features."""
    b = c.x.shape[0]
    a, _, t = clean_pass(c)
    g1 = g2 = g3 = torch.zeros_like(a)
    done = Progress(c.progress, samples)
    for xn, k in noisy_copies(c.x, samples, noise, seed, auto_batch_size(c.x, batch_size)):
        _, g, _ = layer_gradients(c.model, xn, t, c.layer, repeats=k, reshape=c.reshape)
        g = g.view(k, b, *g.shape[1:])
        sq = g * g
        g1, g2, g3 = g1 + g.sum(0), g2 + sq.sum(0), g3 + (sq * g).sum(0)
        done.advance(k)
    return c.combine(_grad_cam_pp_weights(a, g1 / samples, g2 / samples, g3 / samples), a)


@gradient_cam("layer-cam", elementwise=True)
def layer_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """LayerCAM: ReLU(sum_k ReLU(dy/dA_k) * A_k), element-wise weights; one forward, one backward."""
    return g.clamp_min(0) * a


@gradient_cam("xgrad-cam")
def xgrad_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: weights w_k = sum_ij A_k(i,j) dy/dA_k(i,j) / sum_ij A_k(i,j)."""
    # Why 1e-7: pytorch-grad-cam's epsilon; all-zero channels then get weight 0.
    return (g * a).sum((2, 3)) / (a.sum((2, 3)) + 1e-7)


@gradient_cam("hires-cam", elementwise=True)
def hires_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """HiResCAM: ReLU(sum_k dy/dA_k * A_k) element-wise (equals Grad-CAM when the head is GAP + linear)."""
    return g * a


@gradient_cam("grad-cam-elementwise", elementwise=True)
def grad_cam_elementwise(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM element-wise: sum_k ReLU(dy/dA_k * A_k); HiResCAM's cost. It never has negative
    values, so ``relu`` changes nothing; it bounds HiResCAM from above."""
    return (g * a).clamp_min(0)


@gradient_cam("sharpen-focus")
def sharpen_focus(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Sharpen Focus attention: ReLU(sum_k mean_ij(ReLU(dy/dA_k)) A_k); Grad-CAM's cost."""
    return g.clamp_min(0).mean((2, 3))
