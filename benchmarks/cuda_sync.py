"""Where each method makes the host wait for the GPU (for a session with a GPU).

    python benchmarks/cuda_sync.py                       # every registered method, resnet18, batch 8
    python benchmarks/cuda_sync.py --methods grad-cam,occlusion --model resnet50

Runs each method once to warm up, then once more under ``torch.cuda.set_sync_debug_mode("warn")``,
which warns at every synchronising call (``.item()``, ``.cpu()``, a tensor in an ``if``, a
non-pinned copy to the host). It prints, per method, the number of synchronisations and the first
places in the package that caused them, so the hot loops can be checked to be free of host
synchronisation. Input validation (a NaN check before the work starts) and the final return of a
result are expected to sync once or twice; a count that grows with the number of perturbations or
noise samples is the thing to fix. Needs CUDA; prints why not otherwise.
"""

from __future__ import annotations

import argparse
import collections
import sys
import traceback
import warnings
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from guidewidgets import explain as E

# Small but representative settings: the counts are per call, and a loop shows as a count that
# grows with these numbers (run again with larger ones to see it).
OPTIONS = {
    "occlusion": {"window": 32, "stride": 32},
    "rise": {"masks": 64},
    "smoothgrad": {"samples": 4},
    "smooth-grad-cam++": {"samples": 4},
    "integrated-gradients": {"steps": 8},
    "score-cam": {},
}


def sync_sites(fn) -> tuple[int, list[str]]:
    """Number of synchronising calls during fn() and the package lines that made the first ones."""
    sites: collections.Counter[str] = collections.Counter()
    count = 0

    def record(message, category, filename, lineno, file=None, line=None):
        nonlocal count
        if "synchroniz" not in str(message):
            return
        count += 1
        ours = [f for f in traceback.extract_stack() if "guidewidgets" in f.filename and "benchmarks" not in f.filename]
        if ours:
            sites[f"{Path(ours[-1].filename).name}:{ours[-1].lineno}"] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        old = warnings.showwarning
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = old
    return count, [f"{site} x{n}" for site, n in sites.most_common(4)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--methods", default=",".join(m for m in E.methods() if m != "attention-rollout"))
    cfg = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device here: this check needs a GPU (run it where one is lent)")
        return 0
    torch.manual_seed(0)
    model = getattr(torchvision.models, cfg.model)(weights=None).eval().cuda()
    x = torch.rand(cfg.batch, 3, 224, 224, device="cuda")
    target = torch.arange(cfg.batch, device="cuda") % 1000
    print(f"# {cfg.model}, batch {cfg.batch}, {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print("| method | synchronisations per call | where (package line x count) |")
    print("|---|---|---|")
    for name in cfg.methods.split(","):
        kw = OPTIONS.get(name, {})
        try:
            E.explain(model, x, name, target=target, **kw)  # warm-up (cuDNN autotuning, allocations)
            torch.cuda.synchronize()
            n, where = sync_sites(lambda name=name, kw=kw: E.explain(model, x, name, target=target, **kw))
        except Exception as err:  # report and go on: one method's failure must not hide the others
            print(f"| {name} | error: {type(err).__name__}: {err} | |")
            continue
        print(f"| {name} | {n} | {', '.join(where) or '-'} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
