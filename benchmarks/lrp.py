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
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
# The clock, the interleaved rounds and the options every benchmark shares.
from timing import add_size_options, median_ms, rounds, seeded_input, settings_line

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
    model, x, targets = seeded_input(cfg.model, cfg, cfg.device)
    for rule in cfg.rules:
        impls = {
            "ours": lambda rule=rule: E.lrp(model, x, targets, rule=rule, raw=True),
            "captum": captum_case(model, x, targets, rule),
            "floor": floor_case(model, x, targets),
        }
        # Why interleaved rounds: a busy spell of the machine then slows every implementation alike.
        med = median_ms(rounds({rule: impls}, cfg.repeats, cfg.device)[rule])
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
    add_size_options(p, size=224, batch=1, quick="vgg11, 96 px, 3 rounds")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.model, cfg.size, cfg.repeats = "vgg11", 96, 3
    cfg.rules = [r for r in cfg.rules.split(",") if r]
    print(settings_line(cfg))
    print("| model | rule | ours | Captum | floor | ours / Captum | ours / floor |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    bench(cfg)


if __name__ == "__main__":
    main()
