"""Classification + localization, the supervised baseline for CAM boxes: a box-regression head
on the classifier's feature map, trained with box labels.

The lecture's network shares a backbone between a class head and a box head and trains both with
L = L_cls + alpha * L_box. Here the backbone is the shipped classifier, *frozen* (its class head
is already trained, so L_cls is constant and alpha plays no role): only L_box (smooth L1 on box
corners as fractions of the image side) trains the head. Training takes seconds on a CPU, so
nothing is shipped: ``python -m guidewidgets.localize`` trains one and compares its
boxes with CAM boxes on held-out scenes.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..explain.targets import check_input
from ..hooks import capture, eval_mode, model_lock
from .boxes import check_int, check_number

__all__ = ["BoxHead", "features", "train_box_head", "predict_boxes", "TRAIN_SEED"]

#: Scenes the head is trained on; the scoreboard's held-out seed (2027) is never used for training.
TRAIN_SEED = 3141


class BoxHead(nn.Module):
    """(B, C, h, w) feature map -> (B, 4) box ``[x0, y0, x1, y1]`` as fractions of the image side.

    A 1x1 convolution keeps *where* the features are (global pooling, as in the class head, would
    throw that away), then two linear layers read the box off the flattened grid.
    """

    def __init__(self, channels: int, grid: tuple[int, int], hidden: int = 64, squeeze: int = 16) -> None:
        super().__init__()
        self.grid = grid
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.fc1 = nn.Linear(squeeze * grid[0] * grid[1], hidden)
        self.fc2 = nn.Linear(hidden, 4)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if tuple(f.shape[2:]) != self.grid:
            raise ValueError(
                f"the head was trained on a {self.grid} grid, got {tuple(f.shape[2:])}; use the same image size"
            )
        h = F.relu(self.reduce(f)).flatten(1)
        return torch.sigmoid(self.fc2(F.relu(self.fc1(h))))


def features(model: nn.Module, x: torch.Tensor, layer: str | None = None, batch_size: int = 64) -> torch.Tensor:
    """The feature map (B, C, h, w) of ``layer`` (default: the model's ``default_explain_layer``)."""
    x = check_input(model, x)
    batch_size = check_int(batch_size, "batch_size", 1)
    name = layer or getattr(model, "default_explain_layer", None)
    if name is None:
        raise ValueError("give layer=: the model has no default_explain_layer")
    out = []
    with model_lock(model), eval_mode(model), torch.no_grad():
        for s in range(0, len(x), batch_size):
            with capture(model, name, cut=False) as cap:
                model(x[s : s + batch_size])
            assert cap.activations is not None
            out.append(cap.activations.detach().clone())
    return torch.cat(out)


def train_box_head(
    model: nn.Module,
    n: int = 1024,
    epochs: int = 30,
    layer: str | None = None,
    seed: int = TRAIN_SEED,
    lr: float = 3e-3,
    progress: Callable[[float], None] | None = None,
) -> BoxHead:
    """Train a :class:`BoxHead` on ``n`` ShapeScenes classification scenes (seed ``seed``) on the
    frozen ``model``'s features (the model is not changed)."""
    from ..zoo import ShapeScenes

    n, epochs, seed = check_int(n, "n (training scenes)", 1), check_int(epochs, "epochs", 1), check_int(seed, "seed", 0)
    lr = check_number(lr, "lr", 0.0, low_open=True)
    data = ShapeScenes(n, seed=seed)
    b = data.batch()
    x = b["images"].float() / 255
    boxes = torch.stack([data[i]["boxes"][0] for i in range(n)]).float() / x.shape[-1]
    f = features(model, x.to(next(model.parameters()).device), layer)
    boxes = boxes.to(f.device)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = BoxHead(f.shape[1], (int(f.shape[2]), int(f.shape[3]))).to(f.device)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = max(1, n // 64)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    for e in range(epochs):
        order = torch.randperm(n, generator=g).to(f.device)
        for s in range(steps_per_epoch):
            idx = order[s * 64 : (s + 1) * 64]
            loss = F.smooth_l1_loss(head(f[idx]), boxes[idx], beta=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if progress is not None:
            progress((e + 1) / epochs)
    return head.eval()


def predict_boxes(model: nn.Module, head: BoxHead, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
    """Boxes (B, 4) int64 ``[x0, y0, x1, y1]`` (exclusive ends) in pixels.

    The head regresses the four numbers freely, so an untrained one can put x1 left of x0: such a
    box is returned empty (x1 = x0, IoU 0 with anything), since it covers no pixel."""
    x = check_input(model, x)
    with torch.no_grad():
        frac = head(features(model, x, layer).to(next(head.parameters()).device)).cpu()
    side = torch.tensor([x.shape[3], x.shape[2], x.shape[3], x.shape[2]], dtype=frac.dtype)
    box = (frac * side).round().long()
    box[:, 2:] = torch.maximum(box[:, 2:], box[:, :2])
    return box


def main(argv: list[str] | None = None) -> int:
    from .. import explain, zoo
    from .boxes import boxes_from_maps, corloc

    p = argparse.ArgumentParser(
        prog="python -m guidewidgets.localize", description="Box head vs CAM boxes on held-out ShapeScenes"
    )
    p.add_argument("--n", type=int, default=1024, help="training scenes (default 1024)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--test", type=int, default=256, help="held-out scenes, seed 2027 (default 256)")
    p.add_argument("--methods", default="cam,grad-cam,grad-cam++,occlusion,rise")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model = zoo.load("shapes-classifier")
    t0 = time.perf_counter()
    head = train_box_head(model, a.n, a.epochs)
    print(f"box head trained on {a.n} scenes (seed {TRAIN_SEED}), {a.epochs} epochs, {time.perf_counter() - t0:.0f} s")
    test = zoo.ShapeScenes(a.test, seed=2027)
    x = test.batch()["images"].float() / 255
    y = torch.tensor([test[i]["label"] for i in range(a.test)])
    truth = torch.stack([test[i]["boxes"][0] for i in range(a.test)])
    print(f"| boxes from | CorLoc (IoU >= 0.5) | mean IoU | ms / image |  ({a.test} held-out scenes, seed 2027)")
    print("|---|---:|---:|---:|")
    t0 = time.perf_counter()
    pred = predict_boxes(model, head, x)
    ms = 1000 * (time.perf_counter() - t0) / a.test
    c, iou = corloc(pred, truth)
    print(f"| box head (supervised) | {c:.3f} | {iou.mean():.3f} | {ms:.1f} |")
    for m in a.methods.split(","):
        t0 = time.perf_counter()
        maps = torch.cat([explain.explain(model, x[s : s + 16], m, y[s : s + 16]) for s in range(0, a.test, 16)])
        pred = boxes_from_maps(maps, 0.2, on_empty="zero")
        ms = 1000 * (time.perf_counter() - t0) / a.test
        c, iou = corloc(pred, truth)
        print(f"| {m}, 20 % + largest component | {c:.3f} | {iou.mean():.3f} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
