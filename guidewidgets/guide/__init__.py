"""Guide Me (Rupprecht et al., CVPR 2018): steer a frozen segmenter with hints, no weight update.

``Guide(model, image)`` attaches a guiding block at a layer, takes hints ("this pixel is class c",
"class c is not here", clicks or brush strokes), optimises the block's few parameters at inference
time and asks the questions of the paper's 20-questions game. ``Guide.add_text("there is no
ellipse in this image")`` is the paper's text mode: a GRU maps the sentence to the block's
parameters in one pass (``text.py``; trained by ``python -m guidewidgets.guide.train_text`` with
the query generator of ``queries.py``). ``python -m
guidewidgets.guide.reproduce`` re-runs the paper's experiments on held-out ShapeScenes.
``GuideSession`` (``interactive.py``) is the widget-free session behind ``GuideWidget``: a Guide
with undo/redo, the per-class IoU before and now, the network's question and the default scene.
"""

from .block import GuidingBlock
from .hints import Hint, HintTargets, hint_loss, hints_satisfied, rasterize_stroke
from .interactive import GuideSession, IoUReadout, Question
from .queries import Query, generate_queries
from .questions import (
    FlipResult,
    GameResult,
    SimulatedUser,
    confusion,
    miou,
    pixel_accuracy,
    play,
    single_hint_flip,
    void_band,
)
from .session import DEFAULTS, Guide, GuideState, active_guide, bottleneck_layer
from .text import TextGuide, Tokenizer, load_text_guide

__all__ = [
    "Guide",
    "GuideSession",
    "IoUReadout",
    "Question",
    "GuideState",
    "active_guide",
    "GuidingBlock",
    "Hint",
    "HintTargets",
    "hint_loss",
    "hints_satisfied",
    "rasterize_stroke",
    "SimulatedUser",
    "GameResult",
    "FlipResult",
    "single_hint_flip",
    "play",
    "confusion",
    "miou",
    "pixel_accuracy",
    "void_band",
    "bottleneck_layer",
    "Query",
    "generate_queries",
    "TextGuide",
    "Tokenizer",
    "load_text_guide",
    "DEFAULTS",
]
