"""Time every guidewidgets.explain method against pytorch-grad-cam and Captum, and against its floor.

    python benchmarks/explain.py                 # resnet18 + resnet50, batch 1 and 8, CPU (+ CUDA)
    python benchmarks/explain.py --quick         # resnet18, batch 1, CPU, 3 repeats, light settings
    python benchmarks/explain.py --models resnet18 --batches 8 --methods grad-cam,occlusion --repeats 5
    python benchmarks/explain.py --thread-safety  # cost of the per-model lock and thread-owned hooks

Models are torchvision ResNets with random weights (weights=None) at 224 x 224. Every
implementation gets its own copy of the model (peers may modify theirs) and the same explicit
targets and settings. Repeats are interleaved (each round times every implementation once) and
the median is reported. On CPU the time is the process's CPU time (run it with
OMP_NUM_THREADS=1 on a shared machine: then waiting for a core is not counted); on CUDA it is
wall time with synchronisation.

The floor is the least work a method needs, timed with plain PyTorch on the same model:
  forward          one forward without autograd (CAM)
  layer backward   head without graph + forward of the tail + backward to the layer (Grad-CAM, ++)
  input backward   forward + backward to the input (saliency, guided backprop, deconvnet, guided Grad-CAM)
  n x ...          the same for the n noisy copies, batched like ours (SmoothGrad; Smooth
                   Grad-CAM++ also needs one forward of the clean image for its feature map)
  perturbed fwds   forwards of the perturbed images only, batched like ours (occlusion, RISE)
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
from guidewidgets.explain.batching import auto_batch_size

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The clock, the rounds and the number format every benchmark shares.
from timing import devices, environment, fmt, medians, predicted_input, print_grid, rounds, timed

try:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
except ImportError:  # pragma: no cover
    pgc = None
try:
    import captum.attr as ca
except ImportError:  # pragma: no cover
    ca = None

warnings.filterwarnings("ignore")


# --- floors: plain PyTorch, written out for torchvision ResNets -------------------------------


def resnet_head(m, x):
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    return m.layer4(m.layer3(m.layer2(m.layer1(x))))


def resnet_tail(m, a):
    return m.fc(torch.flatten(m.avgpool(a), 1))


def floor_forward(m, x, t):
    with torch.no_grad():
        m(x)


def floor_layer_backward(m, x, t):
    with torch.no_grad():
        a = resnet_head(m, x)
    a.requires_grad_(True)
    out = resnet_tail(m, a)
    torch.autograd.grad(out.gather(1, t[:, None]).sum(), a)


def floor_input_backward(m, x, t):
    xg = x.detach().requires_grad_(True)
    out = m(xg)
    torch.autograd.grad(out.gather(1, t[:, None]).sum(), xg)


def batched(step, images: int, x, t, bs: int):
    """Run ``step`` over ``images`` copies of ``x`` in chunks of (bs // B) copies, like ours."""
    b = x.shape[0]
    per = max(1, bs // b)
    buf = x.repeat(per, 1, 1, 1)
    tt = t.repeat(per)

    def run(m, *_):
        for start in range(0, images, per):
            k = min(per, images - start)
            step(m, buf[: k * b], tt[: k * b])

    return run


# --- the implementations compared -----------------------------------------------------------


def cases(model, x, t, cfg, device):
    """{method: {impl: callable()}} with impl in ours, pytorch-grad-cam, captum, floor."""
    b = x.shape[0]
    bs = auto_batch_size(x)
    tl = t.tolist()
    occl_positions = ((224 - cfg.window) // cfg.stride + 1) ** 2

    def ours(name, **kw):
        return lambda: E.explain(model, x, name, target=tl, **kw)

    def copy_of(inplace=True):
        m = copy.deepcopy(model)
        if not inplace:  # Captum's ReLU backward hooks refuse inplace ReLUs
            for mod in m.modules():
                if isinstance(mod, torch.nn.ReLU):
                    mod.inplace = False
        return m

    m_pgc, m_ca, m_ca_relu = copy_of(), copy_of(), copy_of(inplace=False)
    floor_m = copy_of()
    targets = [ClassifierOutputTarget(c) for c in tl] if pgc else None

    def pgc_cam(cls):
        def run():
            with cls(model=m_pgc, target_layers=[m_pgc.layer4]) as cam:
                return cam(input_tensor=x, targets=targets)

        return run

    def pgc_guided():
        gb = pgc.GuidedBackpropReLUModel(copy.deepcopy(m_pgc), device=device)
        # one image per call: a batch needs a loop
        return lambda: [gb(x[i : i + 1], target_category=tl[i]) for i in range(b)]

    sigma = cfg.noise * float(x.max() - x.min())
    # Floors shared by several methods are timed once per round.
    f_forward = ("forward", lambda: floor_forward(floor_m, x, t))
    f_layer = ("layer backward", lambda: floor_layer_backward(floor_m, x, t))
    f_input = ("input backward", lambda: floor_input_backward(floor_m, x, t))
    rows: dict[str, dict[str, Callable | tuple[str, Callable]]] = {}
    rows["cam"] = {"ours": ours("cam"), "floor": f_forward}
    rows["grad-cam"] = {"ours": ours("grad-cam", layer="layer4"), "floor": f_layer}
    rows["grad-cam++"] = {"ours": ours("grad-cam++", layer="layer4"), "floor": f_layer}
    rows["smooth-grad-cam++"] = {
        "ours": ours("smooth-grad-cam++", layer="layer4", samples=cfg.samples, noise=cfg.noise),
        # the method needs the clean image's feature map: one plain forward more
        "floor": (
            "forward + n x layer backward",
            lambda: (floor_forward(floor_m, x, t), batched(floor_layer_backward, cfg.samples, x, t, bs)(floor_m)),
        ),
    }
    for name in ("saliency", "guided-backprop", "deconvnet", "guided-grad-cam"):
        rows[name] = {"ours": ours(name), "floor": f_input}
    rows["smoothgrad"] = {
        "ours": ours("smoothgrad", samples=cfg.samples, noise=cfg.noise),
        "floor": ("n x input backward", lambda: batched(floor_input_backward, cfg.samples, x, t, bs)(floor_m)),
    }
    rows["occlusion"] = {
        "ours": ours("occlusion", window=cfg.window, stride=cfg.stride, fill=0.5, mode="plain"),
        "floor": ("occlusion forwards", lambda: batched(floor_forward, occl_positions, x, t, bs)(floor_m)),
    }
    rows["rise"] = {
        "ours": ours("rise", masks=cfg.masks),
        "floor": ("rise forwards", lambda: batched(floor_forward, cfg.masks, x, t, bs)(floor_m)),
    }
    if pgc is not None:
        rows["grad-cam"]["pytorch-grad-cam"] = pgc_cam(pgc.GradCAM)
        rows["grad-cam++"]["pytorch-grad-cam"] = pgc_cam(pgc.GradCAMPlusPlus)
        rows["guided-backprop"]["pytorch-grad-cam"] = pgc_guided()
    if ca is not None:
        size = tuple(x.shape[2:])
        layer_gc = ca.LayerGradCam(m_ca, m_ca.layer4)
        rows["grad-cam"]["captum"] = lambda: ca.LayerAttribution.interpolate(
            layer_gc.attribute(x, target=tl, relu_attributions=True), size, interpolate_mode="bilinear"
        )
        rows["saliency"]["captum"] = lambda: ca.Saliency(m_ca).attribute(x.clone().requires_grad_(True), target=tl)
        rows["guided-backprop"]["captum"] = lambda: ca.GuidedBackprop(m_ca_relu).attribute(x.clone(), target=tl)
        rows["deconvnet"]["captum"] = lambda: ca.Deconvolution(m_ca_relu).attribute(x.clone(), target=tl)
        rows["guided-grad-cam"]["captum"] = lambda: ca.GuidedGradCam(m_ca_relu, m_ca_relu.layer4).attribute(
            x.clone(), target=tl, interpolate_mode="bilinear"
        )
        rows["smoothgrad"]["captum"] = lambda: ca.NoiseTunnel(ca.Saliency(m_ca)).attribute(
            x.clone(),
            nt_type="smoothgrad",
            nt_samples=cfg.samples,
            nt_samples_batch_size=max(1, bs // b),
            stdevs=sigma,
            target=tl,
        )
        rows["occlusion"]["captum"] = lambda: ca.Occlusion(m_ca).attribute(
            x,
            sliding_window_shapes=(3, cfg.window, cfg.window),
            strides=(3, cfg.stride, cfg.stride),
            baselines=0.5,
            target=tl,
            perturbations_per_eval=max(1, bs // b),
        )
    return {k: v for k, v in rows.items() if k in cfg.methods}


PEER_NOTE = {
    "cam": "no peer has CAM",
    "grad-cam++": "Captum has no Grad-CAM++",
    "smooth-grad-cam++": "no peer",
    "rise": "no peer has RISE",
    "guided-backprop": "pytorch-grad-cam: one image per call (looped)",
    "saliency": "pytorch-grad-cam has none",
    "deconvnet": "pytorch-grad-cam has none",
    "guided-grad-cam": "pytorch-grad-cam: only as a script",
    "smoothgrad": "pytorch-grad-cam has none",
    "occlusion": "pytorch-grad-cam has none",
}


def bench(model_name: str, batch: int, device: str, cfg) -> list[str]:
    model, x, t = predicted_input(model_name, batch, 224, device)
    table = cases(model, x, t, cfg, device)
    times = rounds(table, cfg.repeats, device, f"{model_name} B={batch} {device}")
    lines = []
    for m, impls in times.items():
        med, ratio_peer = medians(impls)
        note = PEER_NOTE.get(m, "")
        lines.append(
            f"| {model_name} | {device} | {batch} | {m} | {fmt(med['ours'])} | {fmt(med.get('pytorch-grad-cam'))} "
            f"| {fmt(med.get('captum'))} | {fmt(med['floor'])} | {ratio_peer} | {med['ours'] / med['floor']:.2f} | {note} |"
        )
    return lines


# --- thread safety: what the per-model lock and thread-owned hooks cost a single thread -------


def thread_safety(cfg) -> None:
    """Time single-threaded explain calls with the thread safety switched off and on.

    Variants: ``none`` (no lock, hooks act in every thread: the engine before issue 11), ``lock``
    (hooks.model_lock held around each call), ``owned`` (hooks act only in the placing thread),
    ``both`` (what ships). Switched by replacing registry.model_lock and hooks.owned (and the
    names the method modules imported) for the run. Also times the default layer's cost: a call
    with layer=None whose per-size cache is cleared before each call against one that hits it.
    """
    import contextlib

    from guidewidgets import hooks as H
    from guidewidgets.explain import layers as L
    from guidewidgets.explain import registry as R

    real_lock, real_owned = R.model_lock, H.owned
    owners = [m for m in list(sys.modules.values()) if getattr(m, "owned", None) is real_owned]

    def switch(lock: bool, own: bool) -> None:
        R.model_lock = real_lock if lock else (lambda m: contextlib.nullcontext())
        for m in owners:
            m.owned = real_owned if own else (lambda f: f)

    variants = {"none": (False, False), "lock": (True, False), "owned": (False, True), "both": (True, True)}
    size = cfg.size
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    calls = {
        "grad-cam": lambda: E.explain(model, x, "grad-cam", target=3, layer="layer4"),
        "guided-grad-cam": lambda: E.explain(model, x, "guided-grad-cam", target=3, layer="layer4"),
        "saliency": lambda: E.explain(model, x, "saliency", target=3),
        "guided-backprop": lambda: E.explain(model, x, "guided-backprop", target=3),
        "cam": lambda: E.explain(model, x, "cam", target=3, layer="layer4"),
    }
    times: dict[tuple[str, str], list[float]] = {(c, v): [] for c in calls for v in variants}
    default_times: dict[str, list[float]] = {"cached": [], "uncached": []}
    try:
        for r in range(cfg.repeats + 1):
            for c, fn in calls.items():
                for v, (lock, own) in variants.items():
                    switch(lock, own)
                    took = timed(lambda fn=fn: [fn() for _ in range(cfg.inner)], "cpu") / cfg.inner
                    if r:
                        times[c, v].append(took)
            switch(True, True)
            E.explain(model, x, "grad-cam", target=3)  # fill the cache
            took_c = timed(lambda: E.explain(model, x, "grad-cam", target=3), "cpu")
            L._DEFAULT_LAYER.pop(model, None)
            took_u = timed(lambda: E.explain(model, x, "grad-cam", target=3), "cpu")
            if r:
                default_times["cached"].append(took_c)
                default_times["uncached"].append(took_u)
            print(f"  thread safety: round {r}/{cfg.repeats} done", file=sys.stderr, flush=True)
    finally:
        switch(True, True)
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s); resnet18 (weights=None), "
        f"B=1, {size} x {size}; process CPU time per call, median of {cfg.repeats} rounds of {cfg.inner} calls; ms"
    )
    print("| method | none | lock | owned hooks | both (shipped) | both / none |")
    print("|---|---|---|---|---|---|")
    for c in calls:
        med = {v: statistics.median(times[c, v]) for v in variants}
        print(
            f"| {c} | {fmt(med['none'])} | {fmt(med['lock'])} | {fmt(med['owned'])} | {fmt(med['both'])} "
            f"| {med['both'] / med['none']:.3f} |"
        )
    # The lock and the ownership check themselves, without a model: per call / per hook call.
    lock = real_lock(model)
    n = 100000
    t0 = time.perf_counter()
    for _ in range(n):
        with lock:
            pass
    t_lock = (time.perf_counter() - t0) / n
    hook = real_owned(lambda *a: None)
    t0 = time.perf_counter()
    for _ in range(n):
        hook(None, None, None)
    t_owned = (time.perf_counter() - t0) / n
    print(
        f"\nmodel_lock acquire + release: {t_lock * 1e6:.2f} us; an owned hook's thread check: {t_owned * 1e6:.2f} us per call"
    )
    cached, uncached = (statistics.median(default_times[k]) for k in ("cached", "uncached"))
    print(
        f"grad-cam with layer=None: {fmt(cached)} ms with the per-size default-layer cache, "
        f"{fmt(uncached)} ms when the default is found again (one extra forward): ratio {uncached / cached:.2f}"
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,resnet50")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--devices", default=None, help="cpu,cuda (default: cpu, plus cuda when available)")
    p.add_argument("--methods", default=",".join(E.methods()))
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5; 3 with --quick)")
    p.add_argument("--window", type=int, default=32, help="occlusion window (px)")
    p.add_argument("--stride", type=int, default=16, help="occlusion stride (px)")
    p.add_argument("--masks", type=int, default=1000, help="RISE masks")
    p.add_argument("--samples", type=int, default=25, help="noisy copies for SmoothGrad / Smooth Grad-CAM++")
    p.add_argument("--noise", type=float, default=0.15)
    p.add_argument("--quick", action="store_true", help="resnet18, batch 1, CPU, 3 repeats, light settings")
    p.add_argument("--thread-safety", action="store_true", help="cost of the per-model lock and thread-owned hooks")
    p.add_argument("--size", type=int, default=224, help="image size for --thread-safety")
    p.add_argument("--inner", type=int, default=5, help="calls per timing for --thread-safety")
    cfg = p.parse_args(argv)
    if cfg.thread_safety:
        cfg.repeats = cfg.repeats or 5
        thread_safety(cfg)
        return
    if cfg.quick:
        cfg.models, cfg.batches, cfg.devices = "resnet18", "1", "cpu"
        cfg.repeats = cfg.repeats or 3
        cfg.window, cfg.stride, cfg.masks, cfg.samples = 112, 56, 16, 4
    cfg.repeats = cfg.repeats or 5
    devs = devices(cfg.devices)
    cfg.methods = [E.method_info(m).name for m in cfg.methods.split(",")]
    positions = ((224 - cfg.window) // cfg.stride + 1) ** 2
    print(
        environment(devs)
        + "cpu rows: process CPU time, cuda rows: wall time; "
        + f"repeats {cfg.repeats} (median); occlusion window {cfg.window} stride {cfg.stride} ({positions} positions), "
        f"RISE {cfg.masks} masks, {cfg.samples} noisy samples; times in ms"
    )
    print(
        "| model | device | B | method | ours | pytorch-grad-cam | captum | floor | ours / fastest peer | ours / floor | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print_grid(bench, cfg, devs)


if __name__ == "__main__":
    main()
