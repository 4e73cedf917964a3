"""Wrap torchvision classifiers and segmenters in the conventions of guidewidgets.

The wrapper takes (B, 3, H, W) images in [0, 1], normalises them with the statistics of the
weights' own preprocessing, returns plain logits (segmentation: the ``out`` tensor at input
resolution), and carries ``classes`` (ImageNet or VOC names from torchvision's weights metadata,
which ships in the package), ``task``, ``default_explain_layer`` and ``default_guide_layer``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

__all__ = ["torchvision_model", "TorchvisionModel", "WeightsUnavailableError"]

#: Set to "1" to never try a download (tests, air-gapped machines): uncached weights fail at once.
OFFLINE_ENV = "GUIDEWIDGETS_OFFLINE"


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights are neither cached on this machine nor downloadable."""


class TorchvisionModel(nn.Module):
    """A torchvision network behind the guidewidgets model conventions (see module doc).

    The network is ``self.net``, so its layers are named ``net.<torchvision name>``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        *,
        name: str,
        task: str,
        classes: list[str],
        mean,
        std,
        explain_layer: str,
        guide_layer: str,
    ) -> None:
        super().__init__()
        self.net = net
        self.name = name
        self.task = task
        self.classes = list(classes)
        self.default_explain_layer = explain_layer
        self.default_guide_layer = guide_layer
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"expected a (B, 3, H, W) float tensor in [0, 1], got {shape}; add a batch dim with x[None]"
            )
        if not x.is_floating_point():
            raise TypeError(f"expected a float tensor in [0, 1], got {x.dtype}; use x.float() / 255 for uint8 images")
        out = self.net((x - self.mean) / self.std)
        if isinstance(out, dict):  # torchvision segmentation models return {"out": ..., "aux": ...}
            out = out["out"]
        return out

    def extra_repr(self) -> str:
        return f"name={self.name!r}, task={self.task!r}, classes={len(self.classes)}"


def _kind(name: str) -> str:
    from torchvision import models

    if name in models.list_models(module=models.segmentation):
        return "segmentation"
    if name in models.list_models(module=models):
        return "classification"
    supported = models.list_models(module=models) + models.list_models(module=models.segmentation)
    if name in models.list_models():
        raise ValueError(
            f"{name!r} is a torchvision detection/video/optical-flow model; only classifiers and "
            "semantic segmenters can be wrapped"
        )
    close = difflib.get_close_matches(name, supported, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown torchvision model {name!r}.{hint} torchvision.models.list_models() lists them all.")


def _resolve_weights(name: str, weights):
    from torchvision import models

    enum = models.get_model_weights(name)
    if weights is None:
        return enum, None
    if isinstance(weights, enum):
        return enum, weights
    if isinstance(weights, str):
        key = weights.split(".")[-1]
        try:
            return enum, enum[key] if key != "DEFAULT" else enum.DEFAULT
        except KeyError:
            raise ValueError(
                f"{name!r} has no weights {weights!r}; choose one of {['DEFAULT', *[w.name for w in enum]]} or None"
            ) from None
    raise TypeError(
        f"weights must be None, 'DEFAULT', a weights name or a {enum.__name__}, got {type(weights).__name__}"
    )


def _cached_file(weights) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)


def _state_dict(name: str, weights) -> dict:
    cached = _cached_file(weights)
    how = (
        f'To fetch them, run once on a machine with internet: python -c "import torchvision; '
        f"torchvision.models.get_model('{name}', weights='DEFAULT')\" and copy {cached.name} into {cached.parent} "
        f"here (or set TORCH_HOME). Or pass weights=None for an untrained {name} (class names still known)."
    )
    if not cached.is_file() and os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise WeightsUnavailableError(
            f"pretrained weights {weights} are not cached at {cached} and {OFFLINE_ENV} forbids downloading. {how}"
        )
    try:
        return weights.get_state_dict(progress=False, check_hash=False)
    except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError; a torn download a RuntimeError
        raise WeightsUnavailableError(
            f"could not load pretrained weights {weights} ({e.__class__.__name__}: {str(e)[:120]}); no internet? {how}"
        ) from None


def _default_layers(name: str, task: str, net: nn.Module) -> tuple[str, str]:
    names = {n for n, _ in net.named_modules() if n}
    if task == "segmentation":
        backbone = [n for n, _ in net.get_submodule("backbone").named_children()]
        explain = f"net.backbone.{backbone[-1]}"
        if "cbr" in dict(net.get_submodule("classifier").named_children()):  # LRASPP: its high-level branch
            return "net.classifier.cbr", "net.classifier.cbr"
        # Why: the last ReLU of the head leaves a cheap tail (dropout + 1x1 conv) for Guide Me.
        relus = [
            n
            for n, m in net.get_submodule("classifier").named_modules()
            if isinstance(m, nn.ReLU) and n.count(".") == 0
        ]
        return explain, f"net.classifier.{relus[-1]}" if relus else explain
    table = [
        (("resnet", "resnext", "wide_resnet"), "layer4"),
        (("googlenet",), "inception5b"),
        (("inception",), "Mixed_7c"),
        (("regnet",), "trunk_output"),
        (("shufflenet",), "conv5"),
        (("mnasnet",), "layers"),
        (("swin",), "permute"),  # Why: its "features" are channels-last; the permute makes (B, C, H, W)
        (("maxvit",), "blocks"),
        (("vit_",), "encoder"),  # tokens, not a feature map: CAM-family methods need a CNN
    ]
    for prefixes, layer in table:
        if name.startswith(prefixes) and layer in names:
            return f"net.{layer}", f"net.{layer}"
    if name.startswith("vgg") or name == "alexnet":
        # Why: the last conv's ReLU (14 x 14 for VGG at 224 px), as in the Grad-CAM paper.
        relus = [n for n, m in net.get_submodule("features").named_children() if isinstance(m, nn.ReLU)]
        layer = f"net.features.{relus[-1]}"
        return layer, layer
    if "features" in names:  # densenet, mobilenet, efficientnet, convnext, squeezenet
        return "net.features", "net.features"
    raise ValueError(f"no default layer known for {name!r}; pass layer=... to the explanation methods")


def torchvision_model(
    name: str, weights: str | None = "DEFAULT", *, device: str | torch.device = "cpu"
) -> TorchvisionModel:
    """A torchvision classifier or segmenter wrapped in the guidewidgets conventions, in eval mode.

    ``weights``: ``"DEFAULT"`` (the best pretrained weights; loaded from torchvision's cache or
    downloaded), a weights name such as ``"IMAGENET1K_V1"``, a torchvision weights enum, or
    ``None`` for random weights (always works offline; the class names are still known).
    Without internet and without cached weights, :class:`WeightsUnavailableError` says how to fetch
    them. Example: ``torchvision_model("resnet50")``, ``torchvision_model("fcn_resnet50", None)``.
    """
    from torchvision import models

    if not isinstance(name, str):
        raise TypeError(f"model name must be a str such as 'resnet50', got {type(name).__name__}")
    task = _kind(name)
    enum, w = _resolve_weights(name, weights)
    meta_source = w if w is not None else enum.DEFAULT
    classes = list(meta_source.meta["categories"])
    if task == "segmentation":
        classes = ["background" if c == "__background__" else c for c in classes]
    preprocess = meta_source.transforms()
    mean, std = list(preprocess.mean), list(preprocess.std)

    if w is None:
        kwargs: dict[str, Any] = {"weights": None}
        if task == "segmentation":
            kwargs.update(weights_backbone=None, num_classes=len(classes))
        net = models.get_model(name, **kwargs)
    else:
        state = _state_dict(name, w)
        # Why: build without weights (no second download path), then load the state we hold.
        kwargs = {"weights": None}
        if task == "segmentation":
            kwargs.update(
                weights_backbone=None,
                num_classes=len(classes),
                aux_loss=any(k.startswith("aux_classifier") for k in state),
            )
        else:
            kwargs.update(num_classes=len(classes))
            if name.startswith(("googlenet", "inception")):
                # Why: their pretrained weights expect torchvision's own input re-normalisation.
                kwargs.update(aux_logits=True, init_weights=False, transform_input=True)
        net = models.get_model(name, **kwargs)
        net.load_state_dict(state)
    if task == "segmentation" and getattr(net, "aux_classifier", None) is not None:
        net.aux_classifier = None  # Why: only "out" is returned; the auxiliary head would be wasted work
    if name.startswith(("googlenet", "inception")):
        net.aux_logits = False
        for aux in ("aux1", "aux2", "AuxLogits"):
            if hasattr(net, aux):
                setattr(net, aux, None)
    explain, guide = _default_layers(name, task, net)
    model = TorchvisionModel(
        net, name=name, task=task, classes=classes, mean=mean, std=std, explain_layer=explain, guide_layer=guide
    )
    return model.eval().to(device)
