"""Time LRP (epsilon, gamma, alpha-beta rules) against Captum's ``LRP`` and against its floor.

    python benchmarks/lrp.py                       # vgg16, 224 px, batch 1, CPU, 5 rounds
    python benchmarks/lrp.py --quick               # vgg11, 96 px, 3 rounds
    python benchmarks/lrp.py --model vgg11 --size 160 --batch 4 --rules epsilon --repeats 3

The model is a torchvision VGG with random weights (weights=None), on which Captum's LRP applies
the same rules as ours (the tests check that the two agree). Captum gets its own copy with the
rule set on every Conv2d and Linear (``module.rule``) before every call (Captum 0.9 deletes the
attribute at the end of a call), ours the original model. The floor is
gradient x input: one forward and one backward to the input, the least an LRP pass does. Repeats
are interleaved (each round times every implementation once, after a warm-up) and the median is
reported: process CPU time on CPU (run with OMP_NUM_THREADS=1 on a shared machine), synchronised
wall time on CUDA.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Why from attribution.py: the same clock (CPU time on CPU, synchronised wall time on CUDA).
from attribution import timed

from guidewidgets import explain as E

warnings.filterwarnings("ignore")


def captum_case(model: torch.nn.Module, x: torch.Tensor, targets: list[int], rule: str) -> Callable[[], object]:
    """One Captum LRP attribution with ``rule`` on every Conv2d and Linear of a copy of ``model``."""
    from captum.attr import LRP
    from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule

    kinds = {"epsilon": EpsilonRule, "gamma": GammaRule, "alpha-beta": Alpha1_Beta0_Rule}
    peer = copy.deepcopy(model)
    layers = [m for m in peer.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]

    def run() -> object:
        # Why every call: Captum deletes ``module.rule`` when a call ends, so a second call would
        # silently use its default (epsilon) rule.
        for m in layers:
            m.rule = kinds[rule]()
        return LRP(peer).attribute(x, target=targets)

    return run


def floor_case(model: torch.nn.Module, x: torch.Tensor, targets: list[int]) -> Callable[[], object]:
    """Gradient x input in plain PyTorch: one forward and one backward to the input."""
    index = torch.tensor(targets, device=x.device)

    def run() -> torch.Tensor:
        xg = x.detach().requires_grad_(True)
        out = model(xg)
        (g,) = torch.autograd.grad(out.gather(1, index[:, None]).sum(), xg)
        return g * x

    return run


def bench(cfg: argparse.Namespace) -> None:
    """Print one table row per rule: ours, Captum, floor (ms) and the ratios."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, cfg.model)(weights=None).eval().to(cfg.device)
    x = torch.rand(cfg.batch, 3, cfg.size, cfg.size, generator=torch.Generator().manual_seed(1)).to(cfg.device)
    targets = [(7 * i + 3) % 1000 for i in range(cfg.batch)]
    for rule in cfg.rules:
        impls = {
            "ours": lambda rule=rule: E.lrp(model, x, targets, rule=rule, raw=True),
            "captum": captum_case(model, x, targets, rule),
            "floor": floor_case(model, x, targets),
        }
        for fn in impls.values():
            fn()  # warm-up: allocations, lazy imports
        # Why interleaved rounds: a busy spell of the machine then slows every implementation alike.
        rounds = [[timed(fn, cfg.device) for fn in impls.values()] for _ in range(cfg.repeats)]
        med = dict(zip(impls, map(statistics.median, zip(*rounds))))
        print(
            f"| {cfg.model} | {rule} | {med['ours']:.0f} | {med['captum']:.0f} | {med['floor']:.0f} | "
            f"{med['ours'] / med['captum']:.2f} | {med['ours'] / med['floor']:.2f} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    """Parse the options and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vgg16", help="a torchvision VGG (default vgg16)")
    p.add_argument("--rules", default="epsilon,gamma,alpha-beta", help="comma separated (default: all three)")
    p.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--batch", type=int, default=1, help="images per call (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds, median reported (default 5)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="vgg11, 96 px, 3 rounds")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.model, cfg.size, cfg.repeats = "vgg11", 96, 3
    cfg.rules = [r for r in cfg.rules.split(",") if r]
    print(
        f"{cfg.device}, {torch.get_num_threads()} threads, {cfg.size} px, batch {cfg.batch}, "
        f"median of {cfg.repeats}; ms (ratio < 1: ours faster)"
    )
    print("| model | rule | ours | Captum | floor | ours / Captum | ours / floor |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    bench(cfg)


if __name__ == "__main__":
    main()
