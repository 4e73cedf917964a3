"""Every explanation method x every metric for the embedded classifier on held-out ShapeScenes.

    python -m guidewidgets.metrics.scoreboard            # 32 scenes (about 10 min on one CPU core)
    python -m guidewidgets.metrics.scoreboard --quick    # 4 scenes, fewer steps: a smoke run for CI
    python -m guidewidgets.metrics.scoreboard --csv scores.csv --methods grad-cam,saliency
    python -m guidewidgets.metrics.scoreboard --store maps/       # keep the maps; a rerun resumes
    torchrun --nproc-per-node 2 -m guidewidgets.metrics.scoreboard --store maps/   # maps sharded

Held-out seed 2027: no training recipe, test or other benchmark draws scenes from it.
The maps come from :func:`guidewidgets.explain.dataset.explain_dataset` (one zarr store per
method under ``--store``), so a big run is split over ``torchrun`` processes and an interrupted
one resumes; the metrics are then computed by rank 0.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .. import explain, zoo
from ..explain.dataset import StoreMismatchError, explain_dataset
from ..hooks import eval_mode
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
    store: str | os.PathLike | None = None,
) -> Any:
    """The tidy table of :func:`~guidewidgets.metrics.evaluate` for ``zoo.load("shapes-classifier")``
    on ``n`` held-out classification scenes. ``quick``: 4 scenes, 8 deletion steps, one ROAD fraction.

    Maps are made by :func:`~guidewidgets.explain.dataset.explain_dataset` (explaining the true
    label, batches of 8), into ``store/<method>.zarr`` when ``store`` is given (a rerun resumes
    there) and in memory otherwise. Under an initialised ``torch.distributed`` process group the
    ranks share the maps and only rank 0 scores them; the other ranks return None."""
    model = zoo.load("shapes-classifier")
    if quick:
        n = min(n, 4)
    data = zoo.ShapeScenes(n, seed=seed)
    names = list(explain.methods()) if methods is None else [explain.method_info(m).name for m in methods]
    start = time.perf_counter()
    rank = (
        torch.distributed.get_rank() if torch.distributed.is_available() and torch.distributed.is_initialized() else 0
    )
    progress = progress and rank == 0

    def say(text: str) -> None:
        if progress:
            sys.stderr.write(f"\r{text}  {time.perf_counter() - start:6.0f} s")
            sys.stderr.flush()

    with torch.no_grad(), eval_mode(model):
        model(data[0]["image"][None])  # Why: warm-up, so the first method's time is not the allocator's
    maps: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for i, name in enumerate(names):
        say(f"maps {i + 1}/{len(names)} {name:<24}")
        path = None if store is None else Path(store) / f"{name}.zarr"
        try:
            out = explain_dataset(model, data, name, path, target="label", batch_size=8)
        except StoreMismatchError:
            raise
        except ValueError as e:
            # Why: as evaluate does with methods=None, methods that refuse this model are left out.
            if methods is not None:
                raise
            skipped[name] = str(e)
            continue
        made = sum(min(n, 8 * (k + 1)) - 8 * k for k in out.computed)
        # Why per computed image: chunks resumed from the store cost nothing now.
        seconds[name] = out.seconds / made if made else float("nan")
        maps[name] = out.maps
    if progress:
        sys.stderr.write("\n")
    if rank != 0:
        return None

    def report(f: float) -> None:
        say(f"metrics {100 * f:5.1f} %")

    table = evaluate(
        model,
        data,
        list(maps),
        metrics,
        steps=8 if quick else 32,
        road_fractions=(0.5,) if quick else (0.1, 0.3, 0.5, 0.7, 0.9),
        progress=report if progress else None,
        maps=maps,
    )
    if progress:
        sys.stderr.write("\n")
    table["seconds_per_image"] = table["method"].map(seconds)
    table.attrs["skipped"] = skipped
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
        made = "–" if math.isnan(map_ms[me]) else f"{map_ms[me]:.1f}"  # NaN: every map resumed from a store
        lines.append(f"| {me} | " + " | ".join(cells) + f" | {made} | {score_ms[me]:.0f} |")
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
    p.add_argument("--store", default=None, help="folder for the maps (one zarr store per method); a rerun resumes")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    methods = a.methods.split(",") if a.methods else None
    metrics = a.metrics.split(",") if a.metrics else None
    t0 = time.perf_counter()
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")  # torchrun; the embedded classifier runs on CPU
        started = True
    try:
        table = scoreboard(a.n, methods, metrics, a.quick, a.seed, progress=True, store=a.store)
    finally:
        if started:
            torch.distributed.destroy_process_group()
    if table is None:
        return 0  # a rank other than 0: rank 0 prints
    n = int(table["n"].max())
    print(f"Scoreboard: shapes-classifier, {n} held-out ShapeScenes (seed {a.seed}), target = true label")
    print(format_table(table))
    print(f"\n{time.perf_counter() - t0:.0f} s in all, {torch.get_num_threads()} thread(s)")
    if a.csv:
        table.to_csv(a.csv, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
