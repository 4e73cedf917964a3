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

# Importing the method modules registers them; methods() lists them by MethodInfo.order.
from .attention import attention_rollout
from .cam import (
    cam,
    cam_all_classes,
    grad_cam,
    grad_cam_elementwise,
    grad_cam_pp,
    hires_cam,
    layer_cam,
    sharpen_focus,
    smooth_grad_cam_pp,
    xgrad_cam,
)
from .cam_augmented import augmented_grad_cam
from .cam_gradient_free import ablation_cam, eigen_cam, score_cam
from .cam_projections import eigengrad_cam, kpca_cam
from .cam_score_variants import is_cam, ss_cam
from .deeplift import deeplift, deeplift_shap
from .feature_factorization import dff, dff_concepts
from .fullgrad import fullgrad
from .gradient_shap import gradient_shap
from .gradients import deconvnet, guided_backprop, guided_grad_cam, saliency, smoothgrad
from .input_attribution import gradient_x_input, integrated_gradients
from .layer_attribution import layer_attribution, layer_conductance, layer_integrated_gradients
from .lrp import LRPRule, lrp
from .neuron_attribution import Neuron, neuron_gradient, neuron_guided_backprop, neuron_integrated_gradients
from .noise_moments import smoothgrad_sq, vargrad
from .perturbation import occlusion, rise
from .registry import Call, MethodInfo, explain, method, method_function, method_info, methods
from .session import Explainer as Explainer
from .superpixel_methods import feature_ablation, kernel_shap, lime, shapley_sampling
from .task_targets import DetectorBoxScore, detections, multilabel_target, segmentation_target

__all__ = [
    "MethodInfo",
    "method",
    "Call",
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
    "eigengrad_cam",
    "kpca_cam",
    "grad_cam_elementwise",
    "ss_cam",
    "is_cam",
    "sharpen_focus",
    "integrated_gradients",
    "gradient_x_input",
    "augmented_grad_cam",
    "segmentation_target",
    "multilabel_target",
    "DetectorBoxScore",
    "detections",
    "attention_rollout",
    "smoothgrad_sq",
    "vargrad",
    "gradient_shap",
    "deeplift",
    "deeplift_shap",
    "lrp",
    "LRPRule",
    "feature_ablation",
    "shapley_sampling",
    "kernel_shap",
    "lime",
    "layer_conductance",
    "layer_integrated_gradients",
    "layer_attribution",
    "Neuron",
    "neuron_gradient",
    "neuron_guided_backprop",
    "neuron_integrated_gradients",
    "fullgrad",
    "dff",
    "dff_concepts",
]

# Whole datasets to a chunked on-disk store (zarr is imported only when a store is used).
from .dataset import DatasetMaps, StoreMismatchError, explain_dataset

__all__ += ["DatasetMaps", "StoreMismatchError", "explain_dataset"]
