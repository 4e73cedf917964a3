"""The 20-questions game of Guide Me: the network asks, a simulated user answers from ground truth."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..metrics.segmentation import accuracy_from_confusion, confusion, miou_from_confusion
from .session import Guide

__all__ = [
    "SimulatedUser",
    "GameResult",
    "play",
    "FlipResult",
    "single_hint_flip",
    "confusion",
    "miou",
    "pixel_accuracy",
    "void_band",
    "VOID",
]

#: Label of unlabelled ("void") pixels, as in PASCAL VOC; ignored by the metrics, never asked.
VOID = 255


def void_band(mask: torch.Tensor, width: int = 1, void: int = VOID) -> torch.Tensor:
    """``mask`` with every pixel within ``width`` pixels (Chebyshev distance) of a label change set
    to ``void``: PASCAL VOC's protocol, whose ground truth marks a band around every object
    outline as void, ignored by mIoU and by the simulated user of Guide Me's 20-questions game.

    A band of ``width`` pixels lies on each side of a boundary (``2 * width`` in all); ``width=0``
    returns the mask unchanged. ``mask`` must not hold ``void`` pixels yet.
    """
    if not isinstance(width, int) or width < 0:
        raise ValueError(f"width must be a non-negative int (pixels on each side of a boundary), got {width!r}")
    if mask.dim() != 2:
        raise ValueError(f"mask must be an (H, W) label map, got shape {tuple(mask.shape)}")
    if bool((mask == void).any()):
        raise ValueError(f"mask already holds void ({void}) pixels; apply void_band once, to the full ground truth")
    if width == 0:
        return mask.clone()
    k = 2 * width + 1
    m = mask.float()[None, None]
    hi = torch.nn.functional.max_pool2d(m, k, stride=1, padding=width)
    lo = -torch.nn.functional.max_pool2d(-m, k, stride=1, padding=width)
    # Why: max pooling pads with -inf, so the image border is no boundary (VOC has none there).
    edge = (hi != lo)[0, 0]
    return mask.masked_fill(edge, void)


class SimulatedUser:
    """Answers "which class is pixel (y, x)?" from a ground-truth (H, W) label map."""

    def __init__(self, truth: torch.Tensor, ignore_index: int | None = 255) -> None:
        self.truth = truth
        self.ignore_index = ignore_index

    def answer(self, y: int, x: int) -> int | None:
        """The true class at (y, x), or None where the truth is unlabelled."""
        c = int(self.truth[y, x])
        return None if c == self.ignore_index or c < 0 else c


@dataclass
class GameResult:
    """Predictions after each recorded number of questions, and the cost of every question."""

    predictions: dict[int, torch.Tensor] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)


def play(
    guide: Guide,
    truth: torch.Tensor,
    questions: int = 20,
    record: Sequence[int] = (0, 1, 5, 10, 15, 20),
    steps: int | None = None,
    answers: str = "find",
    generator: torch.Generator | None = None,
) -> GameResult:
    """Play ``questions`` rounds: ``guide.ask()``, the user answers, ``guide.run(steps)``.

    ``answers``: ``"find"`` (the paper's game: "this pixel is class c"), ``"remove"`` (the user
    only says what is *not* there: the predicted class where it is wrong, else the runner-up), or
    ``"mixed"`` (each answer find or remove with probability 1/2, drawn from ``generator``).

    The timed unit is one whole question as a user sees it: query, hint, optimisation to
    convergence and the new prediction.

    ``truth`` may hold :data:`VOID` pixels (e.g. from :func:`void_band`): they are never asked.
    """
    if answers not in ("find", "remove", "mixed"):
        raise ValueError(f"answers must be 'find', 'remove' or 'mixed', got {answers!r}")
    truth = truth.to(guide.image.device)
    user = SimulatedUser(truth, ignore_index=VOID)
    # Why: void pixels (VOC's boundary band) have no answer; the network asks among the others.
    unlabelled = truth == VOID
    exclude = unlabelled if bool(unlabelled.any()) else None
    result = GameResult()
    if 0 in record:
        result.predictions[0] = guide.prediction()
    for q in range(1, questions + 1):
        t0 = time.perf_counter()
        y, x = guide.ask(exclude)
        cls = user.answer(y, x)
        if cls is not None:
            remove = answers == "remove" or (answers == "mixed" and bool(torch.rand((), generator=generator) < 0.5))
            if remove:
                top2 = guide.logits()[0, :, y, x].topk(2).indices.tolist()
                guide.add_hint(y, x, top2[0] if top2[0] != cls else top2[1], negative=True)
            else:
                guide.add_hint(y, x, cls)
            result.steps.append(guide.run(steps))
        pred = guide.prediction()
        result.seconds.append(time.perf_counter() - t0)
        if q in record:
            result.predictions[q] = pred
    return result


def miou(conf: torch.Tensor) -> float:
    """Mean IoU over classes that occur in the truth or the prediction (as PASCAL VOC), in %.

    The paper's tables are in percent; the score itself is :func:`guidewidgets.metrics.miou_from_confusion`.

    Args:
        conf: (K, K) confusion matrix from :func:`confusion` (rows = truth), or a sum of several.

    Returns:
        mIoU in percent (NaN when no class is present).
    """
    return 100 * miou_from_confusion(conf)


def pixel_accuracy(conf: torch.Tensor) -> float:
    """Share of labelled pixels predicted right, in %.

    Args:
        conf: (K, K) confusion matrix from :func:`confusion`.

    Returns:
        Pixel accuracy in percent (:func:`guidewidgets.metrics.accuracy_from_confusion` x 100).
    """
    return 100 * accuracy_from_confusion(conf)


@dataclass
class FlipResult:
    """One hint on a wrongly predicted pixel: did it flip, and how much of the image moved."""

    flipped: bool
    changed: float  # share of the image whose prediction changed
    fixed: float  # share of the image that was wrong and is now right
    broken: float  # share of the image that was right and is now wrong
    steps: int
    seconds: float


def single_hint_flip(guide: Guide, truth: torch.Tensor, generator: torch.Generator | None = None) -> FlipResult | None:
    """Hint the true class at a random wrongly predicted pixel, run, and measure the change.

    Returns None when the plain prediction has no wrong pixel.
    """
    truth = truth.to(guide.image.device)
    before = guide.prediction()
    wrong = (before != truth).flatten().nonzero()[:, 0]
    if wrong.numel() == 0:
        return None
    pick = int(wrong[int(torch.randint(wrong.numel(), (1,), generator=generator))])
    y, x = divmod(pick, guide.width)
    t0 = time.perf_counter()
    guide.add_hint(y, x, int(truth[y, x]))
    steps = guide.run()
    after = guide.prediction()
    seconds = time.perf_counter() - t0
    n = float(truth.numel())
    return FlipResult(
        flipped=bool(after[y, x] == truth[y, x]),
        changed=float((after != before).sum()) / n,
        fixed=float(((before != truth) & (after == truth)).sum()) / n,
        broken=float(((before == truth) & (after != truth)).sum()) / n,
        steps=steps,
        seconds=seconds,
    )
