"""Time DeepLIFT, DeepLIFT-SHAP, GradientSHAP, SmoothGrad-squared and VarGrad against Captum.

    python benchmarks/attribution.py                       # vgg11 + mnasnet0_5, 160 px, batch 2, CPU
    python benchmarks/attribution.py --quick               # mnasnet0_5, 96 px, 3 repeats
    python benchmarks/attribution.py --models vgg11 --size 224 --batch 1 --repeats 5

Models are torchvision nets with random weights on which Captum's DeepLift applies the same rules as
ours (ResNets are refused by it: one nn.ReLU called twice). Each implementation gets its own copy of
the model (Captum's with out-of-place ReLUs, which its backward hooks need), the same targets,
baselines and sample counts. Repeats are interleaved; the median is reported, as process CPU time
on CPU (run with OMP_NUM_THREADS=1 on a shared machine) or synchronised wall time on CUDA.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guidewidgets import explain as E

warnings.filterwarnings("ignore")


def out_of_place(model: torch.nn.Module) -> torch.nn.Module:
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    return m


def cases(model: torch.nn.Module, x: torch.Tensor, targets: list[int], samples: int) -> dict[str, dict[str, Callable]]:
    """method -> {"ours": fn, "captum": fn}, each running one attribution."""
    import captum.attr as ca

    peer = out_of_place(model)
    refs = torch.stack([torch.zeros(x.shape[1:]), torch.full(x.shape[1:], 0.5), torch.ones(x.shape[1:])]).to(x)

    def tunnel(kind: str) -> Callable:
        nt = ca.NoiseTunnel(ca.Saliency(peer))
        return lambda: nt.attribute(x, nt_type=kind, nt_samples=samples, stdevs=0.15, target=targets, abs=False)

    return {
        "deeplift": {
            "ours": lambda: E.deeplift(model, x, targets, raw=True),
            "captum": lambda: ca.DeepLift(peer).attribute(x, target=targets, baselines=0.0),
        },
        "deeplift-shap": {
            "ours": lambda: E.deeplift_shap(model, x, targets, baselines=refs, raw=True),
            "captum": lambda: ca.DeepLiftShap(peer).attribute(x, target=targets, baselines=refs),
        },
        "gradient-shap": {
            "ours": lambda: E.gradient_shap(model, x, targets, baselines=refs, samples=samples, raw=True),
            "captum": lambda: ca.GradientShap(peer).attribute(x, baselines=refs, target=targets, n_samples=samples),
        },
        "smoothgrad-sq": {
            "ours": lambda: E.smoothgrad_sq(model, x, targets, samples=samples, raw=True),
            "captum": tunnel("smoothgrad_sq"),
        },
        "vargrad": {
            "ours": lambda: E.vargrad(model, x, targets, samples=samples, raw=True),
            "captum": tunnel("vargrad"),
        },
    }


def timed(fn: Callable, device: str) -> float:
    """Milliseconds of one call: process CPU time on CPU, synchronised wall time on CUDA."""
    if device == "cuda":
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return 1000 * (time.perf_counter() - t0)
    t0 = time.process_time()
    fn()
    return 1000 * (time.process_time() - t0)


def bench(name: str, cfg: argparse.Namespace, device: str) -> list[str]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval().to(device)
    x = torch.rand(cfg.batch, 3, cfg.size, cfg.size, generator=torch.Generator().manual_seed(1)).to(device)
    targets = [(7 * i + 3) % 1000 for i in range(cfg.batch)]
    rows = []
    for method, impls in cases(model, x, targets, cfg.samples).items():
        if cfg.methods and method not in cfg.methods:
            continue
        for fn in impls.values():
            fn()  # warm-up: allocations, lazy imports
        times: dict[str, list[float]] = {k: [] for k in impls}
        for _ in range(cfg.repeats):
            for k, fn in impls.items():
                times[k].append(timed(fn, device))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append(
            f"| {name} | {method} | {med['ours']:.0f} | {med['captum']:.0f} | {med['ours'] / med['captum']:.2f} |"
        )
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="vgg11,mnasnet0_5", help="torchvision names, comma separated")
    p.add_argument("--methods", default="", help="comma separated subset (default: all five)")
    p.add_argument("--size", type=int, default=160, help="image side in pixels (default 160)")
    p.add_argument("--batch", type=int, default=2, help="images per call (default 2)")
    p.add_argument("--samples", type=int, default=10, help="samples of the sampled methods (default 10)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds, median reported (default 5)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="mnasnet0_5, 96 px, 3 repeats")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.models, cfg.size, cfg.repeats = "mnasnet0_5", 96, 3
    cfg.methods = [m for m in cfg.methods.split(",") if m]
    print(
        f"{cfg.device}, {torch.get_num_threads()} threads, {cfg.size} px, batch {cfg.batch}, "
        f"{cfg.samples} samples, median of {cfg.repeats}; ms (ratio < 1: ours faster)"
    )
    print("| model | method | ours | Captum | ours / Captum |\n| --- | --- | --- | --- | --- |")
    for name in cfg.models.split(","):
        bench(name, cfg, cfg.device)


if __name__ == "__main__":
    main()
