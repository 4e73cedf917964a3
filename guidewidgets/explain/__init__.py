"""Explanation maps for CNNs and vision transformers: one call shape, batched, on the input's device.

>>> from guidewidgets import explain
>>> explain.methods()                      # registered names, for widgets and notebooks
>>> maps = explain.explain(model, x, "grad-cam", target=None, layer=None)   # (B, H, W)
>>> maps = explain.grad_cam(model, x)      # the same, as a plain function

``x`` is a float (B, C, H, W) batch in [0, 1] (C: the model's input channels); ``target`` is None
(predicted class), an int, one int per sample, or a callable(output) -> (B,) scores. Maps are
not normalised.
"""

from __future__ import annotations

# Importing the method modules registers them, in the order methods() lists them.
from .cam import cam, cam_all_classes, grad_cam, grad_cam_pp, smooth_grad_cam_pp
from .cam_augmented import augmented_grad_cam
from .cam_more import ablation_cam, eigen_cam, hires_cam, layer_cam, score_cam, sharpen_focus, xgrad_cam
from .gradients import deconvnet, guided_backprop, guided_grad_cam, saliency, smoothgrad
from .input_attribution import gradient_x_input, integrated_gradients
from .perturbation import occlusion, rise
from .registry import MethodInfo, explain, method_function, method_info, methods
from .session import Explainer as Explainer
from .targets_more import DetectorBoxScore, detections, multilabel_target, segmentation_target

__all__ = [
    "MethodInfo",
    "explain",
    "methods",
    "method_info",
    "method_function",
    "cam",
    "cam_all_classes",
    "grad_cam",
    "grad_cam_pp",
    "smooth_grad_cam_pp",
    "saliency",
    "guided_backprop",
    "deconvnet",
    "guided_grad_cam",
    "smoothgrad",
    "occlusion",
    "rise",
    "score_cam",
    "ablation_cam",
    "layer_cam",
    "xgrad_cam",
    "hires_cam",
    "eigen_cam",
    "sharpen_focus",
    "integrated_gradients",
    "gradient_x_input",
    "augmented_grad_cam",
    "segmentation_target",
    "multilabel_target",
    "DetectorBoxScore",
    "detections",
]

# Registered last, so that methods() lists it after the methods for any CNN.
from .attention import attention_rollout

__all__ += ["attention_rollout"]

# Whole datasets to a chunked on-disk store (zarr is imported only when a store is used).
from .dataset import DatasetMaps, StoreMismatchError, explain_dataset  # noqa: E402

__all__ += ["DatasetMaps", "StoreMismatchError", "explain_dataset"]
