"""Augmented Grad-CAM: a high-resolution heat map super-resolved from the Grad-CAMs of augmented
copies of the image (Morbidelli et al., ICASSP 2020; the localization lecture's formulation).

With known augmentations A_l (shifts and rotations) of the image and g_l the (n x m) Grad-CAM of
copy l, the map h (H x W) solves

    argmin_h  1/2 sum_l ||D A_l h - g_l||^2 + lambda TV_l1(h) + mu/2 ||h||^2,

D the area downsampling to the layer's grid and TV_l1 the anisotropic total variation
sum_ij |dh/dx| + |dh/dy|. The problem is convex; the paper runs subgradient descent. Here the
absolute values are smoothed to sqrt(d^2 + eps^2) (eps = 1e-2 of the maps' peak: smaller made the result depend on rounding, batch vs single image 4e-3 apart at 1e-4) and the problem
is solved by majorize-minimize (each step a weighted quadratic, solved by warm-started conjugate
gradients), which lowers the smoothed objective at every step; every operator is a batched
grid_sample or pooling on the input's device.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ..hooks import model_output
from .batching import Progress, auto_batch_size, chunks
from .cam_base import CamCall, cam_method, weighted
from .layers import layer_gradients

__all__ = ["augmented_grad_cam", "random_transforms", "check_transforms", "warp", "observation_matrix", "super_resolve"]

_EPS = 1e-2


def random_transforms(
    n: int, max_shift: float, max_rotation: float, seed: int = 0, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(n, 3) transforms ``(dx, dy, degrees)``: the identity first, then shifts uniform in
    +-``max_shift`` px and rotations uniform in +-``max_rotation`` degrees (seeded)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"augmentations must be an int >= 1 (1 is plain Grad-CAM upsampled), got {n!r}")
    gen = torch.Generator().manual_seed(int(seed))
    u = torch.rand(n, 3, generator=gen) * 2 - 1
    t = u * torch.tensor([max_shift, max_shift, max_rotation])
    t[0] = 0
    return t.to(device)


def check_transforms(transforms: torch.Tensor | Sequence[Sequence[float]], size: tuple[int, int]) -> torch.Tensor:
    """``transforms`` as a float (L, 3) tensor of (dx px, dy px, degrees), or a ValueError saying
    why that set of augmentations cannot be inverted."""
    try:
        t = torch.as_tensor(transforms, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError("transforms must be a sequence of (dx, dy, degrees) triples or an (L, 3) tensor") from None
    if t.dim() != 2 or t.shape[1] != 3 or t.shape[0] < 1:
        raise ValueError(
            f"transforms must have shape (L, 3): one (dx, dy, degrees) per augmentation, got {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        raise ValueError("transforms hold NaN or inf: every shift and angle must be a finite number")
    h, w = size
    far = (t[:, 0].abs() >= w) | (t[:, 1].abs() >= h)
    if far.any():
        i = int(far.nonzero()[0, 0])
        raise ValueError(
            f"augmentation {i} shifts by ({float(t[i, 0]):g}, {float(t[i, 1]):g}) px, which moves the {h}x{w} image "
            "out of the frame: its Grad-CAM sees nothing of the image and cannot be inverted; keep shifts below "
            "the image size (a layer cell or two is what helps)"
        )
    return t


def _grids(transforms: torch.Tensor, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """Sampling grids (L, H, W, 2) of the transforms, for grid_sample (align_corners=False)."""
    t = transforms.to(device=like.device, dtype=like.dtype)
    a = t[:, 2] * (math.pi / 180)
    cos, sin = torch.cos(a), torch.sin(a)
    # Rotation about the centre in pixel units, written in normalised coordinates (x: w/2, y: h/2).
    theta = torch.zeros(len(t), 2, 3, device=like.device, dtype=like.dtype)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * h / w
    theta[:, 1, 0] = sin * w / h
    theta[:, 1, 1] = cos
    theta[:, 0, 2] = -2 * t[:, 0] / w
    theta[:, 1, 2] = -2 * t[:, 1] / h
    return F.affine_grid(theta, [len(t), 1, h, w], align_corners=False)


def warp(images: torch.Tensor, grids: torch.Tensor) -> torch.Tensor:
    """Every image (B, C, H, W) under every grid (L, H, W, 2): (L*B, C, H, W), copy-major.
    Border padding: what enters the frame repeats the edge, in the image and in the heat map alike."""
    n, b = grids.shape[0], images.shape[0]
    rep = images.unsqueeze(0).expand(n, *images.shape).reshape(n * b, *images.shape[1:])
    g = grids.unsqueeze(1).expand(n, b, *grids.shape[1:]).reshape(n * b, *grids.shape[1:])
    return F.grid_sample(rep, g, mode="bilinear", padding_mode="border", align_corners=False)


def _tv_diffs(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return h[..., :, 1:] - h[..., :, :-1], h[..., 1:, :] - h[..., :-1, :]


def observation_matrix(grids: torch.Tensor, small: tuple[int, int]) -> torch.Tensor:
    """The stacked operator K = [D A_1; ...; D A_L] as a sparse (L*n*m, H*W) matrix.

    A_l samples the map bilinearly at ``grids[l]`` with border padding (as :func:`warp` does the
    image); D averages the H x W pixels over the n x m cells of the layer's grid (pixel (y, x)
    belongs to cell (y*n // H, x*m // W)). The same for every image of a batch, so one sparse
    product serves them all.
    """
    n_aug, hh, ww, _ = grids.shape
    n, m = small
    dev = grids.device
    # Source coordinates in pixels (align_corners=False), clamped: border padding.
    sx = ((grids[..., 0] + 1) * ww - 1) / 2
    sy = ((grids[..., 1] + 1) * hh - 1) / 2
    sx, sy = sx.clamp(0, ww - 1), sy.clamp(0, hh - 1)
    x0, y0 = sx.floor().long(), sy.floor().long()
    fx, fy = sx - x0, sy - y0
    x1, y1 = (x0 + 1).clamp(max=ww - 1), (y0 + 1).clamp(max=hh - 1)
    ys = torch.arange(hh, device=dev) * n // hh
    xs = torch.arange(ww, device=dev) * m // ww
    cell = (ys[:, None] * m + xs[None, :]).expand(n_aug, hh, ww)
    count = torch.bincount(cell[0].reshape(-1), minlength=n * m).to(grids.dtype)
    rows = (torch.arange(n_aug, device=dev).view(-1, 1, 1) * (n * m) + cell).reshape(-1)
    share = 1 / count[cell.reshape(-1)]
    parts = [
        (y0, x0, (1 - fx) * (1 - fy)),
        (y0, x1, fx * (1 - fy)),
        (y1, x0, (1 - fx) * fy),
        (y1, x1, fx * fy),
    ]
    idx_r = torch.cat([rows] * 4)
    idx_c = torch.cat([(yy * ww + xx).reshape(-1) for yy, xx, _ in parts])
    vals = torch.cat([wt.reshape(-1) * share for _, _, wt in parts])
    shape = (n_aug * n * m, hh * ww)
    return torch.sparse_coo_tensor(torch.stack([idx_r, idx_c]), vals, shape, check_invariants=True).coalesce()


def _tv_normal(vm: torch.Tensor, wx: torch.Tensor, wy: torch.Tensor) -> torch.Tensor:
    """grad^T W grad applied to maps (B, H, W), W the weights ``wx``, ``wy`` of the differences."""
    vx, vy = _tv_diffs(vm)
    px, py = wx * vx, wy * vy
    tv = torch.zeros_like(vm)
    tv[..., :, 1:] += px
    tv[..., :, :-1] -= px
    tv[..., 1:, :] += py
    tv[..., :-1, :] -= py
    return tv


def _conjugate_gradients(
    normal: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor, h: torch.Tensor, steps: int
) -> torch.Tensor:
    """``steps`` of conjugate gradients on normal(h) = rhs, each column (image) on its own.

    Warm-started at ``h``: every step lowers the quadratic, which lies above the objective and
    touches it at ``h`` (so the majorize-minimize objective goes down too).
    """
    r = rhs - normal(h)
    p = r.clone()
    rr = (r * r).sum(0)
    for _ in range(steps):
        q = normal(p)
        pq = (p * q).sum(0)
        alpha = torch.where(pq > 0, rr / pq.clamp_min(1e-30), torch.zeros_like(pq))
        h = h + alpha * p
        r = r - alpha * q
        rr_new = (r * r).sum(0)
        beta = torch.where(rr > 0, rr_new / rr.clamp_min(1e-30), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
    return h


def super_resolve(
    g: torch.Tensor,
    grids: torch.Tensor,
    size: tuple[int, int],
    lam: float = 0.1,
    mu: float = 1e-3,
    iterations: int = 20,
    cg_steps: int = 8,
    history: bool = False,
) -> tuple[torch.Tensor, list[dict[str, float]]]:
    """Solve the super-resolution problem for low-resolution maps ``g`` (L*B, n, m) (copy-major)
    seen through ``grids`` (L, H, W, 2). Returns h (B, H, W) and, with ``history=True``, per
    iteration (the start included) the objective summed over the batch: ``{"smoothed": ...,
    "exact": ...}`` (else an empty list: each value costs a product and host syncs per iteration).

    The maps are scaled to a peak of 1 before solving (so ``lam`` and ``mu`` do not depend on the
    network's gradient scale) and h is scaled back.
    """
    if not (lam >= 0 and mu >= 0):
        raise ValueError(f"lam and mu must be >= 0, got lam={lam!r}, mu={mu!r}")
    if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
        raise ValueError(f"iterations must be an int >= 0, got {iterations!r}")
    n_aug = grids.shape[0]
    b = g.shape[0] // n_aug
    hh, ww = size
    small = (int(g.shape[-2]), int(g.shape[-1]))
    cells = small[0] * small[1]
    if mu == 0 and n_aug * cells < hh * ww:
        raise ValueError(
            f"{n_aug} augmentation(s) of a {small[0]}x{small[1]} map give {n_aug * cells} equations for "
            f"{hh * ww} unknowns: with mu=0 the problem cannot be inverted; use mu > 0 or at least "
            f"{math.ceil(hh * ww / cells)} augmentations"
        )
    g = g.detach().reshape(n_aug, b, cells)
    scale = g.amax((0, 2)).clamp_min(1e-30)  # (B,)
    # columns are images: (L*n*m, B)
    gm = (g / scale.view(1, b, 1)).permute(0, 2, 1).reshape(n_aug * cells, b)
    coo = observation_matrix(grids.detach(), small).to(gm.dtype)
    with warnings.catch_warnings():
        # Why CSR despite its "beta" warning: its products ran 10x faster than COO's here.
        warnings.simplefilter("ignore", UserWarning)
        k, kt = coo.to_sparse_csr(), coo.t().coalesce().to_sparse_csr()
    eps = _EPS

    def as_maps(v: torch.Tensor) -> torch.Tensor:  # (HW, B) -> (B, H, W)
        return v.t().reshape(b, hh, ww)

    def as_cols(v: torch.Tensor) -> torch.Tensor:
        return v.reshape(b, hh * ww).t()

    def objective(v: torch.Tensor) -> dict[str, float]:
        dx, dy = _tv_diffs(as_maps(v))
        data = 0.5 * float(((k @ v - gm) ** 2).sum()) + 0.5 * mu * float((v * v).sum())
        smooth = float(torch.sqrt(dx * dx + eps * eps).sum() + torch.sqrt(dy * dy + eps * eps).sum())
        exact = float(dx.abs().sum() + dy.abs().sum())
        return {"smoothed": data + lam * smooth, "exact": data + lam * exact}

    with torch.no_grad():
        rhs = kt @ gm
        cover = kt @ gm.new_ones(gm.shape[0], 1)  # one column serves every image
        h = torch.where(cover > 0, rhs / cover.clamp_min(1e-12), torch.zeros_like(rhs))  # back-projection
        trace = [objective(h)] if history else []
        for _ in range(iterations):
            dx, dy = _tv_diffs(as_maps(h))
            wx, wy = lam / torch.sqrt(dx * dx + eps * eps), lam / torch.sqrt(dy * dy + eps * eps)

            def normal(v: torch.Tensor, wx: torch.Tensor = wx, wy: torch.Tensor = wy) -> torch.Tensor:
                # (K^T K + lam grad^T W grad + mu) v: the Hessian of the majorizing quadratic
                return kt @ (k @ v) + mu * v + as_cols(_tv_normal(as_maps(v), wx, wy))

            h = _conjugate_gradients(normal, rhs, h, cg_steps)
            if history:
                trace.append(objective(h))
    return as_maps(h) * scale.view(b, 1, 1), trace


@cam_method("augmented-grad-cam", slow=True, quick={"augmentations": 2, "iterations": 2})
def augmented_grad_cam(
    c: CamCall,
    *,
    augmentations: int = 16,
    max_shift: float | None = None,
    max_rotation: float = 10.0,
    transforms: torch.Tensor | Sequence[Sequence[float]] | None = None,
    lam: float = 0.1,
    mu: float = 1e-3,
    iterations: int = 20,
    seed: int = 0,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Augmented Grad-CAM at the input's resolution.

    ``augmentations`` copies (the identity and seeded random ones: shifts up to ``max_shift`` px,
    default one cell of the layer's grid, rotations up to ``max_rotation`` degrees), or explicit
    ``transforms`` (L, 3) of (dx px, dy px, degrees). ``lam`` weighs the total variation, ``mu``
    the ridge term (on maps scaled to a peak of 1); ``iterations`` majorize-minimize steps. The
    class explained is the clean image's (predicted or given) in every copy.
    """
    model, x, t, layer, reshape = c.model, c.x, c.target, c.layer, c.reshape
    b, _, hh, ww = x.shape
    if t.needs_prediction:
        with torch.no_grad():
            t = t.fix(model_output(model(x)))
    if max_shift is not None and not max_shift >= 0:
        raise ValueError(f"max_shift must be >= 0 pixels (None: one cell of the layer's grid), got {max_shift!r}")
    if transforms is None:
        tf = None
    else:
        tf = check_transforms(transforms, (hh, ww))
    done = Progress(c.progress, augmentations if tf is None else len(tf))
    cams: list[torch.Tensor] = []
    if tf is None:
        # the identity first: its grid gives the cell size for the default shift range
        a, g, _ = layer_gradients(model, x.detach(), t, layer, reshape=reshape)
        cams.append(weighted(g.mean((2, 3)), a).clamp_min(0))
        cell = max(hh / a.shape[2], ww / a.shape[3])
        shift = cell if max_shift is None else float(max_shift)
        tf = check_transforms(random_transforms(augmentations, shift, float(max_rotation), seed), (hh, ww))
        done.advance(1)
        start0 = 1
    else:
        start0 = 0
    grids = _grids(tf, hh, ww, x)
    n = len(tf)
    for start, stop in chunks(n - start0, b, auto_batch_size(x, batch_size)):
        lo, hi = start0 + start, start0 + stop
        k = hi - lo
        xa = warp(x.detach(), grids[lo:hi])
        a, g, _ = layer_gradients(model, xa, t, layer, repeats=k, reshape=reshape)
        cams.append(weighted(g.mean((2, 3)), a).clamp_min(0))
        done.advance(k)
    low = torch.cat(cams)
    h, _ = super_resolve(low, grids, (hh, ww), lam=lam, mu=mu, iterations=iterations)
    return h  # already at the input's resolution: the base's finish only applies relu
