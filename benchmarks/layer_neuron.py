"""Time layer conductance, layer integrated gradients and the neuron methods against Captum.

    python benchmarks/layer_neuron.py                        # resnet18 + vgg11, 160 px, batch 2, CPU
    python benchmarks/layer_neuron.py --quick                # resnet18, 96 px, 3 repeats
    python benchmarks/layer_neuron.py --models resnet50 --size 224 --batch 1 --repeats 5 --steps 50

Models are torchvision nets with random weights; the layer is the middle of the trunk (ResNets'
``layer3``, VGG's ``features.10``), the unit one channel (summed over positions: Captum's slice
selector) for the neuron methods. Each implementation gets its own copy of the model (Captum's
with out-of-place ReLUs, which its backward hooks and LayerIntegratedGradients' substituted output
need), the same targets, steps and one chunk for all the path's points (Captum's
``internal_batch_size=None``; ours ``batch_size`` = every point). Repeats are interleaved; the
median is reported, as process CPU time on CPU (run with OMP_NUM_THREADS=1 on a shared machine) or
synchronised wall time on CUDA.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guidewidgets import explain as E
from guidewidgets import hooks

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The clock, the interleaved rounds and the options every benchmark shares.
from timing import captum_main, out_of_place

warnings.filterwarnings("ignore")

LAYERS = {"resnet18": "layer3", "resnet50": "layer3", "vgg11": "features.10", "vgg16": "features.16"}


def cases(
    model: torch.nn.Module, layer: str, x: torch.Tensor, targets: list[int], steps: int
) -> dict[str, dict[str, Callable]]:
    """method -> {"ours": fn, "captum": fn}, each running one attribution (raw, as Captum returns it)."""
    import captum.attr as ca

    peer = out_of_place(model)
    module = hooks.get_layer(peer, layer)
    chunk = x.shape[0] * (steps + 1)  # every point of the path in one forward, as Captum without internal_batch_size
    unit, selector = 5, (5, slice(None), slice(None))
    return {
        "layer-conductance": {
            "ours": lambda: E.layer_attribution(
                model, x, "layer-conductance", targets, layer, steps=steps, batch_size=chunk
            ),
            "captum": lambda: ca.LayerConductance(peer, module).attribute(x, target=targets, n_steps=steps),
        },
        "layer-integrated-gradients": {
            "ours": lambda: E.layer_attribution(
                model, x, "layer-integrated-gradients", targets, layer, steps=steps, batch_size=chunk
            ),
            "captum": lambda: ca.LayerIntegratedGradients(peer, module).attribute(x, target=targets, n_steps=steps),
        },
        "neuron-gradient": {
            "ours": lambda: E.neuron_gradient(model, x, unit, layer, raw=True),
            "captum": lambda: ca.NeuronGradient(peer, module).attribute(x, selector),
        },
        "neuron-guided-backprop": {
            "ours": lambda: E.neuron_guided_backprop(model, x, unit, layer, raw=True),
            "captum": lambda: ca.NeuronGuidedBackprop(peer, module).attribute(x, selector),
        },
        "neuron-integrated-gradients": {
            "ours": lambda: E.neuron_integrated_gradients(
                model, x, unit, layer, steps=steps, batch_size=chunk, raw=True
            ),
            "captum": lambda: ca.NeuronIntegratedGradients(peer, module).attribute(x, selector, n_steps=steps),
        },
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the options and print the table."""
    captum_main(
        argv,
        __doc__,
        lambda name, model, x, targets, cfg: cases(model, LAYERS[name], x, targets, cfg.steps),
        models="resnet18,vgg11",
        models_help=f"torchvision names among {', '.join(LAYERS)}",
        quick_models="resnet18",
        option=("steps", 20, "path steps of the multi-step methods"),
    )


if __name__ == "__main__":
    main()
