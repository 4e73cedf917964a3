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

from ..metrics.boxes import box_iou
from .box_head import BoxHead, predict_boxes, train_box_head
from .boxes import (
    box_and_iou,
    box_mask,
    boxes_from_maps,
    corloc,
    largest_component,
    map_to_box,
    mask_iou,
)
from .grabcut import grabcut_from_map

__all__ = [
    "largest_component",
    "map_to_box",
    "boxes_from_maps",
    "box_and_iou",
    "box_iou",
    "box_mask",
    "corloc",
    "mask_iou",
    "grabcut_from_map",
    "BoxHead",
    "train_box_head",
    "predict_boxes",
]
