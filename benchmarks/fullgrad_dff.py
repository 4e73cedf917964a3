"""Time FullGrad and Deep Feature Factorization against pytorch-grad-cam in one run.

    python benchmarks/fullgrad_dff.py                  # resnet18 and resnet50, 224 px, batch 1 and 8, CPU (+ CUDA)
    python benchmarks/fullgrad_dff.py --quick          # resnet18, 64 px, batch 2, CPU, 2 repeats

Models are torchvision ResNets with random weights (weights=None). Each implementation gets its own
copy of the model, the same explicit targets and settings; pytorch-grad-cam's objects are built once
(their hooks stay on their copy), as a user keeps them. Rows:

- ``fullgrad``: ``explain.fullgrad`` against ``FullGrad(model, [])`` (both: every conv/BatchNorm).
- ``dff-concepts``: ``explain.dff_concepts(joint=True)`` (all K maps and the head's concept scores)
  against ``DeepFeatureFactorization(model, layer, computation_on_concepts=model.fc)(x, K)``, the
  same work (one joint NMF of the batch, K maps upsampled, K x classes scores).
- ``dff``: the registered method (one NMF per image, the map of the class's best concept) against
  the same peer call (which factors the batch once: at B > 1 ours does B smaller NMFs).

Rounds are interleaved, the median is reported; CPU rows are process CPU time (run with
OMP_NUM_THREADS=1 on a shared machine), CUDA rows wall time with synchronisation (the NMF of both
runs on the CPU with scikit-learn).
"""

from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guidewidgets import explain as E

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explain import pgc
from timing import devices, environment, fmt, grid_medians, grid_parser, parse_grid, print_grid

METHODS = ["fullgrad", "dff-concepts", "dff"]


def cases(model, x, t, cfg) -> dict[str, dict[str, Callable]]:
    tl = t.tolist()
    k, layer = cfg.concepts, cfg.layer
    rows: dict[str, dict[str, Callable]] = {
        "fullgrad": {"ours": lambda: E.fullgrad(model, x, tl)},
        "dff-concepts": {"ours": lambda: E.dff_concepts(model, x, layer, concepts=k, joint=True)},
        "dff": {"ours": lambda: E.dff(model, x, tl, layer, concepts=k)},
    }
    if pgc is not None:
        from pytorch_grad_cam import DeepFeatureFactorization, FullGrad
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(c) for c in tl]
        fg = FullGrad(copy.deepcopy(model), [])
        rows["fullgrad"]["pytorch-grad-cam"] = lambda: fg(input_tensor=x, targets=targets)
        m = copy.deepcopy(model)
        dff = DeepFeatureFactorization(m, m.get_submodule(layer), computation_on_concepts=m.fc)
        rows["dff-concepts"]["pytorch-grad-cam"] = rows["dff"]["pytorch-grad-cam"] = lambda: dff(x, k)
    return {name: row for name, row in rows.items() if name in cfg.methods}


def bench(model_name: str, batch: int, device: str, cfg) -> list[str]:
    lines = []
    for name, (med, ratio) in grid_medians(model_name, batch, device, cfg, cases).items():
        lines.append(
            f"| {model_name} | {device} | {batch} | {name} | {fmt(med['ours'])} | {fmt(med.get('pytorch-grad-cam'))} | {ratio} |"
        )
    return lines


def main(argv=None) -> None:
    p = grid_parser(
        __doc__, models="resnet18,resnet50", methods=METHODS, layer_help="DFF's layer (FullGrad uses every bias layer)"
    )
    p.add_argument("--concepts", type=int, default=5, help="DFF's K")
    cfg = parse_grid(p, argv)
    cfg.methods = cfg.methods.split(",")
    devs = devices(cfg.devices)
    # pytorch-grad-cam's NMF warns at every call that it stopped at 200 iterations (ours is silent).
    warnings.filterwarnings("ignore", message="Maximum number of iterations")
    print(
        environment(devs) + f"{cfg.size} px, DFF layer {cfg.layer}, K = {cfg.concepts}; repeats {cfg.repeats} "
        "(median); cpu rows: process CPU time, cuda rows: wall time; times in ms"
    )
    print("| model | device | B | method | ours | pytorch-grad-cam | ours / peer |")
    print("|---|---|---|---|---|---|---|")
    print_grid(bench, cfg, devs)


if __name__ == "__main__":
    main()
