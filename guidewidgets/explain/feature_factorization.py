"""Deep Feature Factorization: a layer's activations split into K non-negative concepts.

Collins, Achanta & Süsstrunk (ECCV 2018) factor the activations of a layer, a matrix V (C
channels x N positions), by non-negative matrix factorization, V ~ W H: each of the K columns of
W (C,) is a concept (a direction in feature space) and the matching row of H (N,) is where the
image shows it: K heat maps that partition the image into parts the network tells apart.

As pytorch-grad-cam's ``DeepFeatureFactorization`` (whose definitions are matched here):
- NMF needs V >= 0. Each channel is shifted by its minimum over the positions factored (always,
  also where the layer is a ReLU's output, whose minimum may be above 0), so any layer works (a
  ConvNeXt stage, a BatchNorm output); ``shift=False`` factors the raw activations and refuses a
  negative one with a sentence.
- The NMF is scikit-learn's ``NMF(n_components=K, init="random", random_state=seed)`` (the peer's
  own call: coordinate descent, Frobenius loss, at most ``max_iter=200`` iterations), on the
  activations of each image (``joint=True``: of the whole batch at once, the peer's and the
  paper's co-segmentation; the concepts are then shared by the images).
- A concept's class scores are the classifier head applied to its vector ``W_k + shift`` as if it
  were a pooled feature vector (the peer's ``computation_on_concepts``, e.g. ``model.fc``); here
  the head is found as CAM finds it (global average pooling + one linear layer from this layer).

The registered method ``"dff"`` shows, per image, the map of the concept that scores highest
for the target (the class logit of the head on the concept vector; a callable target is applied
to those head outputs). Without such a head (VGG's, ConvNeXt's, a layer that does not feed the
head, a segmentation output), a concept scores its first-order share of the target score,
``sum_ij <dy/dA_ij, W_k> H_k(ij)``, which on a GAP + linear head equals its exact share of the
logit, ``(w_c . W_k) mean(H_k)`` (``scoring="gradient"`` asks for it everywhere).
:func:`dff_concepts` returns all K maps with their class scores (what a notebook shows).
NMF runs on the CPU (scikit-learn); the maps come back on the input's device.
"""

from __future__ import annotations

import warnings
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import nn

from ..hooks import eval_mode, model_lock
from .batching import Progress
from .cam import _cam_parts
from .cam_base import CamCall, cam_gradients, cam_method
from .layers import Reshape, check_feature_map, check_reshape, recording, resolve_layer, upsample
from .targets import check_input

__all__ = ["dff", "dff_concepts", "factorize", "Factors", "Concepts"]

Scoring = Literal["head", "gradient"] | None


class Factors(NamedTuple):
    """An NMF of a layer's activations, ``A[b] - offset ~ vectors[b] @ maps[b]`` per position.

    Attributes:
        vectors: W, the concepts (B, C, K), non-negative (with ``joint=True`` the same for every b).
        maps: H, where each concept is (B, K, h, w), non-negative.
        offset: the per-channel shift subtracted before the NMF (B, C) (zeros with ``shift=False``).
        error: NMF's reported error ``||V - W H||_F`` per factorization (B,) (joint: the batch's,
            repeated).
    """

    vectors: torch.Tensor
    maps: torch.Tensor
    offset: torch.Tensor
    error: torch.Tensor


class Concepts(NamedTuple):
    """What :func:`dff_concepts` returns: every concept of every image.

    Attributes:
        maps: the K concept maps upsampled to the image (B, K, H, W), non-negative, not normalised.
        factors: the :class:`Factors` at the layer's resolution.
        scores: the head's class logits of each concept vector ``W_k + offset`` (B, K, classes),
            or None where the layer does not reach the logits through GAP + linear (``why``).
        why: why ``scores`` is None ("" when it is not).
    """

    maps: torch.Tensor
    factors: Factors
    scores: torch.Tensor | None
    why: str


def _check(concepts: object, seed: object, max_iter: object, channels: int) -> None:
    for name, v, low in (("concepts", concepts, 1), ("seed", seed, 0), ("max_iter", max_iter, 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    if int(concepts) > channels:  # type: ignore[call-overload]
        raise ValueError(
            f"concepts={concepts} is more than the layer's {channels} channels: NMF cannot find more "
            f"concepts than the feature space has dimensions; use concepts <= {channels} or a wider layer"
        )


def _nmf(v: np.ndarray, concepts: int, seed: int, max_iter: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(W (C, K), H (K, N), error) of scikit-learn's NMF, set as pytorch-grad-cam sets it."""
    from sklearn.decomposition import NMF  # why lazy: scikit-learn takes a second to import
    from sklearn.exceptions import ConvergenceWarning

    nmf = NMF(n_components=concepts, init="random", random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings():
        # Why silenced: the peer's 200 iterations rarely meet the tolerance on activations; the
        # error is reported in Factors.error, and max_iter= raises the budget.
        warnings.simplefilter("ignore", ConvergenceWarning)
        w = nmf.fit_transform(v)
    return w, nmf.components_, float(nmf.reconstruction_err_)


def factorize(
    a: torch.Tensor,
    concepts: int = 5,
    *,
    seed: int = 0,
    joint: bool = False,
    shift: bool = True,
    max_iter: int = 200,
    progress: Progress | None = None,
) -> Factors:
    """NMF of feature maps ``a`` (B, C, h, w) into ``concepts`` concepts, per image or jointly.

    Args:
        a: the activations (finite).
        concepts: K, from 1 to C.
        seed: NMF's ``random_state`` (its random initialisation).
        joint: one factorization of the whole batch (shared concepts) instead of one per image.
        shift: subtract each channel's minimum first (the peer's); False refuses negative values.
        max_iter: NMF's iteration budget.
        progress: advanced by one per factorization.

    Returns:
        The :class:`Factors`, on ``a``'s device and dtype.
    """
    b, ch, h, w = a.shape
    _check(concepts, seed, max_iter, ch)
    if not shift and bool((a < 0).any()):
        raise ValueError(
            f"the layer has negative activations (min {float(a.min()):.3g}), and NMF factors only "
            "non-negative ones: pass shift=True (each channel shifted by its minimum, as "
            "pytorch-grad-cam does) or choose a layer after a ReLU"
        )
    # float32 as the peer (float64 kept): NMF's result is then the peer's to the last bit
    work = torch.float64 if a.dtype == torch.float64 else torch.float32
    arr = a.detach().to(work).cpu().numpy()
    groups = [arr] if joint else [arr[i : i + 1] for i in range(b)]
    ws, hs, offs, errs = [], [], [], []
    for g in groups:
        v = g.transpose(1, 0, 2, 3).reshape(ch, -1)
        off: np.ndarray = v.min(axis=-1) if shift else np.zeros(ch, dtype=v.dtype)
        wk, hk, err = _nmf(v - off[:, None], int(concepts), int(seed), int(max_iter))
        n = g.shape[0]
        ws += [wk] * n
        offs += [off] * n
        errs += [err] * n
        hs.append(hk.reshape(int(concepts), n, h, w).transpose(1, 0, 2, 3))
        if progress is not None:
            progress.advance(1)

    def back(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(x)).to(device=a.device, dtype=a.dtype)

    return Factors(back(np.stack(ws)), back(np.concatenate(hs)), back(np.stack(offs)), back(np.asarray(errs)))


def _head(
    model: nn.Module, x: torch.Tensor, layer: str | nn.Module, reshape: Reshape | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, head weight (classes, C), head bias (classes,), the feature map the head averages),
    or the ValueError CAM raises where the layer does not reach the logits through GAP + linear."""
    out, weight, fmap = _cam_parts(model, x, layer, reshape)
    weight = weight.detach().to(fmap.dtype)
    # Why recovered from the output: the head is GAP + linear on fmap (checked above), so
    # out = mean(fmap) W^T + b holds for every image; this needs no access to the module.
    bias = (out - fmap.mean((2, 3)) @ weight.T).mean(0)
    return out, weight, bias, fmap


def head_scores(f: Factors, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The head's logits of each concept vector ``W_k + offset`` (B, K, classes), as
    pytorch-grad-cam's ``computation_on_concepts(concepts.T)``."""
    vec = f.vectors + f.offset[:, :, None]  # (B, C, K)
    return vec.transpose(1, 2) @ weight.T + bias  # a matmul: einsum took 6 ms here for 1000 classes


def gradient_shares(f: Factors, g: torch.Tensor) -> torch.Tensor:
    """Each concept's first-order share of the score, ``sum_ij <g_ij, W_k> H_k(ij)`` (B, K)."""
    return torch.einsum("bchw,bck,bkhw->bk", g.to(f.maps.dtype), f.vectors, f.maps)


@cam_method("dff", slow=True, quick={"concepts": 2})
def dff(
    c: CamCall,
    *,
    concepts: int = 5,
    seed: int = 0,
    shift: bool = True,
    scoring: Scoring = None,
    max_iter: int = 200,
) -> torch.Tensor:
    """Deep Feature Factorization: ``H_k*`` with ``k* = argmax_k score_k`` of NMF ``A ~ W H``.

    Each image is factored on its own (:func:`factorize`; ``concepts`` K, ``seed``, ``shift``,
    ``max_iter``). ``scoring``: None picks ``"head"`` (the class logit of the GAP + linear head on
    ``W_k + offset``, pytorch-grad-cam's concept score) where the layer feeds such a head, else
    ``"gradient"`` (the concept's first-order share of the target score; one backward); see
    :mod:`guidewidgets.explain.feature_factorization`. All K maps: :func:`dff_concepts`.
    """
    if scoring not in (None, "head", "gradient"):
        raise ValueError(f"scoring must be None, 'head' or 'gradient', got {scoring!r}")
    b = c.x.shape[0]
    done = Progress(c.progress, b)
    if scoring != "gradient":
        try:
            out, weight, bias, fmap = _head(c.model, c.x, c.layer, c.reshape)
        except ValueError as e:
            if scoring == "head":
                raise ValueError(f"scoring='head' needs a GAP + linear head on this layer: {e}") from None
        else:
            t = c.target.fix(out)
            # Why first, on a copy that needs gradients: a bad target (class out of range, a
            # callable's bad or detached scores) is named before the NMF, and a callable must keep
            # the graph here too, so that one target works on every layer (without a head, DFF
            # differentiates it).
            with torch.enable_grad():
                t.scores(out.detach().requires_grad_(True))
            f = factorize(fmap, concepts, seed=seed, shift=shift, max_iter=max_iter, progress=done)
            logits = head_scores(f, weight, bias)  # (B, K, classes)
            k = logits.shape[1]
            # Rows copy-major (row r*B + b: concept r of image b), so a callable target sees
            # (B, classes) outputs as it would the model's.
            s = t.scores(logits.transpose(0, 1).reshape(k * b, -1), repeats=k)
            return f.maps[torch.arange(b, device=f.maps.device), s.view(k, b).argmax(0)]
    a, g = cam_gradients(c)
    f = factorize(a, concepts, seed=seed, shift=shift, max_iter=max_iter, progress=done)
    return f.maps[torch.arange(b, device=f.maps.device), gradient_shares(f, g).argmax(1)]


def dff_concepts(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | nn.Module | None = None,
    *,
    concepts: int = 5,
    seed: int = 0,
    joint: bool = False,
    shift: bool = True,
    max_iter: int = 200,
    reshape: Reshape | None = None,
) -> Concepts:
    """All K concept maps of each image and the classifier's scores of each concept.

    Args:
        model: a CNN or vision transformer (left unchanged; run in eval mode).
        x: images (B, C, H, W), checked as every method checks them.
        layer: the layer factored (default: as the CAMs', the last spatial feature map).
        concepts: K, from 1 to the layer's channels.
        seed: NMF's random initialisation.
        joint: factor the batch at once (concepts shared by the images: co-segmentation).
        shift: shift each channel by its minimum first (see :func:`factorize`).
        max_iter: NMF's iteration budget.
        reshape: lays a token layout on its (B, C, h, w) grid (as for the CAMs).

    Returns:
        :class:`Concepts`: maps (B, K, H, W), the factors, the head's logits (B, K, classes) of
        each concept vector where the layer feeds a GAP + linear head (else None and why).
    """
    x = check_input(model, x)
    reshape = check_reshape(reshape)
    with model_lock(model), eval_mode(model):
        where = resolve_layer(model, x, layer)
        try:
            _, weight, bias, fmap = _head(model, x, where, reshape)
            head: tuple[torch.Tensor, torch.Tensor] | None = (weight, bias)
            why = ""
        except ValueError as e:
            why = f"no class scores: a concept is scored by a GAP + linear head on the layer, and CAM's check says: {e}"
            head = None
            with torch.no_grad(), recording(model, where, reshape) as rec:
                model(x)
            fmap = check_feature_map(rec.get("out"), where, x.shape[0])
    f = factorize(fmap, concepts, seed=seed, joint=joint, shift=shift, max_iter=max_iter)
    scores = None if head is None else head_scores(f, *head)
    b, k = f.maps.shape[:2]
    maps = upsample(f.maps.flatten(0, 1), x).view(b, k, *x.shape[-2:])
    return Concepts(maps, f, scores, why)
