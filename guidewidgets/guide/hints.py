"""Hints as the paper stores them (sparse target y-hat and mask m-hat) and the loss they define."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = ["Hint", "HintTargets", "rasterize_stroke", "hint_loss", "hints_satisfied"]


@dataclass(frozen=True, eq=False)
class Hint:
    """One user statement: pixels ``pixels`` are class ``cls`` (or, if ``negative``, are not).

    ``points`` are the (y, x) points as given (one for a click, several for a stroke) and
    ``radius`` the brush radius; ``pixels`` is the (N, 2) long tensor of covered (y, x) pixels.
    """

    points: tuple[tuple[int, int], ...]
    cls: int
    negative: bool = False
    radius: int = 0
    pixels: torch.Tensor = field(repr=False, default=None)  # type: ignore[assignment]

    @property
    def kind(self) -> str:
        return "negative" if self.negative else "positive"


def rasterize_stroke(
    points: Sequence[tuple[int, int]], radius: int, height: int, width: int, device=None
) -> torch.Tensor:
    """(H, W) bool mask of a brush stroke: discs of ``radius`` along the segments between points."""
    ys = torch.arange(height, device=device).view(-1, 1).float()
    xs = torch.arange(width, device=device).view(1, -1).float()
    mask = torch.zeros(height, width, dtype=torch.bool, device=device)
    pts = [(float(y), float(x)) for y, x in points]
    segments = list(itertools.pairwise(pts)) or [(pts[0], pts[0])]
    r2 = (radius + 0.5) ** 2 if radius > 0 else 0.25
    for (y0, x0), (y1, x1) in segments:
        dy, dx = y1 - y0, x1 - x0
        length2 = dy * dy + dx * dx
        if length2 == 0:
            t = torch.zeros(1, device=device)
        else:  # projection of each pixel on the segment, clamped to its ends
            t = (((ys - y0) * dy + (xs - x0) * dx) / length2).clamp(0, 1)
        d2 = (ys - (y0 + t * dy)) ** 2 + (xs - (x0 + t * dx)) ** 2
        mask |= d2 <= r2
    return mask


def _sparse(i: int, doc: str) -> property:
    # Why a factory: six read-only views of the one cached tuple of index lists.
    return property(lambda self: self._lists()[i], doc=doc)


class HintTargets:
    """The paper's sparse target ``y_hat`` and mask ``m_hat`` plus the negative mask ``n_hat``.

    ``y_hat`` (H, W) int64 holds the hinted class where ``m_hat`` (H, W) bool is set (-1
    elsewhere); ``n_hat`` (K, H, W) bool marks "class k is not at this pixel". A later hint wins
    over an earlier one at the same pixel when they contradict each other.

    :meth:`add` updates the maps in place (cost: the hint's pixels) and the sparse index lists
    the loss reads (``pos_y`` ...) are rebuilt lazily, once, on the next read; so adding n hints
    costs O(n), not O(n^2). The result equals a from-scratch build over the same hints.
    """

    def __init__(self, hints: Sequence[Hint], num_classes: int, height: int, width: int, device=None):
        self.y_hat = torch.full((height, width), -1, dtype=torch.long, device=device)
        self.m_hat = torch.zeros(height, width, dtype=torch.bool, device=device)
        self.n_hat = torch.zeros(num_classes, height, width, dtype=torch.bool, device=device)
        self._sparse: tuple[torch.Tensor, ...] | None = None
        for hint in hints:
            self.add(hint)

    def add(self, hint: Hint) -> None:
        """Apply one more hint on top of the earlier ones (it wins where they contradict)."""
        ys, xs = hint.pixels[:, 0], hint.pixels[:, 1]
        if hint.negative:
            self.n_hat[hint.cls, ys, xs] = True
            clash = self.y_hat[ys, xs] == hint.cls
            self.m_hat[ys[clash], xs[clash]] = False
            self.y_hat[ys[clash], xs[clash]] = -1
        else:
            self.y_hat[ys, xs] = hint.cls
            self.m_hat[ys, xs] = True
            self.n_hat[hint.cls, ys, xs] = False
        self._sparse = None

    def _lists(self) -> tuple[torch.Tensor, ...]:
        # Sparse index lists for the loss: the hot path gathers a few logits, never the whole map.
        if self._sparse is None:
            pos = self.m_hat.nonzero()
            pos_y, pos_x = pos[:, 0], pos[:, 1]
            neg = self.n_hat.nonzero()
            self._sparse = (pos_y, pos_x, self.y_hat[pos_y, pos_x], neg[:, 0], neg[:, 1], neg[:, 2])
        return self._sparse

    # The sparse lists, read by the loss (see _lists): positive pixels and their class, then the
    # (class, y, x) of each negative statement.
    pos_y = _sparse(0, "(P,) rows of the pixels with a positive hint")
    pos_x = _sparse(1, "(P,) columns of the pixels with a positive hint")
    pos_cls = _sparse(2, "(P,) the class each positive hint names")
    neg_cls = _sparse(3, "(N,) the class each negative hint rules out")
    neg_y = _sparse(4, "(N,) rows of the negative hints")
    neg_x = _sparse(5, "(N,) columns of the negative hints")

    @property
    def count(self) -> int:
        """Number of hinted (pixel, statement) pairs."""
        return int(self.pos_y.numel() + self.neg_y.numel())

    @property
    def hinted(self) -> torch.Tensor:
        """(H, W) bool: pixels that carry any hint."""
        return self.m_hat | self.n_hat.any(0)

    def equals(self, other: HintTargets) -> bool:
        """Same maps (and hence the same loss) as ``other``."""
        return (
            torch.equal(self.y_hat, other.y_hat)
            and torch.equal(self.m_hat, other.m_hat)
            and torch.equal(self.n_hat, other.n_hat)
        )


def hint_loss(logits: torch.Tensor, t: HintTargets) -> torch.Tensor:
    """Masked per-pixel loss, averaged over hinted pixels.

    Positive hints: cross-entropy with the hinted class (the segmenter's own training loss,
    masked by ``m_hat``). Negative hints: ``-log(1 - p_c)``, the cross-entropy of the statement
    "not class c", which pushes class c's probability down without choosing another class.
    """
    z = logits[0]
    total = z.new_zeros(())
    if t.pos_y.numel():
        total = total + F.cross_entropy(z[:, t.pos_y, t.pos_x].T, t.pos_cls, reduction="sum")
    if t.neg_y.numel():
        zn = z[:, t.neg_y, t.neg_x].T  # (M, K)
        others = zn.masked_fill(F.one_hot(t.neg_cls, zn.shape[1]).bool(), float("-inf"))
        total = total + (zn.logsumexp(1) - others.logsumexp(1)).sum()
    return total / max(t.count, 1)


@torch.no_grad()
def hints_satisfied(logits: torch.Tensor, t: HintTargets, margin: float = 0.0) -> bool:
    """True when every positive hint pixel predicts its class and no negative one predicts its.

    ``margin`` > 0 asks for that much logit lead (hinted class over the best other one, or the
    best other one over the excluded class), so a hint is not left balanced on a knife's edge.
    """
    z = logits[0]
    if t.pos_y.numel():
        zp = z[:, t.pos_y, t.pos_x]  # (K, N)
        own = zp.gather(0, t.pos_cls[None])[0]
        other = zp.scatter(0, t.pos_cls[None], float("-inf")).amax(0)
        if not bool((own - other > margin).all()) and not (margin == 0 and bool((zp.argmax(0) == t.pos_cls).all())):
            return False
    if t.neg_y.numel():
        zn = z[:, t.neg_y, t.neg_x]
        own = zn.gather(0, t.neg_cls[None])[0]
        other = zn.scatter(0, t.neg_cls[None], float("-inf")).amax(0)
        if not bool((other - own > margin).all()) and not (margin == 0 and bool((zn.argmax(0) != t.neg_cls).all())):
            return False
    return True
