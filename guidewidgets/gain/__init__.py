"""GAIN (Guided Attention Inference Network, Li et al., CVPR 2018) in pure torch.

Train a classifier to look at the right place: the Grad-CAM attention of the true class is
computed inside the training graph, the attended region is erased with a soft mask, and the
network is penalised when it still recognises the class in what is left (attention mining,
``L_am``); GAIN_ext adds a loss pulling the attention towards a few pixel-level labels (``L_e``).

- :func:`attention`, :func:`soft_mask`, :func:`masked_image`: the pieces.
- :func:`gain_losses`, :class:`GainConfig`: L_cl, L_am, L_e and their sum.
- :class:`GainTrainer`: fit/step, callbacks, pause/resume/stop, DDP under torchrun.
- :class:`GainRun`: the widget-free session behind ``GainWidget``: data and probes, warm-up then
  GAIN in a background job, pause/resume/stop, events, history and the final table.
- ``python -m guidewidgets.gain.reproduce``: the biased-boat experiment on ShapeScenes.
"""

from .attention import Attention, attention, masked_image, normalize_maps, soft_mask, target_pairs
from .losses import GainConfig, GainLosses, check_masks, gain_losses, mining_loss
from .run import GainRun
from .trainer import Callback, GainTrainer, accuracy

__all__ = [
    "Attention",
    "attention",
    "masked_image",
    "normalize_maps",
    "soft_mask",
    "target_pairs",
    "GainConfig",
    "GainLosses",
    "check_masks",
    "gain_losses",
    "mining_loss",
    "Callback",
    "GainTrainer",
    "GainRun",
    "accuracy",
]
