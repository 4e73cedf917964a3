"""Training recipe of the shipped captioner; regenerates it deterministically on a CPU.

    python -m guidewidgets.attend.train_captioner                # -> guidewidgets/attend/weights/captioner.pt
    python -m guidewidgets.attend.train_captioner --out my.pt --epochs 4
    python -m guidewidgets.attend.train_captioner --hard         # -> .../captioner-hard.pt (REINFORCE)

The encoder is the shipped segmenter's, frozen, so its features for the training scenes are
computed once; only the 3 x 3 projection and the attention GRU decoder are trained (teacher
forcing, cross-entropy on every word and ``<end>``). Training scenes come from ``TRAIN_SEED``,
the reported numbers from held-out scenes of ``HELD_OUT_SEED`` that training never sees.
``--hard`` then fine-tunes the soft captioner with hard attention (one sampled cell per word,
REINFORCE for the attention; :func:`train_hard`). The same command with the same ``--threads``
gives the same weights.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F

from ..zoo import load as load_zoo
from ..zoo.models import ShapeSegmenter
from ..zoo.training import printer, recipe, step, torch_threads
from .captioner import GRID, HELD_OUT_SEED, IMAGE_SIZE, Captioner, load_captioner, save_captioner, weights_path
from .captions import VOCAB, caption_dataset, caption_scenes, describe

__all__ = ["RECIPE", "RECIPE_HARD", "TRAIN_SEED", "train", "train_hard", "evaluate", "format_report", "main"]

TRAIN_SEED = 41_000

#: Hyper-parameters; the shipped weights come from exactly these.
RECIPE: dict[str, Any] = dict(train=6_000, test=500, epochs=12, batch=64, lr=3e-3, weight_decay=1e-4, length=16)
#: Hard-attention fine-tuning (REINFORCE) of the soft captioner; scenes from ``TRAIN_SEED + 1``.
RECIPE_HARD: dict[str, Any] = dict(
    train=6_000, test=500, epochs=6, batch=64, lr=2e-3, weight_decay=1e-4, length=16, momentum=0.9
)


def _features(model: Captioner, images: torch.Tensor, batch: int = 250) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model.backbone(images[i : i + batch]) for i in range(0, len(images), batch)])


def train(*, threads: int = 1, log: Any = None, **overrides: Any) -> tuple[Captioner, dict[str, Any]]:
    """Train the captioner from the recipe (``overrides`` replace its entries); returns the model
    (eval mode) and :func:`evaluate` on held-out scenes, with ``train_seconds`` and ``recipe``."""
    cfg = recipe(RECIPE, overrides)
    log = printer(log)
    t0 = time.time()
    with torch_threads(threads):
        torch.manual_seed(0)
        model = Captioner()
        seg = cast(ShapeSegmenter, load_zoo("shapes-segmenter"))
        model.backbone.load_state_dict(torch.nn.Sequential(seg.normalize, seg.encoder).state_dict())
        model.backbone.requires_grad_(False)
        data = caption_dataset(caption_scenes(cfg["train"], seed=TRAIN_SEED), length=cfg["length"])
        feats = _features(model.eval(), data["images"])
        tokens = data["tokens"]
        del data
        log(f"features of {len(tokens)} training scenes: {time.time() - t0:.0f} s")
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        steps = -(-len(tokens) // cfg["batch"])
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg["lr"], total_steps=cfg["epochs"] * steps, pct_start=0.15
        )
        g = torch.Generator().manual_seed(0)
        model.train()
        for epoch in range(cfg["epochs"]):
            order = torch.randperm(len(tokens), generator=g)
            total, count = 0.0, 0
            for s in range(0, len(order), cfg["batch"]):
                idx = order[s : s + cfg["batch"]]
                tok = tokens[idx]
                # Why: cut the batch to its longest caption, so padding steps cost nothing.
                n = int((tok != VOCAB.pad).sum(1).max())
                tok = tok[:, :n]
                logits, _ = model.forward_features(feats[idx], tok)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok.reshape(-1), ignore_index=VOCAB.pad)
                step(opt, loss, sched, clip=(params, 5.0))
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            log(f"epoch {epoch + 1}/{cfg['epochs']}: loss {total / count:.4f}  ({time.time() - t0:.0f} s)")
    model.eval()
    seconds = time.time() - t0
    result = evaluate(model, caption_scenes(cfg["test"], seed=HELD_OUT_SEED))
    result["train_seconds"] = seconds
    result["recipe"] = cfg
    return model, result


def train_hard(
    init: Captioner | None = None, *, threads: int = 1, log: Any = None, **overrides: Any
) -> tuple[Captioner, dict[str, Any]]:
    """Fine-tune a soft captioner (default: the packaged one) with hard attention and REINFORCE.

    Each step samples one cell per word from p (teacher forcing) and reads only it. The words'
    log-likelihood ``log p(y | cells)`` trains the decoder directly; the attention, which the
    sample cuts off from that gradient, gets the REINFORCE term
    ``(log p(y | cells) - b) * grad sum_t log p_t(cell_t)`` with ``b`` a moving average of the
    log-likelihood (the variance-reducing baseline of Show, Attend and Tell). Deterministic for a
    given thread count.
    """
    cfg = recipe(RECIPE_HARD, overrides)
    log = printer(log)
    model = copy.deepcopy(init) if init is not None else load_captioner()
    t0 = time.time()
    with torch_threads(threads):
        torch.manual_seed(0)
        data = caption_dataset(caption_scenes(cfg["train"], seed=TRAIN_SEED + 1), length=cfg["length"])
        feats = _features(model.eval(), data["images"])
        tokens = data["tokens"]
        del data
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        g = torch.Generator().manual_seed(0)
        baseline: float | None = None
        model.train()
        for epoch in range(cfg["epochs"]):
            order = torch.randperm(len(tokens), generator=g)
            total = 0.0
            for s in range(0, len(order), cfg["batch"]):
                idx = order[s : s + cfg["batch"]]
                tok = tokens[idx]
                n = int((tok != VOCAB.pad).sum(1).max())
                tok = tok[:, :n]
                keep = (tok != VOCAB.pad).float()
                logits, _, logp = model.forward_hard(feats[idx], tok, g)
                nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok.reshape(-1), reduction="none")
                nll = (nll.view(tok.shape) * keep).sum(1)
                reward = -nll.detach()
                mean_reward = float(reward.mean())
                m = cfg["momentum"]
                baseline = mean_reward if baseline is None else m * baseline + (1 - m) * mean_reward
                reinforce = ((reward - baseline) * (logp * keep).sum(1)).mean()
                loss = nll.mean() - reinforce
                step(opt, loss, clip=(params, 5.0))
                total += float(nll.detach().sum())
            log(f"epoch {epoch + 1}/{cfg['epochs']}: caption NLL {total / len(order):.4f}  ({time.time() - t0:.0f} s)")
    model.eval()
    seconds = time.time() - t0
    result = evaluate(model, caption_scenes(cfg["test"], seed=HELD_OUT_SEED))
    result["train_seconds"] = seconds
    result["recipe"] = {**cfg, "init": "soft captioner"}
    return model, result


def _cell_fraction(region: torch.Tensor) -> torch.Tensor:
    """Fraction of each 8 x 8 grid cell covered by ``region`` (H, W) -> (12, 12)."""
    return F.adaptive_avg_pool2d(region.float()[None, None], GRID)[0, 0]


@torch.no_grad()
def evaluate(model: Captioner, scenes: Any, modes: tuple[str, ...] = ("soft", "hard"), seed: int = 0) -> dict:
    """Caption ``scenes`` greedily and score against the generated references.

    Per mode: ``exact`` (fraction of captions equal to the reference), ``word`` (fraction of
    reference words matched at their position), ``object_mass`` (mean attention mass p inside the
    named object, over class words generated correctly at their position), ``object_area`` (the
    same objects' mean share of the image: what uniform attention would give), ``background_mass``
    and ``background_area`` likewise for the background word, and ``n``.
    """
    items = [scenes[i] for i in range(len(scenes))]
    images = torch.stack([it["image"] for it in items])
    truths = [describe(it) for it in items]
    classes = set(model.vocab.words) - {"a", "and", "on", "small", "large"}
    out: dict[str, Any] = {"n": len(items)}
    for mode in modes:
        results = []
        for s in range(0, len(items), 100):
            results += model.decode(images[s : s + 100], mode=mode, seed=seed + s)
        exact = correct = total = 0
        obj_mass: list[float] = []
        obj_area: list[float] = []
        bg_mass: list[float] = []
        bg_area: list[float] = []
        for it, ref, res in zip(items, truths, results):
            words = res["words"]
            exact += words == ref["words"]
            total += len(ref["words"])
            for k, w in enumerate(ref["words"]):
                if k >= len(words) or words[k] != w:
                    continue
                correct += 1
                region = ref["regions"][k]
                if region is None:
                    continue
                kind, obj = region
                if kind == "object" and w in classes:
                    mask = it["instances"] == int(obj) + 1
                    obj_mass.append(float((res["p"][k] * _cell_fraction(mask)).sum()))
                    obj_area.append(float(mask.float().mean()))
                elif kind == "background":
                    mask = it["instances"] == 0
                    bg_mass.append(float((res["p"][k] * _cell_fraction(mask)).sum()))
                    bg_area.append(float(mask.float().mean()))

        def mean(v: list[float]) -> float:
            return sum(v) / len(v) if v else float("nan")

        out[mode] = {
            "exact": exact / len(items),
            "word": correct / total,
            "object_mass": mean(obj_mass),
            "object_area": mean(obj_area),
            "objects_scored": len(obj_mass),
            "background_mass": mean(bg_mass),
            "background_area": mean(bg_area),
        }
    return out


def format_report(result: dict) -> str:
    """:func:`evaluate`'s numbers as text (percent)."""
    lines = [f"held-out scenes: {result['n']} (seed {HELD_OUT_SEED}, {IMAGE_SIZE} px)"]
    for mode in ("soft", "hard"):
        if mode not in result:
            continue
        r = result[mode]
        lines.append(
            f"{mode:>4}: exact match {100 * r['exact']:.1f}%, per-word {100 * r['word']:.1f}%, "
            f"attention inside the named object {100 * r['object_mass']:.1f}% (object area "
            f"{100 * r['object_area']:.1f}%, {r['objects_scored']} words), on the background for the "
            f"background word {100 * r['background_mass']:.1f}% (area {100 * r['background_area']:.1f}%)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m guidewidgets.attend.train_captioner", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--hard", action="store_true", help="fine-tune the soft captioner with hard attention (REINFORCE)")
    p.add_argument(
        "--init", type=Path, default=None, help="--hard: the soft captioner to start from (default: packaged)"
    )
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epoch count")
    p.add_argument("--train", type=int, default=None, help="training scenes")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (the weights depend on it; default 1)")
    p.add_argument("--out", type=Path, default=None, help="where to write the weights (default: the package's file)")
    args = p.parse_args(argv)
    over = {k: v for k, v in (("epochs", args.epochs), ("train", args.train)) if v is not None}
    if args.hard:
        init = load_captioner(args.init) if args.init is not None else None
        model, result = train_hard(init, threads=args.threads, **over)
    else:
        model, result = train(threads=args.threads, **over)
    print(format_report(result))
    print(f"training time: {result['train_seconds']:.0f} s")
    out = args.out or weights_path(hard=args.hard)
    metrics = {m: result[m] for m in ("soft", "hard") if m in result}
    meta = {"recipe": result["recipe"], "train_seed": TRAIN_SEED + int(args.hard), "test_seed": HELD_OUT_SEED}
    save_captioner(model, out, {**meta, "metrics": metrics, "attention": "hard" if args.hard else "soft"})
    print(f"weights written to {out} ({Path(out).stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
