"""Guide Me (Rupprecht et al., CVPR 2018): steer a frozen segmenter with hints, no weight update.

``Guide(model, image)`` attaches a guiding block at a layer, takes hints ("this pixel is class c",
"class c is not here", clicks or brush strokes), optimises the block's few parameters at inference
time and asks the questions of the paper's 20-questions game. ``python -m
guidewidgets.guide.reproduce`` re-runs the paper's experiments on held-out ShapeScenes.
"""

from .block import GuidingBlock
from .hints import Hint, HintTargets, hint_loss, hints_satisfied, rasterize_stroke
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

__all__ = [
    "Guide",
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
    "DEFAULTS",
]
