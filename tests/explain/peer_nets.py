"""The random-weight torchvision nets that the peer-agreement tests of the newer methods share:
one seeded constructor, one table of the layers each CAM test explains, and the nets at their
default layer for the layer and neuron attribution tests."""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from guidewidgets import zoo
from guidewidgets.explain import layers

# Layers at 64 px, per architecture: (for the projection CAMs, a (B, C, h, w) map of h, w >= 4
# whose activations keep a usable scale with random weights (deeper MobileNet/ShuffleNet blocks
# fall to ~1e-6) and that no inplace op overwrites afterwards (pytorch-grad-cam keeps the layer's
# output without copying it); for the score CAMs, at most 128 channels (every channel is a masked
# forward per sample) and a map that is not all zero after the ReLU with random weights (VGG and
# DenseNet take 10-30 s there)). None: the test leaves the architecture out.
CAM_LAYERS: dict[str, tuple[str | None, str | None]] = {
    "resnet18": ("layer3", "layer2"),
    "vgg11": ("features.14", None),
    "densenet121": ("features.denseblock3", None),
    "mobilenet_v3_small": ("features.3", "features.3"),
    "regnet_y_400mf": ("trunk_output.block3", "trunk_output.block2"),
    "shufflenet_v2_x0_5": ("stage2", "stage2"),
    "squeezenet1_1": ("features.9", "features.4"),
    "convnext_tiny": ("features.5", None),
    "efficientnet_b0": (None, "features.2"),
    "mnasnet0_5": (None, "layers.9"),
}


def cam_layers(column: int) -> dict[str, str]:
    """Architecture -> layer for one column of :data:`CAM_LAYERS` (0: projection CAMs, 1: score CAMs)."""
    return {arch: row[column] for arch, row in CAM_LAYERS.items() if row[column] is not None}  # type: ignore[misc]


def random_net(arch: str) -> nn.Module:
    """The named torchvision architecture with seeded random weights and 10 classes, in eval mode."""
    torch.manual_seed(0)
    return getattr(torchvision.models, arch)(weights=None, num_classes=10).eval()


def nets_at_default_layer(archs: list[str], seed: int, size: int) -> dict[str, tuple[nn.Module, torch.Tensor, str]]:
    """name -> (model, two images, its default layer's name): the embedded classifier on 96 px
    images, then each architecture on ``size`` px images, all drawn from one generator seeded
    with ``seed``."""
    out = {}
    gen = torch.Generator().manual_seed(seed)
    clf = zoo.load("shapes-classifier")
    x = torch.rand(2, 3, 96, 96, generator=gen)
    out["shapes-classifier"] = (clf, x, layers.resolve_layer(clf, x, None))
    for arch in archs:
        model = random_net(arch)
        x = torch.rand(2, 3, size, size, generator=gen)
        out[arch] = (model, x, layers.resolve_layer(model, x, None))
    return out
