"""Superpixel methods (feature ablation, Shapley value sampling, KernelSHAP, LIME) against Captum's.

    python benchmarks/superpixels.py                 # resnet18, scikit-image's cat photo at 224 x 224, SLIC ~50 superpixels
    python benchmarks/superpixels.py --quick         # 96 x 96, fewer samples
    python benchmarks/superpixels.py --device cuda

Both sides get the same superpixels (SLIC from scikit-image, run once and passed to both as the
feature mask), the same target and the same number of model evaluations; Captum evaluates them
in batches of ``--batch`` (``perturbations_per_eval``), ours in its own automatic batches. Times
are process CPU time on CPU (robust on a shared machine), wall time on CUDA; the median of
``--repeats`` rounds after one warm-up. The segmentation's own time is printed on its own line:
it is paid once per image by either library. Ratio = Captum / ours (> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guidewidgets.explain import superpixel_methods as S
from guidewidgets.explain.superpixels import superpixels
from guidewidgets.zoo.bundled_photos import photo

sys.path.insert(0, str(Path(__file__).resolve().parent))
import captum.attr as ca
from timing import fmt, timed  # the CPU-time clock and number format every benchmark shares

warnings.filterwarnings("ignore")


def cases(model, x, labels, cls, cfg):
    mask = labels[:, None].repeat(1, x.shape[1], 1, 1)  # Captum needs a contiguous mask
    n, per = cfg.samples, cfg.batch
    return {
        "feature-ablation": (
            lambda: S.feature_ablation(model, x, cls, feature_mask=labels),
            lambda: ca.FeatureAblation(model).attribute(x, target=cls, feature_mask=mask, perturbations_per_eval=per),
        ),
        f"shapley-sampling ({cfg.orders} orders)": (
            lambda: S.shapley_sampling(model, x, cls, feature_mask=labels, samples=cfg.orders),
            lambda: ca.ShapleyValueSampling(model).attribute(
                x, target=cls, feature_mask=mask, n_samples=cfg.orders, perturbations_per_eval=per
            ),
        ),
        f"kernel-shap ({n} samples)": (
            lambda: S.kernel_shap(model, x, cls, feature_mask=labels, samples=n),
            lambda: ca.KernelShap(model).attribute(
                x, target=cls, feature_mask=mask, n_samples=n, perturbations_per_eval=per
            ),
        ),
        f"lime ({n} samples)": (
            lambda: S.lime(model, x, cls, feature_mask=labels, samples=n),
            lambda: ca.Lime(model).attribute(x, target=cls, feature_mask=mask, n_samples=n, perturbations_per_eval=per),
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--samples", type=int, default=200, help="coalitions for KernelSHAP and LIME")
    ap.add_argument("--orders", type=int, default=25, help="random orders for Shapley value sampling")
    ap.add_argument("--batch", type=int, default=32, help="Captum's perturbations_per_eval")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true")
    cfg = ap.parse_args()
    if cfg.quick:
        cfg.size, cfg.samples, cfg.orders, cfg.repeats = 96, 50, 5, 1
    torch.manual_seed(0)
    model = getattr(torchvision.models, cfg.model)(weights=None).eval().to(cfg.device)
    x = photo("cat", tensor=True, size=cfg.size)[None].to(cfg.device)  # SLIC needs a real picture: noise is one segment
    with torch.no_grad():
        cls = int(model(x).argmax(1))
    start = time.perf_counter()
    labels, counts = superpixels(x)
    print(
        f"{cfg.model}, {cfg.size} px, {counts[0]} SLIC superpixels in {fmt(time.perf_counter() - start)} ms, device {cfg.device}"
    )
    print("| method | ours (ms) | Captum (ms) | Captum / ours |\n|---|---:|---:|---:|")
    for name, (ours, theirs) in cases(model, x, labels, cls, cfg).items():
        times: dict[str, list[float]] = {"ours": [], "captum": []}
        for r in range(cfg.repeats + 1):
            for key, fn in (("ours", ours), ("captum", theirs)):
                t = timed(fn, cfg.device)
                if r:
                    times[key].append(t)
        a, b = statistics.median(times["ours"]), statistics.median(times["captum"])
        print(f"| {name} | {fmt(a)} | {fmt(b)} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
