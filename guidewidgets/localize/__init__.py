"""Where is the object: boxes and masks from explanation maps, without box or pixel supervision.

>>> from guidewidgets import localize
>>> box, component = localize.map_to_box(cam_map, threshold=0.2)   # [x0, y0, x1, y1], exclusive ends
>>> localize.box_iou(box, true_box)                                  # (1, 1): metrics.box_iou, pairwise
>>> localize.corloc(pred_boxes, true_boxes)                          # fraction with IoU >= 0.5
>>> mask = localize.grabcut_from_map(image, cam_map)                 # GrabCut on saliency
>>> head = localize.train_box_head(model)                            # supervised baseline (seconds)
>>> boxes = localize.predict_boxes(model, head, x)

Boxes follow ShapeScenes: ``[x0, y0, x1, y1]`` with exclusive ends (``mask[y0:y1, x0:x1]``).
"""

from __future__ import annotations

# Why metrics first: metrics.evaluate imports localize.boxes, which imports metrics.boxes; entering
# the cycle from metrics is the order that works (as the explicit box_iou import did before).
from .. import metrics  # noqa: F401
from . import boxes
from .box_head import BoxHead, predict_boxes, train_box_head

# Why a star import: the map-to-box functions are named once, in boxes.__all__ (box_iou among them,
# re-exported there from metrics.boxes); its checks (check_threshold, as_map, as_mask) and
# EmptyMapError are public here too, so callers can catch the one error every function raises.
from .boxes import *  # noqa: F403
from .grabcut import grabcut_from_map

__all__ = [*boxes.__all__, "grabcut_from_map", "BoxHead", "train_box_head", "predict_boxes"]
