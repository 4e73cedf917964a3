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

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guidewidgets import explain as E

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The clock, the interleaved rounds and the options every benchmark shares.
from timing import captum_main, out_of_place

warnings.filterwarnings("ignore")


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


def main(argv: list[str] | None = None) -> None:
    """Parse the options and print the table."""
    captum_main(
        argv,
        __doc__,
        lambda name, model, x, targets, cfg: cases(model, x, targets, cfg.samples),
        models="vgg11,mnasnet0_5",
        models_help="torchvision names, comma separated",
        quick_models="mnasnet0_5",
        option=("samples", 10, "samples of the sampled methods"),
    )


if __name__ == "__main__":
    main()
