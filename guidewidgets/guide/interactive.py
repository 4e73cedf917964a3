"""Guide Me as a person uses it: a :class:`Guide` with undo/redo, the IoU before and now, the
network's question and the default scene (what ``GuideWidget`` shows, without any widget).

>>> s = GuideSession()                       # embedded segmenter, a held-out scene with its mask
>>> s.add_stroke([(40, 50)], cls=1); s.run()
>>> s.readout.mean_before, s.readout.mean_now, s.readout.regression
>>> s.undo(); s.redo()                       # the exact earlier guide state (Guide.snapshot/restore)
>>> q = s.ask(); s.answer(q.first)           # the least certain pixel, answered: one undo step

Every action that fails (a hint outside the image, a closed guide) raises and changes nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..hooks import eval_mode, model_lock, model_output
from ..metrics.segmentation import iou_per_class as metrics_iou_per_class
from .clicker import Click, next_click
from .hints import Hint
from .queries import Query
from .session import Guide, GuideState

__all__ = [
    "GuideSession",
    "IoUReadout",
    "Question",
    "default_scene",
    "iou_per_class",
    "largest_error_region",
    "text_guide_for",
    "HELD_OUT_SEED",
    "DEFAULT_POOL",
    "IOU_EPS",
]

HELD_OUT_SEED = 777  # ShapeScenes seed of the default scenes: zoo.train.TEST_SEED, never trained on
DEFAULT_POOL = 8  # the default scene is the one of these with the largest wrong region
IOU_EPS = 0.005  # IoU changes smaller than this count as unchanged


def _labels(t: Any) -> np.ndarray:
    return (t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)).astype(np.int64)


def iou_per_class(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """IoU of each class (NaN where the class is in neither map), as the readout's numpy array.

    Args:
        pred: (H, W) predicted class indices.
        truth: (H, W) true class indices (255 = void, left out, as everywhere in the package).
        num_classes: K.

    Returns:
        (K,) float64 array of :func:`guidewidgets.metrics.iou_per_class`.
    """
    return metrics_iou_per_class(pred, truth, num_classes).numpy()


def largest_error_region(pred: np.ndarray, truth: np.ndarray) -> int:
    """Pixels in the largest 4-connected region where ``pred`` and ``truth`` disagree."""
    from scipy import ndimage

    regions, n = ndimage.label(pred != truth)
    return int(np.bincount(regions.ravel())[1:].max()) if n else 0


def default_scene(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A held-out ShapeScenes scene with room for guidance: of the first ``DEFAULT_POOL``, the one
    whose plain prediction has the largest connected wrong region (a region a click can fix, not
    scattered pixels; picked, not hard-coded, so it stays a good demo when the weights are
    retrained). Returns ``(image, mask)``."""
    from .. import zoo

    scenes = zoo.ShapeScenes(DEFAULT_POOL, seed=HELD_OUT_SEED, task="segmentation")
    items = [scenes[i] for i in range(len(scenes))]
    p = next(model.parameters(), None)
    x = torch.stack([it["image"] for it in items]).to(p.device if p is not None else "cpu")
    with model_lock(model), torch.no_grad(), eval_mode(model):
        pred = _labels(model_output(model(x)).argmax(1))
    scores = [largest_error_region(pred[i], _labels(it["mask"])) for i, it in enumerate(items)]
    best = int(np.argmax(scores))
    return items[best]["image"], items[best]["mask"]


def text_guide_for(model: nn.Module, text_guide: Any) -> tuple[Any, str]:
    """The text guide for hints in words, or None and a sentence saying how to get one."""
    from ..zoo.models import ShapeSegmenter
    from .text import TextGuide, load_text_guide

    if text_guide is not None:
        if not isinstance(text_guide, TextGuide):
            raise TypeError(f"text_guide must be a guidewidgets.guide.text.TextGuide, got {type(text_guide).__name__}")
        return text_guide, ""
    if not isinstance(model, ShapeSegmenter):
        return None, (
            f"no text guide ships for {type(model).__name__}: train one (python -m guidewidgets.guide.train_text) "
            "and pass text_guide=TextGuide.load(path)"
        )
    try:
        return load_text_guide(), ""
    except Exception as err:  # clicks still work without words
        return None, f"the shipped text guide did not load: {type(err).__name__}: {err}"


@dataclasses.dataclass(frozen=True)
class IoUReadout:
    """Per-class IoU against the mask: ``before`` (plain prediction) and ``now`` (guided), NaN where
    a class is in neither map; ``regression``: the mean fell (by more than ``IOU_EPS``) since the
    previous readout, ``last_mean`` being that readout's mean."""

    before: np.ndarray
    now: np.ndarray
    mean_before: float
    mean_now: float
    last_mean: float | None
    regression: bool

    def change(self, k: int | None = None) -> float:
        """Now minus before for class ``k`` (the mean when None); 0 where either is NaN."""
        now, before = (self.mean_now, self.mean_before) if k is None else (self.now[k], self.before[k])
        return 0.0 if np.isnan(now) or np.isnan(before) else float(now - before)


@dataclasses.dataclass(frozen=True)
class Question:
    """The network's question: pixel (y, x) and the two classes it hesitates between."""

    y: int
    x: int
    first: int
    second: int
    p_first: float
    p_second: float
    text: str


_UndoState = tuple[GuideState, np.ndarray, int, int]


class GuideSession:
    """A :class:`Guide` with what guiding it by hand needs.

    Args:
        model: a segmenter (default: the embedded ``zoo.load("shapes-segmenter")``).
        image: ``(C, H, W)`` in [0, 1] (what :class:`Guide` takes). Default: a held-out ShapeScenes
            scene with a large wrong region (:func:`default_scene`), with its mask.
        mask: optional ``(H, W)`` ground-truth labels; enables :attr:`readout`.
        layer, guide_options: where the guiding block goes and the :class:`Guide`'s options.
        text_guide: the text guide behind :meth:`apply_text` (default: the shipped one for the
            embedded segmenter; else :attr:`text_note` says how to get one).

    State: ``prediction`` and ``original`` (H, W) labels, ``probs`` (K, H, W) of the plain model,
    ``step_count``, ``changed`` (pixels the last action changed), ``question`` (pending or None),
    ``readout`` (with a mask), ``can_undo`` / ``can_redo``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        image: torch.Tensor | None = None,
        mask: Any = None,
        *,
        layer: str | None = None,
        guide_options: dict[str, Any] | None = None,
        text_guide: Any = None,
    ) -> None:
        if model is None:
            from .. import zoo

            model = zoo.load("shapes-segmenter")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if image is None:
            image, default_mask = default_scene(model)
            mask = default_mask if mask is None else mask
        self.model = model
        self.image = image
        self.mask = None if mask is None else self._check_mask(mask, image)
        self.guide = Guide(model, image, layer=layer, **(guide_options or {}))
        try:  # the model must not stay guided by a session nobody holds
            self.text_guide, self.text_note = text_guide_for(model, text_guide)
            self.classes: list[str] = list(self.guide.classes)
            self.num_classes = len(self.classes)
            self.height, self.width = int(self.guide.height), int(self.guide.width)
            plain = self.guide.plain_logits()
            self.original = _labels(plain.argmax(1)[0])
            self.probs = plain.softmax(1)[0].float().detach().cpu().numpy()
        except BaseException:
            self.guide.close()
            raise
        self.prediction = self.original.copy()
        self.step_count = 0
        self.changed = 0
        self.question: Question | None = None
        self.readout: IoUReadout | None = None
        self._undo: list[_UndoState] = []
        self._redo: list[_UndoState] = []
        self.score()

    @staticmethod
    def _check_mask(mask: Any, image: torch.Tensor) -> np.ndarray:
        m = _labels(mask)
        while m.ndim > 2 and m.shape[0] == 1:
            m = m[0]
        size = tuple(image.shape[-2:])
        if m.shape != size:
            raise ValueError(
                f"mask has shape {m.shape} but the image is {size}; pass the (H, W) label map of this image"
            )
        return m

    # ---- undo / redo ----------------------------------------------------------------------------
    def _state(self) -> _UndoState:
        """Everything Undo must bring back: the guide's state and what is shown of it."""
        return (self.guide.snapshot(), self.prediction.copy(), self.step_count, self.changed)

    def _push(self, state: _UndoState) -> None:
        self._undo.append(state)
        self._redo.clear()

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    @property
    def undo_depth(self) -> int:
        """How many actions :meth:`undo` can take back."""
        return len(self._undo)

    def _swap(self, src: list[_UndoState], dst: list[_UndoState]) -> bool:
        if not src:
            return False
        state = src[-1]
        now = self._state()
        self.guide.restore(state[0])  # raises (and nothing moves) on a closed guide
        src.pop()
        dst.append(now)
        self.prediction, self.step_count, self.changed = state[1].copy(), state[2], state[3]
        self.question = None
        self.score()
        return True

    def undo(self) -> bool:
        """Restore the exact state before the last action (hint, step, run, answer, words or reset);
        False when there is nothing to undo."""
        return self._swap(self._undo, self._redo)

    def redo(self) -> bool:
        """Do again what :meth:`undo` took back; False when there is nothing to redo."""
        return self._swap(self._redo, self._undo)

    # ---- actions --------------------------------------------------------------------------------
    def _after(self, steps: int, before: np.ndarray | None = None) -> None:
        before = self.prediction if before is None else before
        self.prediction = _labels(self.guide.prediction())
        self.changed = int((self.prediction != before).sum())
        self.step_count += steps
        self.score()

    def add_stroke(self, points: Sequence[tuple[int, int]], cls: int, radius: int = 2, negative: bool = False) -> Hint:
        """A hint stroke: the pixels within ``radius`` of ``points`` are (or, ``negative``, are not)
        class ``cls``. The prediction moves only at the next step or run."""
        state = self._state()
        hint = self.guide.add_stroke(list(points), cls, radius=radius, negative=negative)
        self._push(state)
        self.score()
        return hint

    def step(self) -> float | None:
        """One optimiser step on the hints; returns the loss (None, and nothing done, without hints)."""
        if not self.guide.hints:
            return None
        state = self._state()
        loss = self.guide.step()
        self._push(state)
        self._after(1)
        return loss

    def run(self, steps: int | None = None, callback: Callable[[int, float], None] | None = None) -> int:
        """Optimise until every hint holds (or ``steps`` are spent); returns the steps taken.
        ``callback(step, loss)`` after each step; :meth:`refresh_prediction` there shows progress."""
        if not self.guide.hints:
            return 0
        state = self._state()
        before = self.prediction.copy()  # live refreshes move prediction; "changed" counts from here
        try:
            n = self.guide.run(steps=steps, callback=callback)
        except BaseException:
            self.prediction = before
            raise
        self._push(state)
        self._after(n, before)
        return n

    def refresh_prediction(self) -> np.ndarray:
        """The guided prediction now (during :meth:`run`, for a live view); ``changed`` still counts
        from the start of the run."""
        self.prediction = _labels(self.guide.prediction())
        return self.prediction

    def reset(self) -> None:
        """Back to the plain prediction: block at zero, hints and history cleared (Undo brings it back)."""
        state = self._state()
        self.guide.reset(clear_hints=True)
        self._push(state)
        self.question = None
        self.step_count = 0
        self._after(0)
        self.changed = 0

    def satisfied(self) -> bool:
        """True when every hint holds (also when there are none)."""
        return self.guide.satisfied() if self.guide.hints else True

    def ask(self) -> Question:
        """The network's question: its least certain pixel and the two classes it hesitates between."""
        y, x = self.guide.ask()
        probs = self.guide.logits().softmax(1)[0, :, y, x].float().detach().cpu().numpy()
        a, b = (int(c) for c in np.argsort(-probs)[:2])
        text = (
            f"Which class is the marked pixel (y={y}, x={x})? The network hesitates between "
            f"{self.classes[a]} ({probs[a]:.0%}) and {self.classes[b]} ({probs[b]:.0%})."
        )
        self.question = Question(int(y), int(x), a, b, float(probs[a]), float(probs[b]), text)
        return self.question

    def answer(self, cls: int, steps: int | None = None, callback: Callable[[int, float], None] | None = None) -> int:
        """Answer the pending question (the asked pixel is class ``cls``), then run; the answer and
        its run are one action for :meth:`undo`. Returns the steps the run took."""
        q = self.question
        if q is None:
            raise ValueError("nothing was asked; call ask() first")
        return self._hint_then_run(q.y, q.x, cls, False, steps, callback)

    def _hint_then_run(
        self, y: int, x: int, cls: int, negative: bool, steps: int | None, callback: Callable[[int, float], None] | None
    ) -> int:
        """A hint and the run after it, as one action for :meth:`undo`; the steps the run took."""
        state = self._state()
        self.guide.add_hint(y, x, cls, negative=negative)
        self.question = None
        depth = len(self._undo)
        try:
            return self.run(steps, callback)
        finally:
            del self._undo[depth:]
            self._push(state)

    def next_click(
        self, steps: int | None = None, callback: Callable[[int, float], None] | None = None
    ) -> tuple[Click | None, int]:
        """The interactive-segmentation protocol's simulated user (:func:`guide.clicker.next_click`):
        a hint at the deepest point of the largest error region against the mask (positive for a
        missed region, negative for a false one), then a run; one action for :meth:`undo`.
        Returns ``(click, steps)``; ``(None, 0)`` when nothing is left to fix. Pixels that already
        carry a hint are never clicked again, so undo and redo need no memory of their own."""
        if self.mask is None:
            raise ValueError("the simulated user clicks where the prediction differs from the truth: give a mask")
        clicked = np.zeros(self.mask.shape, dtype=bool)
        for h in self.guide.hints:
            for y, x in h.points:
                clicked[y, x] = True
        click = next_click(self.prediction, self.mask, clicked=clicked)
        if click is None:
            return None, 0
        return click, self._hint_then_run(click.y, click.x, click.cls, not click.positive, steps, callback)

    def apply_text(self, sentence: str) -> Query:
        """A hint in words: the text guide predicts the block's parameters (one forward pass)."""
        if self.text_guide is None:
            raise ValueError(f"hints in words are off: {self.text_note}")
        state = self._state()
        query = self.guide.add_text(sentence, text_guide=self.text_guide)
        self._push(state)
        self._after(0)
        return query

    def text_suggestions(self) -> list[str]:
        """What a text box offers: the queries generated for the prediction against the mask (the
        largest mistake first), then the templates' examples; [] without a text guide."""
        if self.text_guide is None:
            return []
        tok = self.text_guide.tokenizer
        out: list[str] = []
        if self.mask is not None:
            from .queries import generate_queries

            try:
                pred, truth = torch.from_numpy(self.prediction), torch.from_numpy(self.mask)
                out = [q.text for q in generate_queries(pred, truth, self.classes, n=tok.grid, ignore=tok.ignore)]
            except Exception:  # suggestions are a convenience; typed sentences still work
                out = []
        return list(dict.fromkeys([*out[:12], *tok.examples()]))

    # ---- readouts -------------------------------------------------------------------------------
    def score(self) -> IoUReadout | None:
        """Score the current prediction against the mask (None without one) as a new readout; its
        ``regression`` compares with the previous readout (the actions call this themselves)."""
        if self.mask is None:
            return None
        now = iou_per_class(self.prediction, self.mask, self.num_classes)
        before = iou_per_class(self.original, self.mask, self.num_classes)
        mean_now, mean_before = float(np.nanmean(now)), float(np.nanmean(before))
        last = None if self.readout is None else self.readout.mean_now
        regression = last is not None and mean_now < last - IOU_EPS
        self.readout = IoUReadout(before, now, mean_before, mean_now, last, regression)
        return self.readout

    @property
    def iou(self) -> np.ndarray | None:
        """Per-class IoU of the guided prediction (None without a mask)."""
        return None if self.readout is None else self.readout.now

    @property
    def regression(self) -> bool:
        """True when the last action lowered the mean IoU."""
        return self.readout is not None and self.readout.regression

    def value_text(self, y: int, x: int) -> str:
        """A hover readout: the guided and the plain class of pixel (y, x), and the truth."""
        k, k0 = int(self.prediction[y, x]), int(self.original[y, x])
        text = f"guided: {self.classes[k]} | original: {self.classes[k0]} ({self.probs[k0, y, x]:.0%})"
        if self.mask is not None:
            text += f" | truth: {self.classes[int(self.mask[y, x])]}"
        return text

    def close(self) -> None:
        """Remove the guiding block from the model (safe to call twice)."""
        self.guide.close()
