"""Time the newer guidewidgets.explain methods against pytorch-grad-cam and Captum in one run.

    python benchmarks/explain_variants.py                      # resnet18, 224 px, batch 1 and 8, CPU (+ CUDA)
    python benchmarks/explain_variants.py --quick              # resnet18, 64 px, batch 2, CPU, 2 repeats
    python benchmarks/explain_variants.py --methods score-cam,ablation-cam --size 96 --batches 4

Models are torchvision ResNets with random weights (weights=None). Every implementation gets its
own copy of the model and the same explicit targets, layer and settings (pytorch-grad-cam's
ScoreCAM and AblationCAM with batch_size = our images per forward; Captum's IntegratedGradients
with internal_batch_size = ours). Rounds are interleaved, the median is reported. On CPU the time
is the process's CPU time (run with OMP_NUM_THREADS=1 on a shared machine), on CUDA wall time with
synchronisation. Methods without a peer (sharpen-focus, augmented-grad-cam) are timed against
Grad-CAM, their natural floor.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guidewidgets import explain as E
from guidewidgets.explain.batching import auto_batch_size

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The same CPU-time clock, number format and peer imports (None where not installed) as benchmarks/explain.py.
from explain import ca, fmt, medians, pgc, timed

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
]
PGC = {
    "layer-cam": "LayerCAM",
    "xgrad-cam": "XGradCAM",
    "hires-cam": "HiResCAM",
    "eigen-cam": "EigenCAM",
    "score-cam": "ScoreCAM",
    "ablation-cam": "AblationCAM",
}


def cases(model, x, t, cfg) -> dict[str, dict[str, Callable]]:
    tl = t.tolist()
    bs = auto_batch_size(x)
    layer = cfg.layer

    def ours(name, **kw):
        return lambda: E.explain(model, x, name, target=tl, **kw)

    rows: dict[str, dict[str, Callable]] = {}
    for m in METHODS:
        kw: dict = {}
        if E.method_info(m).uses_layer:
            kw["layer"] = layer
        if m == "integrated-gradients":
            kw["steps"] = cfg.steps
        if m == "augmented-grad-cam":
            kw["augmentations"] = cfg.augmentations
        rows[m] = {"ours": ours(m, **kw)}
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
    if ca is not None:
        m_ca = copy.deepcopy(model)
        ig = ca.IntegratedGradients(m_ca)
        rows["integrated-gradients"]["captum"] = lambda: ig.attribute(
            x, target=tl, n_steps=cfg.steps, internal_batch_size=max(1, bs)
        )
        gxi = ca.InputXGradient(m_ca)
        rows["gradient-x-input"]["captum"] = lambda: gxi.attribute(x.clone().requires_grad_(True), target=tl)
    return {k: v for k, v in rows.items() if k in cfg.methods}


def bench(model_name: str, batch: int, device: str, cfg) -> list[str]:
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(weights=None).eval().to(device)
    x = torch.rand(batch, 3, cfg.size, cfg.size, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad():
        t = model(x).argmax(1)
    table = cases(model, x, t, cfg)
    times: dict[str, dict[str, list[float]]] = {m: {i: [] for i in impls} for m, impls in table.items()}
    for r in range(cfg.repeats + 1):  # round 0 warms up
        for m, impls in table.items():
            for impl, fn in impls.items():
                took = timed(fn, device)
                if r:
                    times[m][impl].append(took)
        print(f"  {model_name} B={batch} {device}: round {r}/{cfg.repeats} done", file=sys.stderr, flush=True)
    lines = []
    for m, impls in times.items():
        med, ratio = medians(impls)
        floor = med.get("grad-cam (ours)")
        lines.append(
            f"| {model_name} | {device} | {batch} | {m} | {fmt(med['ours'])} | {fmt(med.get('pytorch-grad-cam'))} "
            f"| {fmt(med.get('captum'))} | {ratio} | {fmt(floor)} |"
        )
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--layer", default="layer4")
    p.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, plus cuda when available)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; 2 with --quick)")
    p.add_argument("--steps", type=int, default=50, help="Integrated Gradients steps")
    p.add_argument("--augmentations", type=int, default=16, help="Augmented Grad-CAM copies")
    p.add_argument("--quick", action="store_true", help="resnet18, 64 px, batch 2, CPU, 2 repeats")
    cfg = p.parse_args(argv)
    if cfg.quick:
        cfg.models, cfg.batches, cfg.devices, cfg.size = "resnet18", "2", "cpu", 64
        cfg.repeats = cfg.repeats or 2
    cfg.repeats = cfg.repeats or 5
    devices = cfg.devices.split(",") if cfg.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    cfg.methods = [E.method_info(m).name for m in cfg.methods.split(",")]
    print(
        f"# torch {torch.__version__}, torchvision {torchvision.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} CPU threads; "
        + (f"GPU {torch.cuda.get_device_name()}; " if "cuda" in devices else "")
        + f"{cfg.size} px, layer {cfg.layer}, IG {cfg.steps} steps, {cfg.augmentations} augmentations; "
        f"repeats {cfg.repeats} (median); cpu rows: process CPU time, cuda rows: wall time; times in ms"
    )
    print("| model | device | B | method | ours | pytorch-grad-cam | captum | ours / fastest peer | Grad-CAM (ours) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for device in devices:
        for model_name in cfg.models.split(","):
            for batch in (int(b) for b in cfg.batches.split(",")):
                for line in bench(model_name, batch, device, cfg):
                    print(line, flush=True)


if __name__ == "__main__":
    main()
