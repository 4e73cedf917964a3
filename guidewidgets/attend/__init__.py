"""Attention in networks on ShapeScenes: show-attend-tell captioning with soft and hard attention
(:mod:`.captions`, :mod:`.captioner`, recipe :mod:`.train_captioner`) and spatial transformer
networks (:mod:`.stn`, imported on first use; :class:`STNSession` is the widget-free session behind
``STNWidget``: a distorted scene, the sampling grid, the rectified view and both predictions).

>>> from guidewidgets.attend import CaptionSession
>>> s = CaptionSession()            # the shipped captioner on held-out scenes
>>> s.words                         # e.g. ['a', 'large', 'square', 'on', 'noise']
>>> s.word_map(2)                   # where it looked when it said 'square' (96, 96)
"""

from __future__ import annotations

import importlib
from typing import Any

from .captioner import HELD_OUT_SEED, Captioner, CaptionSession, check_images, load_captioner, save_captioner
from .captions import VOCAB, Vocabulary, caption_dataset, caption_scenes, describe

__all__ = [
    "Captioner",
    "CaptionSession",
    "HELD_OUT_SEED",
    "VOCAB",
    "Vocabulary",
    "caption_dataset",
    "caption_scenes",
    "check_images",
    "describe",
    "load_captioner",
    "save_captioner",
    "STNSession",
]


def __getattr__(name: str) -> Any:
    # Why: the STN module is built in parallel; importing it lazily keeps captioning importable
    # whatever state it is in, and `attend.stn` still works.
    if name == "stn":
        return importlib.import_module(f"{__name__}.stn")
    if name == "STNSession":
        return importlib.import_module(f"{__name__}.stn_session").STNSession
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
