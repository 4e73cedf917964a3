"""Attention in networks: show-attend-tell captioning with soft and hard attention on ShapeScenes.

>>> from guidewidgets.attend import CaptionSession
>>> s = CaptionSession()            # the shipped captioner on held-out scenes
>>> s.words                         # e.g. ['a', 'large', 'star', 'on', 'grass']
>>> s.word_map(2)                   # where it looked when it said 'star' (96, 96)
"""

from __future__ import annotations

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
]
