"""Training recipe for the STN classifier and its plain baseline; regenerates the shipped weights.

    python -m guidewidgets.attend.train_stn            # both -> guidewidgets/attend/weights/{stn,plain}-classifier.pt
    python -m guidewidgets.attend.train_stn stn --epochs 2 --out /tmp/stn.pt

Every epoch sees freshly generated distorted scenes (seed ``TRAIN_SEED + epoch``); the held-out
scenes come from ``TEST_SEED``, which training never uses. Both models get the same scenes, the same
optimiser and the same schedule. The same command with the same ``--threads`` gives the same weights.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..zoo.training import printer, recipe, step, torch_threads
from .stn import FORMAT, MODELS, DistortedScenes, PlainClassifier, STNClassifier, weights_path

__all__ = ["RECIPE", "TRAIN_SEED", "TEST_SEED", "build", "evaluate", "train", "save", "main"]

TRAIN_SEED = 52_000
TEST_SEED = 61_001

#: Hyper-parameters; the shipped weights come from exactly these.
RECIPE: dict[str, Any] = dict(epochs=14, train=2048, test=1024, batch=32, lr=3e-3, loc_lr=3e-3, weight_decay=1e-4)


def build(name: str) -> nn.Module:
    """A fresh ``"stn"`` or ``"plain"`` model (seed it first for reproducible weights)."""
    if name not in MODELS:
        raise ValueError(f"unknown STN model {name!r}; use one of {list(MODELS)}")
    return STNClassifier() if name == "stn" else PlainClassifier()


@torch.no_grad()
def evaluate(model: nn.Module, scenes: DistortedScenes, batch_size: int = 128) -> dict[str, Any]:
    """``accuracy``, ``confusion`` (rows: truth, columns: prediction) and ``n`` of ``model`` on ``scenes``."""
    was = model.training
    model.eval()
    try:
        k = len(scenes.classes)
        confusion = torch.zeros(k, k, dtype=torch.long)
        for start in range(0, len(scenes), batch_size):
            b = scenes.batch(start, start + batch_size)
            pred = model(b["images"]).argmax(1)
            confusion += torch.bincount(b["labels"] * k + pred, minlength=k * k).view(k, k)
    finally:
        model.train(was)
    acc = float(confusion.diag().sum()) / max(int(confusion.sum()), 1)
    return {"accuracy": acc, "confusion": confusion, "n": len(scenes), "classes": list(scenes.classes)}


def train(
    name: str, *, threads: int = 1, log: Callable[[str], None] | None = None, **overrides: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``name`` ("stn" or "plain") from scratch by :data:`RECIPE` (``overrides`` replace its
    entries); returns the model (eval mode) and its held-out :func:`evaluate` result.
    Deterministic for a given thread count."""
    cfg = recipe(RECIPE, overrides, word="keys")
    say = printer(log)
    t0 = time.time()
    with torch_threads(threads):
        torch.manual_seed(0)
        model = build(name)
        loc = [p for n, p in model.named_parameters() if n.startswith("localisation.")]
        rest = [p for n, p in model.named_parameters() if not n.startswith("localisation.")]
        # Why a group of its own: the localisation net's step size is a knob of STNs (a 10x smaller
        # one was tried with the general affine head); the soft-argmax head trains at the common one.
        groups = [{"params": rest, "lr": cfg["lr"]}] + ([{"params": loc, "lr": cfg["loc_lr"]}] if loc else [])
        opt = torch.optim.AdamW(groups, weight_decay=cfg["weight_decay"])
        steps = cfg["epochs"] * -(-cfg["train"] // cfg["batch"])
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in groups], total_steps=max(steps, 1), pct_start=0.2
        )
        model.train()
        for epoch in range(cfg["epochs"]):
            scenes = DistortedScenes(cfg["train"], seed=TRAIN_SEED + epoch)
            total, count, right = 0.0, 0, 0
            for start in range(0, cfg["train"], cfg["batch"]):
                b = scenes.batch(start, start + cfg["batch"])
                out = model(b["images"])
                loss = F.cross_entropy(out, b["labels"])
                step(opt, loss, sched)
                total += float(loss.detach()) * len(b["labels"])
                count += len(b["labels"])
                right += int((out.argmax(1) == b["labels"]).sum())
            say(
                f"{name} epoch {epoch + 1}/{cfg['epochs']}: loss {total / count:.4f}  "
                f"train acc {100 * right / count:.1f}  ({time.time() - t0:.0f} s)"
            )
    seconds = time.time() - t0
    model.eval()
    result = evaluate(model, DistortedScenes(cfg["test"], seed=TEST_SEED))
    result.update(train_seconds=seconds, recipe=cfg, threads=int(threads))
    return model, result


def save(model: nn.Module, name: str, path: str | Path, result: dict[str, Any]) -> None:
    """Write ``model``'s weights with the metadata :func:`guidewidgets.attend.stn.load` checks."""
    meta = {
        "recipe": dict(result["recipe"]),
        "train_seed": TRAIN_SEED,
        "test_seed": TEST_SEED,
        "threads": result.get("threads", 1),
        "metrics": {"accuracy": result["accuracy"], "n": result["n"], "train_seconds": result["train_seconds"]},
    }
    blob = {
        "format": FORMAT,
        "model": name,
        "classes": list(result["classes"]),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m guidewidgets.attend.train_stn", description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", metavar="MODEL", help="stn and/or plain (default: both)")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    p.add_argument("--train", type=int, default=None, help="scenes per epoch")
    p.add_argument("--test", type=int, default=None, help="held-out scenes")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the weights depend on it; default 1)")
    p.add_argument("--out", type=Path, default=None, help="output file (one model) or folder (default: the package's)")
    args = p.parse_args(argv)
    names = list(dict.fromkeys(args.models or list(MODELS)))
    bad = [n for n in names if n not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    over = {k: v for k, v in (("epochs", args.epochs), ("train", args.train), ("test", args.test)) if v is not None}
    for name in names:
        model, result = train(name, threads=args.threads, **over)
        conf = result["confusion"]
        print(f"{name}: held-out accuracy {100 * result['accuracy']:.1f}% on {result['n']} scenes (seed {TEST_SEED})")
        print(
            "confusion (rows: truth, columns: prediction): " + " | ".join(" ".join(map(str, r)) for r in conf.tolist())
        )
        if args.out is None:
            out = weights_path(name)
        elif args.out.suffix == ".pt" and len(names) == 1:
            out = args.out
        else:
            out = args.out / f"{MODELS[name]}.pt"
        save(model, name, out, result)
        print(f"{name}: {result['train_seconds']:.0f} s; weights written to {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
