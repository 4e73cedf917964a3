"""Time Guide Me's hint bookkeeping and text queries on the embedded segmenter (printed, never asserted).

    OMP_NUM_THREADS=1 python benchmarks/guide.py            # 100 text queries, 800 hints
    OMP_NUM_THREADS=1 python benchmarks/guide.py --quick    # 20 text queries, 200 hints

CPU times are the process's CPU time (``time.process_time``), so waiting for a core on a shared
machine is not counted; wall times are printed beside them.

1. ``Guide.add_hint`` n times: the incremental targets (each hint costs its own pixels) against
   the earlier rebuild of every target from all hints on each hint (issue 11: 800 hints ~11 s).
2. One text query: ``Guide.add_text(sentence)`` then ``Guide.prediction()`` (parse, GRU, block
   update, the segmenter's tail), on held-out scenes with their generator queries.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from guidewidgets import zoo  # noqa: E402
from guidewidgets.guide import Guide, HintTargets  # noqa: E402
from guidewidgets.guide.text import load_text_guide  # noqa: E402
from guidewidgets.guide.train_text import Tail, scene_set  # noqa: E402


def hints(model: torch.nn.Module, n: int) -> None:
    image = zoo.ShapeScenes(1, seed=12001, task="segmentation")[0]["image"]
    gen = torch.Generator().manual_seed(0)
    points = [(int(torch.randint(96, (), generator=gen)), int(torch.randint(96, (), generator=gen))) for _ in range(n)]
    with Guide(model, image) as g:
        c0, w0 = time.process_time(), time.perf_counter()
        for i, (y, x) in enumerate(points):
            g.add_hint(y, x, 1 + i % 6, negative=i % 3 == 0)
        _ = g.targets.count  # the lazy index lists are built once, here
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(1, n + 1):  # the earlier way: all targets rebuilt on every hint
            _ = HintTargets(g.hints[:i], g.num_classes, g.height, g.width).count
        cpu_old, wall_old = time.process_time() - c0, time.perf_counter() - w0
    print(
        f"add_hint x {n}: incremental {1000 * cpu:.0f} ms CPU ({1000 * wall:.0f} ms wall); rebuilt per hint "
        f"{1000 * cpu_old:.0f} ms CPU ({1000 * wall_old:.0f} ms wall): {cpu_old / max(cpu, 1e-9):.0f}x"
    )


def text_queries(model: torch.nn.Module, n: int) -> None:
    tg = load_text_guide()
    data = scene_set(model, Tail(model, "bottleneck", (96, 96)), n, 12001)
    cpu, wall = [], []
    for i in range(n):
        if not data.queries[i]:
            continue
        with Guide(model, data.images[i]) as g:
            g.add_text(data.queries[i][0].text, text_guide=tg)  # warm-up of this session's caches
            g.reset()
            c0, w0 = time.process_time(), time.perf_counter()
            g.add_text(data.queries[i][0].text, text_guide=tg)
            g.prediction()
            cpu.append(1000 * (time.process_time() - c0))
            wall.append(1000 * (time.perf_counter() - w0))
    cpu.sort()
    wall.sort()
    print(
        f"one text query (add_text + prediction), {len(cpu)} queries, {torch.get_num_threads()} thread(s): "
        f"median {statistics.median(cpu):.1f} ms CPU ({statistics.median(wall):.1f} ms wall), "
        f"90th percentile {cpu[int(0.9 * (len(cpu) - 1))]:.1f} ms CPU"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = zoo.load("shapes-segmenter")
    hints(model, 200 if args.quick else 800)
    text_queries(model, 20 if args.quick else 100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
