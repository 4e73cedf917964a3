"""SmoothGrad-squared and VarGrad: the second moments of the gradient over noisy copies.

SmoothGrad (``gradients.smoothgrad``) averages the gradient g over copies ``x + eps``; these two
keep its second moments instead, as Captum's ``NoiseTunnel(nt_type=...)`` does:

- ``smoothgrad-sq``: ``E[g^2]`` (Hooker et al. 2019, "SmoothGrad-Squared");
- ``vargrad``: ``Var[g] = E[g^2] - E[g]^2`` (Adebayo et al. 2018, "VarGrad").

Both are unsigned; the map is the largest value over the colour channels (``raw=True``: the
(B, C, H, W) moment). The noise is SmoothGrad's (same seed, same copies).
"""

from __future__ import annotations

import torch

from .gradients import gradient_moments, image_method, noise_method

__all__ = ["gradient_moments", "smoothgrad_sq", "vargrad"]

_QUICK = {"samples": 3}


def _squares(second: torch.Tensor | None) -> torch.Tensor:
    assert second is not None, "these methods keep E[g^2] (noise_method's squares=True)"
    return second


smoothgrad_sq = image_method("smoothgrad-sq", slow=True, quick=_QUICK)(
    noise_method(
        "smoothgrad_sq",
        lambda first, second: _squares(second),
        """``E[g^2]`` over ``samples`` noisy copies (std ``noise`` x the image's range), as Captum's
        ``NoiseTunnel(Saliency, nt_type="smoothgrad_sq")`` on the signed gradient; ``raw=True``: the
        (B, C, H, W) moment; ``batch_size``: images per forward (Captum's ``internal_batch_size``).""",
        module=__name__,
    )
)

vargrad = image_method("vargrad", slow=True, quick=_QUICK)(
    noise_method(
        "vargrad",
        # Why clamp: exact in exact arithmetic, but rounding can leave a tiny negative variance.
        lambda first, second: (_squares(second) - first.square()).clamp_min(0),
        """``E[g^2] - E[g]^2`` over ``samples`` noisy copies, as Captum's ``nt_type="vargrad"``
        (clamped at 0 against rounding); ``raw=True``: the (B, C, H, W) variance; ``batch_size``:
        images per forward (Captum's ``internal_batch_size``).""",
        module=__name__,
    )
)
