"""Every explanation method x every metric for the embedded classifier on held-out ShapeScenes.

    python -m guidewidgets.metrics.scoreboard            # 32 scenes (about 10 min on one CPU core)
    python -m guidewidgets.metrics.scoreboard --quick    # 4 scenes, fewer steps: a smoke run for CI
    python -m guidewidgets.metrics.scoreboard --csv scores.csv --methods grad-cam,saliency

Held-out seed 2027: no training recipe, test or other benchmark draws scenes from it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import torch

from .. import explain, zoo
from .evaluate import METRICS, evaluate

__all__ = ["HELD_OUT_SEED", "scoreboard", "format_table", "main"]

HELD_OUT_SEED = 2027


def scoreboard(
    n: int = 32,
    methods: list[str] | None = None,
    metrics: list[str] | None = None,
    quick: bool = False,
    seed: int = HELD_OUT_SEED,
    progress: bool = False,
) -> Any:
    """The tidy table of :func:`~guidewidgets.metrics.evaluate` for ``zoo.load("shapes-classifier")``
    on ``n`` held-out classification scenes. ``quick``: 4 scenes, 8 deletion steps, one ROAD fraction."""
    model = zoo.load("shapes-classifier")
    if quick:
        n = min(n, 4)
    data = zoo.ShapeScenes(n, seed=seed)
    report = None
    if progress:
        start = time.perf_counter()

        def report(f: float) -> None:
            sys.stderr.write(f"\r{100 * f:5.1f} %  {time.perf_counter() - start:6.0f} s")
            sys.stderr.flush()

    table = evaluate(
        model,
        data,
        methods,
        metrics,
        steps=8 if quick else 32,
        road_fractions=(0.5,) if quick else (0.1, 0.3, 0.5, 0.7, 0.9),
        progress=report,
    )
    if progress:
        sys.stderr.write("\n")
    return table


def format_table(table: Any) -> str:
    """A Markdown table: one row per method, one column per metric (arrow: which way is better),
    then milliseconds per image to make the map and to score it with every metric."""
    metrics = list(dict.fromkeys(table["metric"]))
    methods = list(dict.fromkeys(table["method"]))
    value = {(r.method, r.metric): r.value for r in table.itertuples()}
    map_ms = table.groupby("method")["seconds_per_image"].first() * 1000
    score_ms = table.groupby("method")["metric_seconds_per_image"].sum() * 1000
    head = [f"{m} {'↑' if METRICS[m][0] else '↓'}" for m in metrics]
    lines = [
        "| method | " + " | ".join(head) + " | map ms/img | metrics ms/img |",
        "|---|" + "---:|" * (len(metrics) + 2),
    ]
    for me in methods:
        cells = [("–" if math.isnan(value[(me, mt)]) else f"{value[(me, mt)]:.3f}") for mt in metrics]
        lines.append(f"| {me} | " + " | ".join(cells) + f" | {map_ms[me]:.1f} | {score_ms[me]:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m guidewidgets.metrics.scoreboard", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="4 scenes, 8 steps, one ROAD fraction (CI smoke run)")
    p.add_argument("--n", type=int, default=32, help="held-out scenes to score (default 32)")
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED, help=f"scene seed (default {HELD_OUT_SEED}, held out)")
    p.add_argument("--methods", default=None, help=f"comma-separated subset of: {', '.join(explain.methods())}")
    p.add_argument("--metrics", default=None, help=f"comma-separated subset of: {', '.join(METRICS)}")
    p.add_argument("--csv", default=None, help="also write the tidy table to this CSV file")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    methods = a.methods.split(",") if a.methods else None
    metrics = a.metrics.split(",") if a.metrics else None
    t0 = time.perf_counter()
    table = scoreboard(a.n, methods, metrics, a.quick, a.seed, progress=True)
    n = int(table["n"].max())
    print(f"Scoreboard: shapes-classifier, {n} held-out ShapeScenes (seed {a.seed}), target = true label")
    print(format_table(table))
    print(f"\n{time.perf_counter() - t0:.0f} s in all, {torch.get_num_threads()} thread(s)")
    if a.csv:
        table.to_csv(a.csv, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
