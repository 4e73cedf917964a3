"""Projection CAMs: EigenGrad-CAM and KPCA-CAM, the principal-component relatives of Eigen-CAM
(:mod:`guidewidgets.explain.cam_gradient_free`), on the base of :mod:`guidewidgets.explain.cam_base`.

Both read a layer's (B, C, h, w) maps as hw samples of C features, centred per channel, and keep
one component per pixel:

- EigenGrad-CAM: the first principal component of A * dy/dA (one forward, one backward);
- KPCA-CAM: the first kernel principal component of A (sigmoid kernel by default, as
  pytorch-grad-cam's ``KPCA_CAM``), one forward, no gradients, class-agnostic like Eigen-CAM.

Same conventions as the other CAMs: the map at the layer's resolution, ReLU'd unless
``relu=False``, upsampled bilinearly to the input and not normalised. They are projections
already, so ``eigen_smooth`` is refused for them.
"""

from __future__ import annotations

import math

import torch

from .cam_base import CamCall, cam_method, clean_pass, first_component, gradient_cam

__all__ = ["eigengrad_cam", "kpca_cam", "kernel_pca", "KERNELS"]

# scikit-learn's pairwise kernels that KernelPCA takes by name (with its defaults: gamma 1/C,
# coef0 1, degree 3).
KERNELS = ("sigmoid", "rbf", "poly", "linear", "cosine")


@gradient_cam("eigengrad-cam", pixelwise=True)
def eigengrad_cam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """EigenGrad-CAM: projection of the (pixels x channels) matrix A * dy/dA, centred per channel,
    on its first right singular vector (one forward, one backward to the layer). A singular
    vector's sign is arbitrary (pytorch-grad-cam leaves it to LAPACK); here it is the one whose
    map correlates positively with sum_k A_k dy/dA_k (HiResCAM's map), so the result is
    deterministic across devices and builds."""
    return first_component(g * a)


@cam_method("kpca-cam")
def kpca_cam(c: CamCall, *, kernel: str = "sigmoid", gamma: float | None = None) -> torch.Tensor:
    """KPCA-CAM: the first kernel principal component of the layer's (pixels x channels)
    activations, centred per channel, as scikit-learn's ``KernelPCA(n_components=1, kernel=kernel,
    gamma=gamma).fit_transform`` (pytorch-grad-cam's ``KPCA_CAM``), computed in torch on the
    input's device. The target is ignored (it is checked, as for every method).

    Args:
        kernel: ``"sigmoid"`` (the peer's default: tanh(gamma <a, b> + 1)), ``"rbf"``, ``"poly"``
            ((gamma <a, b> + 1)^3), ``"linear"`` (then it is Eigen-CAM up to sign and scale) or
            ``"cosine"``.
        gamma: the kernel's scale; None: 1 / channels (scikit-learn's default).
    """
    _check_kernel(kernel, gamma)
    a, out, target = clean_pass(c)
    target.scores(out)  # unused, but a wrong target fails here as it does for every method
    b, n, h, w = a.shape
    m = a.reshape(b, n, h * w).transpose(1, 2)
    return kernel_pca(m - m.mean(1, keepdim=True), kernel, gamma).to(a.dtype).reshape(b, h, w)


def _check_kernel(kernel: object, gamma: object) -> None:
    """Refuse an unknown kernel or a gamma that is not a positive number, naming the choices."""
    if kernel not in KERNELS:
        raise ValueError(
            f"kernel must be one of {', '.join(repr(k) for k in KERNELS)} (as in scikit-learn's KernelPCA), got {kernel!r}"
        )
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not gamma > 0):
        raise ValueError(
            f"gamma must be a positive number (the kernel's scale) or None for 1 / channels, got {gamma!r}"
        )


def _kernel(m: torch.Tensor, kernel: str, gamma: float) -> torch.Tensor:
    """scikit-learn's pairwise kernel of the rows of each (P, C) matrix of ``m`` (B, P, C), (B, P, P),
    less a constant that the centring removes anyway.

    Why less the constant: with small activations (random weights, deep layers: 1e-8) the sigmoid
    kernel tanh(gamma <a, b> + 1) differs from tanh(1) below float64's resolution, and the centred
    matrix would be rounding noise; tanh(1 + e) - tanh(1) = tanh(e) (1 - tanh(1)^2) / (1 + tanh(1)
    tanh(e)) keeps e. Likewise (1 + u)^3 - 1 = u (3 + 3u + u^2) and exp(-s) - 1 = expm1(-s).
    """
    if kernel == "cosine":
        u = m / m.norm(dim=2, keepdim=True).clamp_min(torch.finfo(m.dtype).tiny)
        return u @ u.transpose(1, 2)
    dot = m @ m.transpose(1, 2)
    if kernel == "linear":
        return dot
    if kernel == "sigmoid":
        t1, te = math.tanh(1.0), torch.tanh(gamma * dot)
        return te * (1 - t1 * t1) / (1 + t1 * te)
    if kernel == "poly":
        u = gamma * dot
        return u * (3 + 3 * u + u * u)
    sq = dot.diagonal(dim1=1, dim2=2)
    return torch.expm1(-gamma * (sq[:, :, None] + sq[:, None, :] - 2 * dot).clamp_min(0))  # rbf


def kernel_pca(m: torch.Tensor, kernel: str = "sigmoid", gamma: float | None = None) -> torch.Tensor:
    """First kernel principal component of each (P, C) matrix of ``m`` (B, P, C): (B, P), as
    scikit-learn's ``KernelPCA(n_components=1).fit_transform`` gives it: the top eigenvector v of
    the centred kernel matrix times sqrt(max(lambda, 0)), its sign flipped so that its entry of
    largest magnitude is positive (scikit-learn's ``svd_flip``).

    Computed in float64 (float32 off the CPU and CUDA), on the kernel less its constant part
    (:func:`_kernel`; the centring removes it, so the component is the same) with a dense symmetric
    eigensolver: scikit-learn uses ARPACK above 200 samples, which finds the same component.
    """
    dt = torch.float64 if m.device.type in ("cpu", "cuda") else torch.float32
    x = m.to(dt)
    k = _kernel(x, kernel, 1.0 / x.shape[2] if gamma is None else float(gamma))
    # Centring in feature space (scikit-learn's KernelCenterer).
    k = k - k.mean(1, keepdim=True) - k.mean(2, keepdim=True) + k.mean((1, 2), keepdim=True)
    lam, vecs = torch.linalg.eigh(k)  # ascending: the last is the largest
    v = vecs[:, :, -1]
    peak = v.gather(1, v.abs().argmax(1, keepdim=True))
    v = v * torch.where(peak < 0, -1.0, 1.0).to(dt)
    return v * lam[:, -1:].clamp_min(0).sqrt()
