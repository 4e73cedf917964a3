"""The Guide's state: :meth:`snapshot` / :meth:`restore` (a widget's exact undo) and the text
hints (Guide Me's "Learning to Guide with Text"), which set the block's parameters in one pass.
"""

from __future__ import annotations

import dataclasses

import torch

from ..hooks import model_lock
from .hints import Hint
from .optimise import _Optimising
from .queries import Query
from .text import TextGuide, load_text_guide

__all__ = ["GuideState"]


@dataclasses.dataclass(frozen=True)
class GuideState:
    """What :meth:`Guide.snapshot` saves and :meth:`Guide.restore` puts back."""

    params: dict[str, torch.Tensor]
    hints: tuple[Hint, ...]
    losses: tuple[float, ...]
    texts: tuple[str, ...] = ()
    text_params: dict[str, torch.Tensor] | None = None


_SHIPPED_TEXT_GUIDE: list[TextGuide] = []


def _shipped_text_guide() -> TextGuide:
    # Why cached per process: every new Guide (a re-run cell, a widget's next image) would
    # otherwise read the file again before its first sentence.
    if not _SHIPPED_TEXT_GUIDE:
        _SHIPPED_TEXT_GUIDE.append(load_text_guide("shapes-segmenter"))
    return _SHIPPED_TEXT_GUIDE[0]


class _Stateful(_Optimising):
    """The part of a Guide that saves and restores its state and takes hints in words."""

    classes: list[str]
    _texts: list[str]
    _text_mode: str
    _text_guide: TextGuide | None

    def snapshot(self) -> GuideState:
        """The session's state now (block parameters, hints, loss history), for :meth:`restore`.

        Why: undo in a widget must bring back exactly the previous prediction, not re-optimise.
        """
        with model_lock(self.model):  # a consistent copy, even while another thread steps
            return GuideState(
                params={k: v.clone() for k, v in self.block.as_dict().items()},
                hints=tuple(self._hints),
                losses=tuple(self.losses),
                texts=tuple(self._texts),
                text_params=None if self._text_params is None else {k: v.clone() for k, v in self._text_params.items()},
            )

    def _check_state(self, state: object) -> GuideState:
        if not isinstance(state, GuideState):
            raise TypeError(f"restore() takes what snapshot() returned, got {type(state).__name__}")
        names = ("alpha", "beta", "gamma_s", "gamma_b")
        for name, p in zip(names, self._block_tensors()):
            value = state.params.get(name) if isinstance(state.params, dict) else None
            if not isinstance(value, torch.Tensor) or value.shape != p.shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(
                    f"that snapshot is of another guide: {name} has shape {got}, this block's has {tuple(p.shape)}"
                )
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"that snapshot's {name} holds NaN or infinite values; take a new snapshot()")
        for hint in state.hints:
            px = getattr(hint, "pixels", None)
            inside = (
                isinstance(px, torch.Tensor)
                and px.dim() == 2
                and px.shape[1] == 2
                and bool(((px >= 0) & (px < torch.tensor([self.height, self.width], device=px.device))).all())
            )
            if not (isinstance(hint, Hint) and 0 <= hint.cls < self.num_classes and inside):
                raise ValueError(
                    "that snapshot is of another guide: its hints do not fit this image's "
                    f"{self.height}x{self.width} pixels and {self.num_classes} classes"
                )
        return state

    @torch.no_grad()
    def restore(self, state: GuideState) -> None:
        """Put back a :meth:`snapshot`: the same parameters, hints and losses, so the same prediction."""
        with self._session():
            state = self._check_state(state)  # all checked before anything changes
            for p, value in zip(
                self._block_tensors(), (state.params[k] for k in ("alpha", "beta", "gamma_s", "gamma_b"))
            ):
                p.copy_(value)
            self._hints = list(state.hints)
            self._hints_changed()
            self.losses[:] = list(state.losses)
            self._texts = list(state.texts)
            self._text_params = (
                None if state.text_params is None else {k: v.clone() for k, v in state.text_params.items()}
            )
            self._plain_logp = None
            self._block_changed()

    # --- text hints (Guide Me's "Learning to Guide with Text") ---------------------------------

    def _text_guide_for(self, text_guide: TextGuide | None) -> TextGuide:
        if text_guide is None:
            # Only the shipped default is remembered; a guide passed in is used for that call.
            if self._text_guide is None:
                from ..zoo.models import ShapeSegmenter

                if not isinstance(self.model, ShapeSegmenter):
                    raise ValueError(
                        f"no text guide ships for {type(self.model).__name__}; train one with "
                        "`python -m guidewidgets.guide.train_text` (or guidewidgets.guide.train_text.train) "
                        "and pass it: guide.add_text(sentence, text_guide=TextGuide.load(path))"
                    )
                self._text_guide = _shipped_text_guide()
            text_guide = self._text_guide
        if not isinstance(text_guide, TextGuide):
            raise TypeError(f"text_guide must be a TextGuide, got {type(text_guide).__name__}")
        if text_guide.layer != self.layer or tuple(text_guide.shape) != tuple(self.block.shape):
            raise ValueError(
                f"the text guide was trained for layer {text_guide.layer!r} (block {tuple(text_guide.shape)}) but "
                f"this Guide's block is at {self.layer!r} {tuple(self.block.shape)}; make the Guide with "
                f"layer={text_guide.layer!r} or train a text guide for {self.layer!r}"
            )
        if list(text_guide.tokenizer.classes) != list(self.classes):
            raise ValueError(
                f"the text guide knows the classes {text_guide.tokenizer.classes}, the model "
                f"{self.classes}: it was trained for another model"
            )
        if not self.block.spatial:
            raise ValueError("a text guide predicts alpha and beta too: make the Guide with spatial=True")
        return text_guide

    @torch.no_grad()
    def add_text(self, sentence: str, text_guide: TextGuide | None = None, mode: str = "sum") -> Query:
        """Give a hint in words, e.g. ``"there is no ellipse in this image"``; returns the parsed query.

        The text guide (a GRU over the words, trained with the query generator; the shipped one
        for the embedded segmenter by default) predicts the block's parameters, which are
        applied at once: no optimisation. Several sentences combine: ``mode="sum"`` adds each
        sentence's parameters, ``"sequence"`` lets the GRU read them joined by "and". Clicks
        added later start from the text's parameters (their penalty and keep term are measured
        from the text-guided state). Unknown words, a class the model lacks, a location outside
        the template and an empty sentence raise ValueError naming the fix.
        """
        with self._session():
            tg = self._text_guide_for(text_guide)
            query = tg.tokenizer.parse(sentence)
            texts = [*self._texts, query.text]
            new = {k: v.to(self.block.alpha) for k, v in tg.params(texts, mode).items()}
            old = self._text_params
            for name, p in zip(("alpha", "beta", "gamma_s", "gamma_b"), self._block_tensors()):
                p.add_(new[name] - (old[name] if old is not None else 0))
            self._texts, self._text_params, self._text_mode = texts, new, mode
            self._opt = None
            self._block_changed()
            # Later clicks keep close to the text-guided prediction (set lazily by the next objective).
            self._plain_logp = None
            return query

    @property
    def texts(self) -> list[str]:
        """The text hints given so far (as parsed: lower case, template words)."""
        return list(self._texts)
