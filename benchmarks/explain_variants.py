"""Time the newer guidewidgets.explain methods against pytorch-grad-cam, Captum and torchcam in one run.

    python benchmarks/explain_variants.py                      # resnet18, 224 px, batch 1 and 8, CPU (+ CUDA)
    python benchmarks/explain_variants.py --quick              # resnet18, 64 px, batch 2, CPU, 2 repeats
    python benchmarks/explain_variants.py --methods score-cam,ablation-cam --size 96 --batches 4
    python benchmarks/explain_variants.py --quick --methods ss-cam,is-cam,kpca-cam --samples 2

Models are torchvision ResNets with random weights (weights=None). Every implementation gets its
own copy of the model and the same explicit targets, layer and settings (pytorch-grad-cam's
ScoreCAM and AblationCAM with batch_size = our images per forward; Captum's IntegratedGradients
with internal_batch_size = ours). Rounds are interleaved, the median is reported. On CPU the time
is the process's CPU time (run with OMP_NUM_THREADS=1 on a shared machine), on CUDA wall time with
synchronisation. Methods without a peer (sharpen-focus, augmented-grad-cam) are timed against
Grad-CAM, their natural floor. SS-CAM and IS-CAM run against torchcam's SSCAM and ISCAM (when
installed) with ``--samples`` copies each and torchcam's batch_size = ours; the rows
``grad-cam+aug_smooth``, ``grad-cam+eigen_smooth`` and ``grad-cam+layers`` time pytorch-grad-cam's
knobs (layers: layer3 and ``--layer``) on both sides.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guidewidgets import explain as E
from guidewidgets.explain.batching import auto_batch_size

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The peer imports (None where not installed) of benchmarks/explain.py; the shared clock and rounds.
from explain import ca, pgc

try:  # optional peer: torchcam's SSCAM and ISCAM
    import torchcam.methods as tcm
except ImportError:
    tcm = None
from timing import devices, environment, fmt, grid_medians, grid_parser, parse_grid, print_grid

METHODS = [
    "layer-cam",
    "xgrad-cam",
    "hires-cam",
    "eigen-cam",
    "sharpen-focus",
    "score-cam",
    "ablation-cam",
    "gradient-x-input",
    "integrated-gradients",
    "augmented-grad-cam",
    "grad-cam-elementwise",
    "eigengrad-cam",
    "kpca-cam",
    "ss-cam",
    "is-cam",
    "grad-cam+aug_smooth",
    "grad-cam+eigen_smooth",
    "grad-cam+layers",
]
# pytorch-grad-cam's knobs, timed on Grad-CAM: our keywords (layers: --layer and the one before).
KNOBS = {
    "grad-cam+aug_smooth": {"aug_smooth": True},
    "grad-cam+eigen_smooth": {"eigen_smooth": True},
    "grad-cam+layers": {},
}
TORCHCAM = {"ss-cam": "SSCAM", "is-cam": "ISCAM"}
PGC = {
    "layer-cam": "LayerCAM",
    "xgrad-cam": "XGradCAM",
    "hires-cam": "HiResCAM",
    "eigen-cam": "EigenCAM",
    "score-cam": "ScoreCAM",
    "ablation-cam": "AblationCAM",
    "grad-cam-elementwise": "GradCAMElementWise",
    "eigengrad-cam": "EigenGradCAM",
    "kpca-cam": "KPCA_CAM",
}


def cases(model, x, t, cfg) -> dict[str, dict[str, Callable]]:
    tl = t.tolist()
    bs = auto_batch_size(x)
    layer = cfg.layer

    def ours(name, **kw):
        return lambda: E.explain(model, x, name, target=tl, **kw)

    rows: dict[str, dict[str, Callable]] = {}
    for m in METHODS:
        if m in KNOBS:
            continue
        kw: dict = {}
        if E.method_info(m).uses_layer:
            kw["layer"] = layer
        if m == "integrated-gradients":
            kw["steps"] = cfg.steps
        if m == "augmented-grad-cam":
            kw["augmentations"] = cfg.augmentations
        if m in TORCHCAM:
            kw["samples"] = cfg.samples
        rows[m] = {"ours": ours(m, **kw)}
    layers = [_before(layer), layer]
    for m, kw in KNOBS.items():
        rows[m] = {"ours": ours("grad-cam", layer=layers if m == "grad-cam+layers" else layer, **kw)}
    grad_cam = ours("grad-cam", layer=layer)
    rows["sharpen-focus"]["grad-cam (ours)"] = grad_cam
    rows["augmented-grad-cam"]["grad-cam (ours)"] = grad_cam
    if pgc is not None:
        targets = [pgc.utils.model_targets.ClassifierOutputTarget(c) for c in tl]
        for m, cls_name in PGC.items():
            peer_model = copy.deepcopy(model)
            cls = getattr(pgc, cls_name)
            extra = {"batch_size": bs} if cls_name == "AblationCAM" else {}

            def run(cls=cls, peer_model=peer_model, extra=extra, score=cls_name == "ScoreCAM"):
                with cls(model=peer_model, target_layers=[getattr(peer_model, layer)], **extra) as cam:
                    if score:  # its batch size is an attribute, not an argument
                        cam.batch_size = bs
                    return cam(input_tensor=x, targets=targets)

            rows[m]["pytorch-grad-cam"] = run
        for m, kw in KNOBS.items():
            peer_model = copy.deepcopy(model)
            names = layers if m == "grad-cam+layers" else [layer]

            def knob(peer_model=peer_model, names=names, kw=kw):
                with pgc.GradCAM(model=peer_model, target_layers=[getattr(peer_model, n) for n in names]) as cam:
                    return cam(input_tensor=x, targets=targets, **kw)

            rows[m]["pytorch-grad-cam"] = knob
    if tcm is not None:
        for m, cls_name in TORCHCAM.items():
            peer_model = copy.deepcopy(model)

            def tc_run(cls_name=cls_name, peer_model=peer_model):
                cls = getattr(tcm, cls_name)
                with cls(
                    peer_model, layer, batch_size=bs, num_samples=cfg.samples, input_shape=tuple(x.shape[1:])
                ) as ex:
                    with torch.no_grad():
                        out = peer_model(x)
                    return ex(class_idx=tl, scores=out)

            rows[m]["torchcam"] = tc_run
    if ca is not None:
        m_ca = copy.deepcopy(model)
        ig = ca.IntegratedGradients(m_ca)
        rows["integrated-gradients"]["captum"] = lambda: ig.attribute(
            x, target=tl, n_steps=cfg.steps, internal_batch_size=max(1, bs)
        )
        gxi = ca.InputXGradient(m_ca)
        rows["gradient-x-input"]["captum"] = lambda: gxi.attribute(x.clone().requires_grad_(True), target=tl)
    return {k: v for k, v in rows.items() if k in cfg.methods}


def _before(layer: str) -> str:
    """The ResNet stage before ``layer`` ("layer4" -> "layer3"), for the several-layers row."""
    stage = int(layer[-1]) if layer.startswith("layer") and layer[-1].isdigit() else 4
    return f"layer{max(1, stage - 1)}"


def bench(model_name: str, batch: int, device: str, cfg) -> list[str]:
    lines = []
    for m, (med, ratio) in grid_medians(model_name, batch, device, cfg, cases).items():
        if "torchcam" in med:  # timing.medians knows pytorch-grad-cam and Captum
            ratio = f"{med['ours'] / med['torchcam']:.2f}"
        floor = med.get("grad-cam (ours)")
        lines.append(
            f"| {model_name} | {device} | {batch} | {m} | {fmt(med['ours'])} | {fmt(med.get('pytorch-grad-cam'))} "
            f"| {fmt(med.get('captum'))} | {fmt(med.get('torchcam'))} | {ratio} | {fmt(floor)} |"
        )
    return lines


def main(argv=None) -> None:
    p = grid_parser(__doc__, models="resnet18", methods=METHODS)
    p.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps")
    p.add_argument("--augmentations", type=int, default=16, help="Augmented Grad-CAM copies")
    p.add_argument("--samples", type=int, default=4, help="SS-CAM / IS-CAM copies per channel (both sides)")
    cfg = parse_grid(p, argv)
    devs = devices(cfg.devices)
    cfg.methods = [m if m in KNOBS else E.method_info(m).name for m in cfg.methods.split(",")]
    print(
        environment(devs)
        + f"{cfg.size} px, layer {cfg.layer}, IG {cfg.steps} steps, {cfg.augmentations} augmentations, "
        f"SS-/IS-CAM {cfg.samples} samples; "
        f"repeats {cfg.repeats} (median); cpu rows: process CPU time, cuda rows: wall time; times in ms"
    )
    print(
        "| model | device | B | method | ours | pytorch-grad-cam | captum | torchcam | ours / fastest peer "
        "| Grad-CAM (ours) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print_grid(bench, cfg, devs)


if __name__ == "__main__":
    main()
