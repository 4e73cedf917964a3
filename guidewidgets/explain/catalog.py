"""The catalog of explanation methods: every registered method's order, name, title, family, paper
and summary, in one table.

Why one table: the whole list of methods, with their papers and the widget's order (its number keys
follow ``order``), reads in one place, and a method module holds only code. A method's decorator
names its row (``@gradient_cam("grad-cam")``) and states only what its code decides (``uses_layer``,
``signed``, ``slow``, ``quick`` ...); :func:`~guidewidgets.explain.registry.method_info` joins the two.

Adding a method is a row here plus one decorated function (``CONTRIBUTING.md``, "Add an explanation
method"); ``tests/explain/test_catalog.py`` fails, naming it, on a row without a method or a method
without a row. The rows stand in :func:`~guidewidgets.explain.registry.methods` order (ascending
``order``; the shipped methods use multiples of 10, later ones fill the gaps). A method outside the
package (a user's own, a test's) gives its texts to the decorator instead, as
:func:`~guidewidgets.explain.registry.method` says.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Sequence
from typing import Literal, cast

__all__ = ["Family", "FAMILIES", "Entry", "CATALOG", "describe", "entry"]

Family = Literal["cam", "gradient", "perturbation", "attention"]
FAMILIES: tuple[Family, ...] = ("cam", "gradient", "perturbation", "attention")


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row: what a menu, a notebook's table and the docs say about a method.

    Args:
        order: place in :func:`~guidewidgets.explain.registry.methods` (ascending).
        name: the registry key (lower case, dashes), e.g. ``"grad-cam"``.
        title: what a menu shows.
        family: ``"cam"``, ``"gradient"``, ``"perturbation"`` or ``"attention"``.
        reference: the paper (and the peer library's class, where one has it).
        summary: one sentence on what the map shows.
    """

    order: float
    name: str
    title: str
    family: Family
    reference: str
    summary: str


# One row a method: (order, name, title, family, reference, summary), in methods() order.
# fmt: off
_ROWS: tuple[tuple[float, str, str, Family, str, str], ...] = (
    (10, "cam", "CAM", "cam", "Zhou et al., Learning Deep Features for Discriminative Localization, CVPR 2016", "Feature maps weighted by the classifier weights of the class (needs a global-average-pool + linear head)."),
    (20, "grad-cam", "Grad-CAM", "cam", "Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization, ICCV 2017", "Feature maps weighted by the spatial mean of the class score's gradient, then ReLU."),
    (30, "grad-cam++", "Grad-CAM++", "cam", "Chattopadhyay et al., Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep Convolutional Networks, WACV 2018", "Grad-CAM with per-pixel weights from higher-order derivatives; better for several instances of a class."),
    (40, "smooth-grad-cam++", "Smooth Grad-CAM++", "cam", "Omeiza et al., Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for Deep Convolutional Neural Network Models, 2019", "Grad-CAM++ with its gradients averaged over noisy copies of the image."),
    (50, "augmented-grad-cam", "Augmented Grad-CAM", "cam", "Morbidelli et al., Augmented Grad-CAM: Heat-Maps Super Resolution Through Augmentation, ICASSP 2020", "A sharper Grad-CAM: one map at the image's resolution that explains the Grad-CAMs of shifted and rotated copies."),
    (60, "layer-cam", "LayerCAM", "cam", "Jiang et al., LayerCAM: Exploring Hierarchical Class Activation Maps for Localization, IEEE TIP 2021", "Each activation weighted by its own positive gradient (no spatial averaging): usable at shallow layers."),
    (70, "xgrad-cam", "XGrad-CAM", "cam", "Fu et al., Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs, BMVC 2020", "Grad-CAM with the gradient averaged under the activation's own weights (sensitivity and conservation axioms)."),
    (80, "hires-cam", "HiResCAM", "cam", "Draelos & Carin, Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional neural networks, arXiv:2011.08891, 2020", "Element-wise gradient x activation summed over channels: faithful to the score for GAP-linear heads."),
    (85, "grad-cam-elementwise", "Grad-CAM element-wise", "cam", "pytorch-grad-cam's GradCAMElementWise (Gildenblat et al., github.com/jacobgil/pytorch-grad-cam, 2021): HiResCAM (Draelos & Carin, arXiv:2011.08891) with each product rectified", "Gradient x activation rectified element-wise before the channel sum: only the positive evidence."),
    (90, "sharpen-focus", "Sharpen Focus", "cam", "Wang et al., Sharpen Focus: Learning with Attention Separability and Consistency, ICCV 2019 (as taught in the localization lecture: w_k = 1/(nm) sum_ij ReLU(dy/dA_k(i,j)))", "Grad-CAM whose channel weights average only the positive gradients."),
    (100, "eigen-cam", "Eigen-CAM", "cam", "Muhammad & Yeasin, Eigen-CAM: Class Activation Map using Principal Components, IJCNN 2020", "First principal component of the layer's activations: class-agnostic (the target is ignored), no gradients."),
    (103, "eigengrad-cam", "EigenGrad-CAM", "cam", "pytorch-grad-cam's EigenGradCAM (Gildenblat et al., github.com/jacobgil/pytorch-grad-cam, 2021): Eigen-CAM (Muhammad & Yeasin, IJCNN 2020) of the gradient-weighted activations", "First principal component of activation x gradient: Eigen-CAM made class-specific."),
    (105, "dff", "Deep Feature Factorization", "cam", "Collins, Achanta & Süsstrunk, Deep Feature Factorization for Concept Discovery, ECCV 2018", "The layer's activations factored by NMF into K concepts; the map of the concept the classifier scores highest for the class."),
    (106, "kpca-cam", "KPCA-CAM", "cam", "Karmani et al., KPCA-CAM: Visual Explainability of Deep Computer Vision Models using Kernel PCA, arXiv:2410.00267, 2024", "First kernel principal component of the layer's activations: Eigen-CAM with a nonlinear kernel, class-agnostic."),
    (110, "ablation-cam", "Ablation-CAM", "cam", "Desai & Ramaswamy, Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free Localization, WACV 2020", "Feature maps weighted by the relative drop of the class score when each channel is set to zero."),
    (120, "score-cam", "Score-CAM", "cam", "Wang et al., Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks, CVPR 2020 workshops", "Feature maps weighted by the softmax over channels of the class score of the image masked by each map."),
    (123, "ss-cam", "SS-CAM", "cam", "Wang, Naidu, Michael & Kundu, SS-CAM: Smoothed Score-CAM for Sharper Visual Feature Localization, arXiv:2006.14255, 2020", "Score-CAM with each channel's score averaged over masks with Gaussian noise added."),
    (126, "is-cam", "IS-CAM", "cam", "Naidu, Ghosh, Maurya, Nayak K & Kundu, IS-CAM: Integrated Score-CAM for axiomatic-based explanations, arXiv:2010.03023, 2020", "Score-CAM with each channel's score averaged over the masked image scaled along a path."),
    (130, "saliency", "Saliency (gradient)", "gradient", "Simonyan et al., Deep Inside Convolutional Networks: Visualising Image Classification Models and Saliency Maps, ICLR 2014 workshop", "Absolute gradient of the class score with respect to the pixels, largest over colour channels."),
    (140, "guided-backprop", "Guided backprop", "gradient", "Springenberg et al., Striving for Simplicity: The All Convolutional Net, ICLR 2015 workshop", "Gradient where every ReLU passes back only positive gradients through positive inputs; ReLU6, LeakyReLU, ELU and the smooth ReLUs (SiLU, GELU, Hardswish, Mish) are gated the same way (f'(x) * max(grad, 0) * [x > 0]); a net without any of them gets the plain gradient and a warning."),
    (150, "deconvnet", "Deconvnet", "gradient", "Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014", "Gradient where every ReLU-family activation (ReLU, ReLU6, LeakyReLU, ELU, SiLU, GELU, Hardswish, Mish) passes back the rectified gradient itself, whatever its forward input was; without any, the plain gradient and a warning."),
    (160, "guided-grad-cam", "Guided Grad-CAM", "gradient", "Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization, ICCV 2017", "Guided backprop multiplied by the upsampled Grad-CAM map: fine detail, class-discriminative."),
    (170, "smoothgrad", "SmoothGrad", "gradient", "Smilkov et al., SmoothGrad: removing noise by adding noise, ICML 2017 workshop", "Gradient averaged over noisy copies of the image: a less noisy saliency map."),
    (180, "gradient-x-input", "Gradient x input", "gradient", "Shrikumar et al., Not Just a Black Box: Learning Important Features Through Propagating Activation Differences, arXiv:1605.01713, 2016", "Input gradient times the input, summed over colour channels: signed, one backward."),
    (185, "fullgrad", "FullGrad", "gradient", "Srinivas & Fleuret, Full-Gradient Representation for Neural Network Visualization, NeurIPS 2019", "|input-gradient x input| plus |bias x bias-gradient| of every conv and BatchNorm layer, each rescaled to [0, 1] per channel, upsampled and summed."),
    (190, "integrated-gradients", "Integrated Gradients", "gradient", "Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017", "Gradients averaged along the straight path from a baseline image, times (x - baseline); sums to the score difference."),
    (200, "occlusion", "Occlusion", "perturbation", "Zeiler & Fergus, Visualizing and Understanding Convolutional Networks, ECCV 2014", "Drop of the class score when a grey patch hides each region, averaged over the patches covering a pixel."),
    (210, "rise", "RISE", "perturbation", "Petsiuk et al., RISE: Randomized Input Sampling for Explanation of Black-box Models, BMVC 2018", "Average of random smooth masks weighted by the class probability each masked image gets."),
    (220, "attention-rollout", "Attention rollout", "attention", "Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020", "Attention of the class token to each patch, multiplied through all layers (with the residual as 0.5 I); class-agnostic: the same map for every target. Needs nn.MultiheadAttention layers (ViT, DeiT)."),
    (230, "smoothgrad-sq", "SmoothGrad-squared", "gradient", "Hooker et al., A Benchmark for Interpretability Methods in Deep Neural Networks, NeurIPS 2019", "Squared gradient averaged over noisy copies of the image (SmoothGrad's second moment)."),
    (240, "vargrad", "VarGrad", "gradient", "Adebayo et al., Local Explanation Methods for Deep Neural Networks Lack Sensitivity to Parameter Values, ICLR 2018 workshop", "Variance of the gradient over noisy copies of the image: where the explanation is unstable."),
    (250, "gradient-shap", "GradientSHAP", "gradient", "Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017", "Gradients at random points between the image and random baselines, times (image - baseline), averaged: an estimate of SHAP values whose sum is the score's gain over the baselines."),
    (260, "deeplift", "DeepLIFT (rescale)", "gradient", "Shrikumar et al., Learning Important Features Through Propagating Activation Differences, ICML 2017", "Differences from a reference image propagated back with each nonlinearity's secant slope: sums to score(image) - score(reference)."),
    (270, "deeplift-shap", "DeepLIFT-SHAP", "gradient", "Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017", "DeepLIFT averaged over a set of reference images: sums to the score's gain over their mean score."),
    (290, "feature-ablation", "Feature ablation", "perturbation", "Captum FeatureAblation; Zeiler & Fergus, ECCV 2014 (occlusion by regions)", "Drop of the class score when one superpixel (SLIC) is replaced by the baseline."),
    (300, "shapley-sampling", "Shapley sampling", "perturbation", "Castro et al., Polynomial calculation of the Shapley value based on sampling, Computers & OR 2009", "Mean gain of the class score when a superpixel (SLIC) joins, over random orders of the superpixels."),
    (310, "kernel-shap", "KernelSHAP", "perturbation", "Lundberg & Lee, A Unified Approach to Interpreting Model Predictions, NeurIPS 2017", "Shapley values of the superpixels (SLIC) from a weighted linear fit of coalition scores."),
    (320, "lime", "LIME", "perturbation", "Ribeiro et al., 'Why Should I Trust You?': Explaining the Predictions of Any Classifier, KDD 2016", "Weights of a local linear model that predicts the class score from which superpixels (SLIC) are kept."),
    (330, "lrp", "LRP", "gradient", "Bach et al., On Pixel-Wise Explanations for Non-Linear Classifier Decisions by Layer-Wise Relevance Propagation, PLoS ONE 2015", "The score handed back layer by layer in proportion to each input's contribution (epsilon, gamma or alpha-beta rule): sums to the score."),
    (400, "layer-conductance", "Layer conductance", "gradient", "Dhamdhere et al., How Important Is a Neuron?, ICLR 2019 (arXiv:1805.12233); Captum LayerConductance", "Conductance of each unit of the layer (its change along the path times the score's gradient), summed over channels and upsampled: signed."),
    (410, "layer-integrated-gradients", "Layer integrated gradients", "gradient", "Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017; Captum LayerIntegratedGradients", "Integrated gradients of the layer's output (moved from its baseline value to its value), summed over channels and upsampled: signed, sums to the score difference."),
    (420, "neuron-gradient", "Neuron gradient", "gradient", "Simonyan et al., Deep Inside Convolutional Networks, ICLR 2014 workshop; Captum NeuronGradient", "Absolute gradient of one unit of the layer (a channel, or a channel at a position) with respect to the pixels, largest over colour channels."),
    (430, "neuron-guided-backprop", "Neuron guided backprop", "gradient", "Springenberg et al., Striving for Simplicity: The All Convolutional Net, ICLR 2015 workshop; Captum NeuronGuidedBackprop", "Guided backprop from one unit of the layer: what the unit responds to in the image (the visualization lecture's figure); ReLU-family activations before the layer are gated."),
    (440, "neuron-integrated-gradients", "Neuron integrated gradients", "gradient", "Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017; Captum NeuronIntegratedGradients", "Integrated gradients of one unit of the layer: signed, sums to the unit's change from the baseline."),
)
# fmt: on

CATALOG: dict[str, Entry] = {row[1]: Entry(*row) for row in _ROWS}


def describe(name: str) -> Entry:
    """The catalog's row of method ``name``.

    Raises:
        ValueError: ``name`` has no row (the sentence names the file to add it to).
    """
    if not isinstance(name, str):
        raise TypeError(f"a method's name is a str, got {type(name).__name__}")
    if name in CATALOG:
        return CATALOG[name]
    close = difflib.get_close_matches(name, list(CATALOG), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise ValueError(
        f"method {name!r} has no row in the method catalog{hint}: add (order, name, title, family, "
        "reference, summary) to _ROWS in guidewidgets/explain/catalog.py, or give the decorator its "
        "texts and order= (a method outside the package)"
    )


def entry(name: str, texts: Sequence[str], order: float | None, family: Family | None = None) -> Entry:
    """The row a decorator registers ``name`` with: the catalog's, or the one a method outside the
    catalog gives.

    Args:
        name: the method's registry key.
        texts: empty (read the catalog), or title, family, reference, summary (without ``family``
            where the decorator fixes it: a CAM's), for a method outside the catalog.
        order: None with the catalog's row, else the place in ``methods()`` of the given texts.
        family: the family the decorator registers (a CAM decorator's ``"cam"``), or None.

    Raises:
        TypeError: texts or ``order`` given in part.
        ValueError: an unknown family, or a row whose family is not the decorator's.
    """
    fields = ("title", "reference", "summary") if family else ("title", "family", "reference", "summary")
    if not texts and order is None:
        row = describe(name)
    elif len(texts) != len(fields) or order is None:
        raise TypeError(
            f"{name!r}: give {', '.join(fields)} and order= (a method outside the catalog), or none of them "
            "to read its row in guidewidgets/explain/catalog.py"
        )
    else:
        given = dict(zip(fields, texts))
        kind = family or given["family"]
        if kind not in FAMILIES:
            raise ValueError(f"{name!r}: family must be one of {', '.join(FAMILIES)}, got {kind!r}")
        row = Entry(order, name, given["title"], cast(Family, kind), given["reference"], given["summary"])
    if family is not None and row.family != family:
        raise ValueError(
            f"{name!r} is a {row.family!r} method in guidewidgets/explain/catalog.py, but its decorator "
            f"registers {family!r} methods: correct its row's family or use the decorator of its family"
        )
    return row
