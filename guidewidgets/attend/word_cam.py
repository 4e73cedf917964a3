"""Grad-CAM beyond classification: the map of one caption word's score.

The visualization lecture notes that Grad-CAM "can also be applied beyond classification models,
e.g. image captioning": take the logit of word k of a caption (teacher-forced on that caption),
back-propagate it to a convolutional layer and weight its channels as usual. :class:`WordScores`
turns the shipped captioner into a model with one output vector (the vocabulary logits at step k),
so every method of :mod:`guidewidgets.explain` applies to it unchanged.

>>> scores = WordScores(captioner, tokens, k=2)          # logits of the third word
>>> explain.grad_cam(scores, image[None], target=tokens[2], layer=scores.layer)
"""

from __future__ import annotations

import torch
from torch import nn

from .captioner import Captioner

__all__ = ["WordScores", "word_grad_cam"]


class WordScores(nn.Module):
    """``x -> logits (B, V)`` of caption step ``k``, the caption ``tokens`` fed as teacher input.

    ``layer`` is the captioner's grid projection (``project``, 12 x 12), the last convolution
    before the attention: the layer Grad-CAM reads. Shares the captioner's modules (nothing copied).
    """

    tokens: torch.Tensor

    def __init__(self, captioner: Captioner, tokens: torch.Tensor, k: int) -> None:
        super().__init__()
        tokens = torch.as_tensor(tokens, dtype=torch.long).flatten()
        if not 0 <= k < len(tokens):
            raise ValueError(f"k must index a word of the caption (0..{len(tokens) - 1}), got {k}")
        self.captioner = captioner
        self.register_buffer("tokens", tokens, persistent=False)
        self.k = int(k)
        self.layer = captioner.project

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Why not Captioner.forward: it runs the backbone under no_grad, and Grad-CAM needs the graph.
        features = self.captioner.backbone(x)
        tokens = self.tokens[None].expand(x.shape[0], -1)
        logits, _ = self.captioner.forward_features(features, tokens[:, : self.k + 1])
        return logits[:, self.k]


def word_grad_cam(captioner: Captioner, image: torch.Tensor, tokens: torch.Tensor, k: int) -> torch.Tensor:
    """Grad-CAM (H, W) of word ``k``'s logit for ``image`` (3, H, W) captioned as ``tokens``.

    Args:
        captioner: a :class:`Captioner` (e.g. ``load_captioner()``).
        image: one (3, 96, 96) image in [0, 1].
        tokens: the caption's token ids (the words, without ``<start>``), e.g. from ``vocab.encode``.
        k: which word to explain.

    Returns:
        The map at the image's size, non-negative.
    """
    from ..explain import grad_cam  # Why lazy: explain imports much more than captioning needs

    scores = WordScores(captioner, tokens, k)
    return grad_cam(scores, image[None], target=int(scores.tokens[k]), layer=scores.layer)[0]
