"""The guiding block of Guide Me (Rupprecht et al., CVPR 2018).

``A'[c, h, w] = (1 + alpha[h] + beta[w] + gamma_s[c]) * A[c, h, w] + gamma_b[c]``

All four vectors start at zero, where the block is exactly the identity. With ``spatial=False``
only ``gamma_s`` and ``gamma_b`` are optimised (the channel-only block that f-BRS uses).
"""

from __future__ import annotations

import torch

__all__ = ["GuidingBlock"]


class GuidingBlock:
    """The guide's parameters for one feature map of shape (C, H, W), and the map they apply.

    It is not an ``nn.Module`` on purpose: it never becomes part of the model (no surgery, no
    entry in the model's ``state_dict``); a forward hook calls it.
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        *,
        spatial: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.spatial = spatial
        self.alpha = torch.zeros(height, device=device, dtype=dtype, requires_grad=spatial)
        self.beta = torch.zeros(width, device=device, dtype=dtype, requires_grad=spatial)
        self.gamma_s = torch.zeros(channels, device=device, dtype=dtype, requires_grad=True)
        self.gamma_b = torch.zeros(channels, device=device, dtype=dtype, requires_grad=True)
        self._zero_key: tuple[int, ...] = ()
        self._zero = True

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of the feature map the block fits."""
        return (self.gamma_s.numel(), self.alpha.numel(), self.beta.numel())

    def parameters(self) -> list[torch.Tensor]:
        """The tensors the optimiser moves (alpha and beta only when ``spatial``)."""
        if self.spatial:
            return [self.alpha, self.beta, self.gamma_s, self.gamma_b]
        return [self.gamma_s, self.gamma_b]

    def as_dict(self) -> dict[str, torch.Tensor]:
        """Detached views of alpha, beta, gamma_s, gamma_b (alpha, beta stay zero if not spatial)."""
        return {
            "alpha": self.alpha.detach(),
            "beta": self.beta.detach(),
            "gamma_s": self.gamma_s.detach(),
            "gamma_b": self.gamma_b.detach(),
        }

    def frozen(self) -> GuidingBlock:
        """A copy of the block's current values that takes no gradients.

        Why: while a guide optimises its block, forwards of the model outside the guide's own
        steps (another thread, a plain ``model(x)``) apply this copy: the block as of the last
        completed step, never half updated, and never a graph into the live parameters.
        """
        copy = GuidingBlock(0, 0, 0, spatial=self.spatial, device=self.alpha.device, dtype=self.alpha.dtype)
        copy.alpha, copy.beta, copy.gamma_s, copy.gamma_b = (
            p.detach().clone() for p in (self.alpha, self.beta, self.gamma_s, self.gamma_b)
        )
        return copy

    @torch.no_grad()
    def zero_(self) -> None:
        for p in (self.alpha, self.beta, self.gamma_s, self.gamma_b):
            p.zero_()

    @torch.no_grad()
    def is_zero(self) -> bool:
        """True when all four vectors are zero (cached on the tensors' in-place version counters)."""
        tensors = (self.alpha, self.beta, self.gamma_s, self.gamma_b)
        key = tuple(p._version for p in tensors)
        if key != self._zero_key:
            self._zero_key, self._zero = key, not any(bool(p.any()) for p in tensors)
        return self._zero

    def penalty(self, bias_weight: float = 10.0, center: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """sum(alpha^2) + sum(beta^2) + sum(gamma_s^2) + bias_weight * sum(gamma_b^2).

        Why the bias weight: as in f-BRS, a bias moves a whole channel everywhere, so it is
        the more drastic change and is made dearer. ``center``: measure the distance from these
        values instead of zero (a text hint's parameters, which clicks then refine).
        """

        def sq(name: str, p: torch.Tensor) -> torch.Tensor:
            return (p - center[name] if center is not None else p).square().sum()

        total = sq("gamma_s", self.gamma_s) + bias_weight * sq("gamma_b", self.gamma_b)
        if self.spatial:
            total = total + sq("alpha", self.alpha) + sq("beta", self.beta)
        return total

    def __call__(self, activation: torch.Tensor) -> torch.Tensor:
        """Apply the block to a (B, C, H, W) map; at zero, unless its own parameters are being
        differentiated, ``activation`` itself."""
        c, h, w = self.shape
        if not isinstance(activation, torch.Tensor):
            raise TypeError(f"the guiding block scales a (B, {c}, {h}, {w}) tensor, got {type(activation).__name__}")
        if activation.dim() != 4 or tuple(activation.shape[1:]) != (c, h, w):
            raise ValueError(
                f"the guiding block was made for feature maps of shape (B, {c}, {h}, {w}) but got "
                f"{tuple(activation.shape)}; a Guide session only works on images of the size it "
                "was created with: close it (or leave its `with` block) before running other images"
            )
        if not (torch.is_grad_enabled() and self.gamma_s.requires_grad) and self.is_zero():
            # Why: guarantees the guided model equals the plain one bit for bit at zero
            # ((1 + 0) * a + 0 also turns -0.0 into +0.0).
            return activation
        scale = self.gamma_s.view(1, c, 1, 1)
        if self.spatial:
            scale = scale + self.alpha.view(1, 1, h, 1) + self.beta.view(1, 1, 1, w)
        return activation * (1 + scale) + self.gamma_b.view(1, c, 1, 1)
