"""Incremental and approximate occlusion (issue 17) against plain batched occlusion and Captum.

    python benchmarks/occlusion.py                  # resnet18 + vgg16, 224 px, windows 16/32 x strides 8/16
    python benchmarks/occlusion.py --quick          # the same models, window 32, stride 32 (49 positions)
    python benchmarks/occlusion.py --models vgg16 --windows 32 --strides 16 --no-captum
    python benchmarks/occlusion.py --trained        # the embedded (trained) classifier on held-out scenes

Models are torchvision classifiers with random weights (weights=None: the compute is the same as
with trained ones; the maps, and so the approximate modes' correlations, are not), one image of
224 x 224, target class 3, fill 0.5. Per setting every implementation runs once per round
(``--repeats`` rounds, median); times are process CPU time (run with OMP_NUM_THREADS=1 on a
shared machine). Our modes run once more before timing, under
``torch.utils.flop_counter.FlopCounterMode``: their FLOPs are counted, not estimated. Plain
occlusion and Captum's run (positions + 1) full forwards: their FLOPs are that many times one
counted forward. Columns: time, FLOPs (G), speed-up over plain, FLOPs ratio plain / this, map
correlation with the exact (plain) map, max |map - plain map| relative to max |plain map|.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guidewidgets import explain as E
from guidewidgets.explain.occlusion_incremental import occlusion_plan

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import fmt, timed  # the CPU-time clock and number format every benchmark shares

try:
    import captum.attr as ca
except ImportError:  # pragma: no cover
    ca = None

warnings.filterwarnings("ignore")


def flops(fn: Callable[[], object]) -> tuple[int, object]:
    with FlopCounterMode(display=False) as counter:
        out = fn()
    return counter.get_total_flops(), out


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def bench(name: str, window: int, stride: int, cfg: argparse.Namespace) -> list[str]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    positions = ((224 - window) // stride + 1) ** 2
    kw = {"target": 3, "window": window, "stride": stride, "fill": 0.5}
    plain_kw = {**kw, "mode": "plain"}
    forward_flops, _ = flops(lambda: model(x))
    impls: dict[str, Callable[[], torch.Tensor]] = {
        "plain (ours)": lambda: E.explain(model, x, "occlusion", **plain_kw)
    }
    if ca is not None and cfg.captum:
        m_ca = copy.deepcopy(model)
        impls["captum"] = lambda: ca.Occlusion(m_ca).attribute(
            x,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=0.5,
            target=3,
            perturbations_per_eval=8,  # our plain batch at 224 px (auto_batch_size)
        )[:, 0]
    ours = {"incremental (exact)": {"mode": "incremental"}}
    for tau in cfg.taus:
        ours[f"approx tau={tau}"] = {"mode": "approximate", "tau": tau, "refine": 1.0}
    for refine in cfg.refines:
        ours[f"approx drill-down refine={refine}"] = {"mode": "approximate", "tau": 1.0, "refine": refine}
    for tau, refine in cfg.both:
        ours[f"approx tau={tau} + refine={refine}"] = {"mode": "approximate", "tau": tau, "refine": refine}
    counted: dict[str, int] = {k: (positions + 1) * forward_flops for k in impls}
    maps: dict[str, torch.Tensor] = {}
    for label, opts in ours.items():
        counted[label], _ = flops(lambda opts=opts: E.explain(model, x, "occlusion", **kw, **opts))
        impls[label] = lambda opts=opts: E.explain(model, x, "occlusion", **kw, **opts)
    with torch.no_grad():
        model(x)  # warm-up of the allocator and oneDNN for the plain runs
    times: dict[str, list[float]] = {k: [] for k in impls}
    for r in range(cfg.repeats):
        for label, fn in impls.items():
            out: list[torch.Tensor] = []
            times[label].append(timed(lambda fn=fn, out=out: out.append(fn()), "cpu"))
            maps[label] = out[0].detach()
            print(f"  {name} w{window} s{stride} round {r + 1}: {label} {times[label][-1]:.1f} s", file=sys.stderr)
    plain = maps["plain (ours)"]
    t_plain = statistics.median(times["plain (ours)"])
    scale = float(plain.abs().max())
    lines = []
    for label in impls:
        t = statistics.median(times[label])
        lines.append(
            f"| {name} | {window} | {stride} | {positions} | {label} | {fmt(t)} | {counted[label] / 1e9:.0f} "
            f"| {t_plain / t:.2f} | {counted['plain (ours)'] / counted[label]:.2f} | {corr(maps[label], plain):.4f} "
            f"| {float((maps[label] - plain).abs().max()) / scale:.1e} |"
        )
    return lines


def trained_table(scenes: int = 16) -> None:
    """Plain vs exact vs approximate occlusion on the embedded classifier (trained weights, 96 px).

    Random weights give rough maps that interpolate poorly; this is the approximate modes'
    correlation on a trained model (per image, median and minimum over held-out scenes).
    """
    from guidewidgets import zoo

    m = zoo.load("shapes-classifier")
    x = zoo.ShapeScenes(scenes, seed=777).batch()["images"].float() / 255
    print(f"# shapes-classifier (trained), {scenes} held-out scenes (seed 777) of 96 px, predicted class")
    print(
        "| window | stride | plain (ms) | exact (speed-up) | approximate, refine 0.25 (speed-up) | corr. median / min |"
    )
    print("|---|---|---|---|---|---|")
    for window, stride in ((16, 8), (16, 4), (24, 4), (32, 8)):
        kw = {"window": window, "stride": stride}
        plain = E.occlusion(m, x, None, mode="plain", **kw)
        exact = E.occlusion(m, x, None, mode="incremental", **kw)
        apx = E.occlusion(m, x, None, mode="approximate", **kw)
        t_plain = timed(lambda kw=kw: E.occlusion(m, x, None, mode="plain", **kw), "cpu")
        t_exact = timed(lambda kw=kw: E.occlusion(m, x, None, mode="incremental", **kw), "cpu")
        t_apx = timed(lambda kw=kw: E.occlusion(m, x, None, mode="approximate", **kw), "cpu")
        assert float((exact - plain).abs().max()) <= 1e-4 * float(plain.abs().max())
        cs = sorted(corr(a, e) for a, e in zip(apx, exact))
        print(
            f"| {window} | {stride} | {fmt(t_plain)} | {fmt(t_exact)} ({t_plain / t_exact:.1f}x) "
            f"| {fmt(t_apx)} ({t_plain / t_apx:.1f}x) | {cs[len(cs) // 2]:.3f} / {cs[0]:.3f} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,vgg16")
    p.add_argument("--windows", default="16,32")
    p.add_argument("--strides", default="8,16")
    p.add_argument("--repeats", type=int, default=1, help="timed rounds per implementation (median)")
    p.add_argument("--taus", default="0.5", help="projective-field thresholds to time alone")
    p.add_argument("--refines", default="0.25", help="drill-down fractions to time alone")
    p.add_argument("--both", default="0.5:0.25", help="tau:refine pairs to time together")
    p.add_argument("--no-captum", dest="captum", action="store_false")
    p.add_argument("--quick", action="store_true", help="window 32, stride 32 (49 positions) only")
    p.add_argument("--trained", action="store_true", help="only the embedded trained classifier's table")
    cfg = p.parse_args(argv)
    if cfg.trained:
        trained_table()
        return
    if cfg.quick:
        cfg.windows, cfg.strides = "32", "32"
    cfg.taus = [float(v) for v in cfg.taus.split(",") if v]
    cfg.refines = [float(v) for v in cfg.refines.split(",") if v]
    cfg.both = [tuple(float(u) for u in v.split(":")) for v in cfg.both.split(",") if v]
    torch.manual_seed(0)
    for name in cfg.models.split(","):
        m = getattr(torchvision.models, name)(weights=None).eval()
        info = occlusion_plan(m, torch.rand(1, 3, 224, 224), window=int(cfg.windows.split(",")[0]))
        print(
            f"# {name}: {len(info.windowed)} graph nodes windowed, fallback at {info.fallback!r} "
            f"({info.fallback_op}); share of each conv's output one patch recomputes: "
            + ", ".join(f"{k} {v:.2f}" for k, v in list(info.region.items())[:: max(1, len(info.region) // 8)])
        )
    print(
        f"# torch {torch.__version__}, torchvision {torchvision.__version__}, {platform.machine()}, "
        f"{torch.get_num_threads()} CPU thread(s); process CPU time, median of {cfg.repeats} round(s); times in ms"
    )
    print(
        "| model | window | stride | positions | implementation | time | GFLOPs | speed-up vs plain "
        "| FLOPs plain / this | corr. with exact | max rel. diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in cfg.models.split(","):
        for window in (int(v) for v in cfg.windows.split(",")):
            for stride in (int(v) for v in cfg.strides.split(",")):
                for line in bench(name, window, stride, cfg):
                    print(line, flush=True)


if __name__ == "__main__":
    main()
