"""Inside the CNN: what a trained network has learned, rather than one image's map.

- :mod:`.filters`: first-layer filters as an RGB grid, deeper ones as grey grids; a layer's
  activation maps for one image, sorted;
- :mod:`.receptive`: the receptive field of a position, analytically from the conv/pool chain or
  by the gradient;
- :mod:`.patches`: maximally activating patches over a dataset (bounded top-k, in batches);
- :mod:`.maximize`: activation maximization (channel, neuron, class score) with L2, jitter,
  blur/TV and the Fourier/decorrelated parametrisation;
- :mod:`.space`: pooled embeddings, nearest neighbours in feature vs pixel space, PCA and t-SNE;
- :mod:`.pv`: Perception Visualization (a decoder from a layer's latent to the image, x Grad-CAM);
- :class:`FeatureBrowser`: the widget-free session behind ``FeatureWidget`` (per-layer caches,
  top patches, embeddings, PCA / t-SNE and activation maximization as background jobs).

Pure torch (and scikit-learn for the projections): no widget imports.

>>> from guidewidgets import features, zoo
>>> model = zoo.load("shapes-classifier")
>>> grid = features.filter_grid(model)          # (3, H, W) in [0, 1]
>>> rf = features.receptive_field(model, "features")
>>> rf.size
(39, 39)
"""

from __future__ import annotations

from .browser import FeatureBrowser
from .filters import activation_maps, conv_layers, filter_grid, filters, normalize_each, tile
from .maximize import Maximized, maximize
from .patches import TopPatches, crop, top_patches
from .pv import Decoder, Perception, load_decoder, perception, reconstruct, save_decoder, train_decoder
from .receptive import ReceptiveField, box_of, chain_of, gradient_box, receptive_field
from .space import Embeddings, embed, neighbours, pixels, project, same_class_rate

__all__ = [
    "FeatureBrowser",
    "activation_maps",
    "conv_layers",
    "filter_grid",
    "filters",
    "normalize_each",
    "tile",
    "Maximized",
    "maximize",
    "TopPatches",
    "crop",
    "top_patches",
    "Decoder",
    "Perception",
    "load_decoder",
    "perception",
    "reconstruct",
    "save_decoder",
    "train_decoder",
    "ReceptiveField",
    "box_of",
    "chain_of",
    "gradient_box",
    "receptive_field",
    "Embeddings",
    "embed",
    "neighbours",
    "pixels",
    "project",
    "same_class_rate",
]
