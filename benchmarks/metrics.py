"""Time the metrics: deletion/insertion batched vs a per-step loop, and ROAD against pytorch-grad-cam's.

    OMP_NUM_THREADS=1 python benchmarks/metrics.py            # 8 held-out scenes, grad-cam maps
    OMP_NUM_THREADS=1 python benchmarks/metrics.py --n 4 --steps 16

Model: the embedded shapes-classifier (96 x 96 ShapeScenes, held-out seed 2027), maps: Grad-CAM of
the true label. Times are the process's CPU time (``time.process_time``), so waiting for a core on
a shared machine is not counted; run with OMP_NUM_THREADS=1. Every variant's values are compared
with the others' (batching must not change a curve; ROAD's noise makes ours and pytorch-grad-cam's
agree only up to the 0.01 imputation noise; ROAD gets Grad-CAM with ties broken by 1e-6 noise).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guidewidgets import explain, metrics, zoo

try:
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
except ImportError:  # pragma: no cover
    ROADMostRelevantFirst = None


def cpu_time(fn, repeats: int = 1):
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.process_time()
        out = fn()
        best = min(best, time.process_time() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=8, help="held-out scenes (default 8)")
    p.add_argument("--steps", type=int, default=32, help="deletion/insertion steps (default 32, as the scoreboard)")
    p.add_argument("--repeats", type=int, default=2, help="best of this many runs (default 2)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model = zoo.load("shapes-classifier")
    ds = zoo.ShapeScenes(a.n, seed=2027)
    items = [ds[i] for i in range(a.n)]
    x = torch.stack([it["image"] for it in items])
    y = torch.tensor([it["label"] for it in items])
    maps = explain.explain(model, x, "grad-cam", y)
    n, s = a.n, a.steps

    print(f"## Deletion + insertion, {n} scenes x {s + 1} steps, shapes-classifier 96 px, CPU time per image\n")
    print("| variant | forwards of | ms / image | max difference to the loop |")
    print("|---|---|---:|---:|")
    rows = [("per-step loop", "1 image", 1), ("all steps of one image", f"{s + 1} images", s + 1)]
    rows.append(("all steps of all images, 64 a batch", "64 images", 64))
    ref = None
    for label, what, bs in rows:

        def run(bs=bs):
            return torch.cat(
                [
                    metrics.perturbation_curves(model, x, maps, y, mode=m, steps=s, batch_size=bs)
                    for m in ("deletion", "insertion")
                ]
            )

        t, curves = cpu_time(run, a.repeats)
        ref = curves if ref is None else ref
        print(f"| {label} | {what} | {1000 * t / n:.0f} | {float((curves - ref).abs().max()):.1e} |")

    print(f"\n## ROAD (noisy linear imputation), {n} scenes, one removed fraction at a time, CPU time per image\n")
    if ROADMostRelevantFirst is None:
        print("pytorch-grad-cam is not installed: no peer to compare with")
        return 0
    print(
        "| order | removed | ours ms/img | pytorch-grad-cam ms/img | ours / peer | ours: mean p | peer: mean p | mean abs diff |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in y]
    # Why a tie-break: Grad-CAM is 0 on much of the image, and pytorch-grad-cam's percentile
    # threshold then removes all or none of the tied pixels, we a raster-ordered share; both get
    # the same tie-free map so that both remove the same pixels.
    scale = maps.flatten(1).amax(1).clamp(min=1e-12).view(-1, 1, 1)
    tied = maps / scale + 1e-6 * torch.rand(maps.shape, generator=torch.Generator().manual_seed(0))
    cams = tied.numpy().astype(np.float32)
    for order, peer_cls in (("morf", ROADMostRelevantFirst), ("lerf", ROADLeastRelevantFirst)):
        for frac in (0.2, 0.5, 0.8):
            t_ours, (_, ours) = cpu_time(
                lambda o=order, f=frac: metrics.road(model, x, tied, y, o, fractions=(f,)), a.repeats
            )
            # pytorch-grad-cam's percentile p keeps the (p %) least (MoRF) / most (LeRF) relevant pixels.
            peer = peer_cls(round(100 * (1 - frac)))
            t_peer, theirs = cpu_time(lambda peer=peer: peer(x, cams, targets, model, return_diff=False), a.repeats)
            ours = ours[:, 0].numpy()
            theirs = np.asarray(theirs, dtype=np.float64).reshape(-1)
            print(
                f"| {order} | {frac:.0%} | {1000 * t_ours / n:.0f} | {1000 * t_peer / n:.0f} | {t_ours / t_peer:.2f} | "
                f"{ours.mean():.3f} | {theirs.mean():.3f} | {np.abs(ours - theirs).mean():.3f} |"
            )
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} thread(s), best of {a.repeats}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
