"""Time the features/ tools on the embedded classifier (printed, never asserted).

    OMP_NUM_THREADS=1 python benchmarks/features.py            # 2,000 scenes; memory at 2k and 20k
    OMP_NUM_THREADS=1 python benchmarks/features.py --quick    # 500 scenes; memory at 500 and 5k

CPU times are the process's CPU time (``time.process_time``), so waiting for a core on a shared
machine is not counted. Memory is the resident set of a fresh process that loads the model,
warms up on one batch, and then searches the top patches over n scenes, sampling its resident
set after every batch: the growth after the warm-up is what the dataset size costs (ShapeScenes
renders lazily and keeps 4 chunks).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from guidewidgets import features, zoo  # noqa: E402


def cpu(fn):
    t = time.process_time()
    out = fn()
    return out, time.process_time() - t


def _rss_mb() -> float:
    """Current resident set (MB) from /proc (Linux); the peak counter would hide the search
    under the larger peak of importing torch and loading the model."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(n: int, layer: str) -> None:
    """Runs in a fresh process: prints the resident set (MB) after the warm-up and the largest
    one sampled after every batch of the search over n scenes."""
    torch.set_num_threads(1)
    model = zoo.load("shapes-classifier")
    features.top_patches(model, layer, zoo.ShapeScenes(64, seed=99), k=9)
    before = _rss_mb()
    most = [before]
    features.top_patches(
        model, layer, zoo.ShapeScenes(n, seed=1), k=9, batch_size=64, progress=lambda d, t: most.append(_rss_mb())
    )
    print(f"{before:.1f} {max(most):.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 scenes, memory at 500 and 5,000")
    ap.add_argument("--scenes", type=int, default=None)
    ap.add_argument("--layer", default="features")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.layer)
        return
    torch.set_num_threads(1)
    n = args.scenes or (500 if args.quick else 2000)
    model = zoo.load("shapes-classifier")
    data = zoo.ShapeScenes(n, seed=1)
    print(
        f"# features benchmark: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread, {n} scenes (96 px), CPU time"
    )
    _, t = cpu(lambda: data.batch())
    print(f"render {n} scenes alone                                        {t:7.2f} s")

    for layer in ("features.block3", args.layer):
        top, t = cpu(lambda layer=layer: features.top_patches(model, layer, zoo.ShapeScenes(n, seed=1), k=9))
        print(f"top-9 patches, all {len(top.channels):3d} channels of {layer:<16} {t:7.2f} s  (rendering included)")

    ch = list(range(16))
    res, t = cpu(
        lambda: features.maximize(
            model, ch, kind="channel", layer="features.block5.1", steps=256, param="fourier", decorrelate=True, jitter=4
        )
    )
    rose = int((res.final > res.history[0]).sum())
    print(f"activation maximization, 16 channels x 256 steps (Fourier)   {t:7.2f} s  ({rose}/16 channels rose)")
    res, t = cpu(
        lambda: features.maximize(model, ch, kind="channel", layer="features.block5.1", steps=256, jitter=4, blur=0.5)
    )
    print(f"activation maximization, 16 channels x 256 steps (pixels)    {t:7.2f} s")

    emb, t = cpu(lambda: features.embed(model, zoo.ShapeScenes(n, seed=1)))
    print(f"embed {n} scenes at {emb.layer!r} (avg pool)                 {t:7.2f} s")
    pix = features.pixels(data)
    for k in (1, 5, 10):
        f, p = features.same_class_rate(emb, k), features.same_class_rate(pix, k)
        print(f"same-class rate of the {k:2d} nearest neighbours: feature {f:.3f}  pixel {p:.3f}")
    _, t = cpu(lambda: features.project(emb, "pca"))
    print(f"PCA of {n} embeddings                                        {t:7.2f} s")
    t0, w = time.process_time(), time.perf_counter()
    features.project(emb, "tsne")
    print(
        f"t-SNE of {n} embeddings (scikit-learn)                        {time.process_time() - t0:7.2f} s CPU, "
        f"{time.perf_counter() - w:.2f} s wall"
    )

    sizes = (500, 5000) if args.quick else (2000, 20000)
    for size in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(size), "--layer", args.layer],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        ).stdout.split()
        before, after = float(out[0]), float(out[1])
        print(
            f"patch search over {size:6d} scenes: largest RSS during the search {after:7.1f} MB "
            f"(after warm-up {before:7.1f} MB, +{after - before:.1f} MB)"
        )


if __name__ == "__main__":
    main()
