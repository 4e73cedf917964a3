"""How a Guide runs its model: the hooks that put the guiding block at the layer, and the
guided forwards (fast: the head replayed from :class:`HeadCache`; full: the head without an
autograd graph), checked for NaN, with the block put back at its last finite values.

While the guide is open the block acts on every forward of the model, in any thread. Inside the
guide's own forward the hooks run in one of three modes, set for that thread only: "replay"
substitutes the kept activation at the layer (fast forward), "cut" runs the head without an
autograd graph (full forward with gradients), "live" applies the live block. Any other forward
(a plain ``model(x)``, another thread) sees the block as of the last completed change.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import eval_mode, hooked, model_lock, model_output
from .block import GuidingBlock
from .checks import finite
from .forward import HeadCache, empty_batch
from .ownership import _detach_hooks, _Owned

__all__: list[str] = []


class _Forwarding(_Owned):
    """The part of a Guide that runs the model: hooks, guided forwards, the block's versions."""

    image: torch.Tensor
    _x: torch.Tensor  # the image as a batch of one, on the model's device and dtype
    height: int
    width: int
    layer: str
    _module: nn.Module
    _all_modules: list[nn.Module]
    lr: float
    block: GuidingBlock
    _activation: torch.Tensor  # the layer's plain output
    _plain: torch.Tensor  # the plain logits
    _local: threading.local  # the mode of the guide's own forward, per thread
    _view: GuidingBlock  # the block as of the last completed change, for other forwards
    _good: GuidingBlock  # the last values known to give finite logits (zero: the plain ones)
    _version: int
    _cached: tuple[int, torch.Tensor] | None
    _head: HeadCache | None
    _opt: Any  # the optimiser (optimise.py); its memory restarts after a rollback
    fast_path: bool
    fast_path_note: str

    @torch.no_grad()
    def _plain_forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        seen: list = []

        def keep(_m, _a, out):
            seen.append(out.detach().clone() if isinstance(out, torch.Tensor) else out)

        with model_lock(self.model), eval_mode(self.model), hooked() as h:
            h.forward(self._module, keep)
            out = self.model(self._x)
        logits = self._as_map(model_output(out))
        if not seen:
            raise ValueError(
                f"layer {self.layer!r} did not run in the model's forward pass; pick a layer the "
                "forward uses (guidewidgets.hooks.layer_names(model) lists them)"
            )
        if len(seen) > 1:
            raise ValueError(
                f"layer {self.layer!r} runs {len(seen)} times per forward (a shared module); "
                "pick a layer that runs once"
            )
        act = seen[0]
        if not isinstance(act, torch.Tensor) or act.dim() != 4:
            what = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
            raise ValueError(
                f"layer {self.layer!r} outputs {what}, not a (B, C, H, W) feature map; the guiding "
                "block scales feature maps: pick a convolutional layer or block (for example "
                f"{getattr(self.model, 'default_guide_layer', None) or 'the encoder’s last block'!r})"
            )
        return act, logits

    def _as_map(self, out: torch.Tensor) -> torch.Tensor:
        if out.dim() != 4:
            raise ValueError(
                f"the model's output has shape {tuple(out.shape)}; a Guide needs a segmentation "
                "output (1, K, H, W) because hints are pixels"
            )
        if tuple(out.shape[-2:]) != (self.height, self.width):
            # Why: hints live in image coordinates; a coarse output is compared at image size.
            out = F.interpolate(out, size=(self.height, self.width), mode="bilinear", align_corners=False)
        return out

    def _mode(self) -> str | None:
        return getattr(self._local, "mode", None)

    def _attach(self) -> None:
        """Put the block's two hooks on the layer, for the life of the guide."""
        # The guiding block itself acts on every forward of the model while the guide is open (any
        # thread: "one guide per model"); replaying and cutting act only in the thread in _forward.
        ref = weakref.ref(self)

        def pre(_m, args):
            g = ref()
            if g is not None and not g._bypass and g._mode() == "replay":
                return empty_batch(args)
            return None

        def post(_m, _args, out):
            g = ref()
            if g is None or g._bypass:
                return None
            mode = g._mode()
            if mode is None:  # not the guide's own forward: the block as of its last completed step
                if not isinstance(out, torch.Tensor):
                    raise ValueError(f"layer {g.layer!r} returned {type(out).__name__}, not a tensor")
                guided = g._view(out)
                return None if guided is out else guided
            if mode == "cut":
                torch.set_grad_enabled(True)
            src = g._activation if mode == "replay" else out
            if not isinstance(src, torch.Tensor):
                raise ValueError(f"layer {g.layer!r} returned {type(src).__name__}, not a tensor")
            guided = g.block(src)
            if guided is src and mode == "replay":
                guided = guided.clone()  # an in-place op after the layer must not eat the cache
            return guided

        self._handles.append(self._module.register_forward_pre_hook(pre))
        self._handles.append(self._module.register_forward_hook(post))
        # A guide dropped without close() takes its hooks with it when it is collected.
        self._finalizer = weakref.finalize(self, _detach_hooks, self._handles)

    def _let_go(self) -> None:
        self._head = None  # the head's kept outputs: as large as the image's activations

    def _forward(self, grad: bool, fast: bool | None = None) -> torch.Tensor:
        """Guided logits (1, K, H, W) for the current block; ValueError (block put back) if not finite."""
        with self._session():
            fast = self.fast_path if fast is None else fast
            try:
                with eval_mode(self.model, self._all_modules), torch.set_grad_enabled(grad), hooked() as h:
                    if fast:
                        assert self._head is not None
                        self._local.mode = "replay"
                        with self._head.replaying():
                            out = self.model(self._x)
                    else:
                        if grad:
                            self._local.mode = "cut"

                            def head_without_graph(_m, _a):
                                torch.set_grad_enabled(False)

                            h.forward_pre(self.model, head_without_graph)
                        else:
                            self._local.mode = "live"
                        out = self.model(self._x)
            finally:
                self._local.mode = None
            logits = self._as_map(model_output(out))
            # One float64 sum instead of isfinite(): a NaN or inf anywhere makes it non-finite.
            if not finite(float(logits.detach().sum(dtype=torch.float64))):
                self._rollback()
                raise ValueError(
                    f"the guide's block made the model's output NaN or infinite (lr={self.lr:g} is too "
                    "large for this model, or the hints pull too hard); the block is back at its last "
                    "finite values: make the Guide with a smaller lr, or call reset()"
                )
            return logits

    def _rollback(self) -> None:
        with torch.no_grad():
            for p, good in zip(self._block_tensors(), self._tensors_of(self._good)):
                p.copy_(good)
                p.grad = None
        self._opt = None
        self._block_changed()

    def _block_tensors(self) -> tuple[torch.Tensor, ...]:
        return self._tensors_of(self.block)

    @staticmethod
    def _tensors_of(block: GuidingBlock) -> tuple[torch.Tensor, ...]:
        return (block.alpha, block.beta, block.gamma_s, block.gamma_b)

    def _block_changed(self) -> None:
        """After every change of the block: new cache key, and other forwards see the new values."""
        self._version += 1
        self._cached = None
        self._view = self.block.frozen()

    def _check_fast_path(self) -> None:
        """Use the cached head only if it reproduces full forwards, at zero and off zero."""
        try:
            with model_lock(self.model), eval_mode(self.model):
                self._head = HeadCache(self.model, self._module, self._x)
            with torch.no_grad():
                zero = self._forward(grad=False, fast=True)
                ok = torch.allclose(zero, self._plain, rtol=1e-4, atol=1e-5)
                if ok:
                    gen = torch.Generator(device="cpu").manual_seed(0)
                    for p in self.block.parameters():
                        p.copy_(0.1 * torch.randn(p.shape, generator=gen).to(p))
                    fast = self._forward(grad=False, fast=True)
                    full = self._forward(grad=False, fast=False)
                    scale = full.abs().max().clamp_min(1.0)
                    ok = torch.allclose(fast, full, rtol=1e-4, atol=1e-5 * float(scale))
                    ok = ok and not torch.allclose(fast, zero)  # the guide must reach the output
        except Exception as err:
            ok, note = False, f"off: replaying the head failed ({type(err).__name__}: {err})"
        else:
            note = "on: head computed once" if ok else "off: replaying the head changed the output"
        finally:
            self.block.zero_()
        self.fast_path, self.fast_path_note = ok, note
        if not ok:
            self._head = None

    def plain_logits(self) -> torch.Tensor:
        """(1, K, H, W) logits of the unguided model (computed once)."""
        return self._plain.clone()

    @torch.no_grad()
    def logits(self) -> torch.Tensor:
        """(1, K, H, W) logits with the current guide; at zero exactly the plain logits."""
        with self._session():
            if self.block.is_zero():
                return self._plain.clone()
            if self._cached is None or self._cached[0] != self._version:
                self._cached = (self._version, self._forward(grad=False))
            return self._cached[1].clone()

    def prediction(self) -> torch.Tensor:
        """(H, W) int64 guided class map."""
        return self.logits().argmax(1)[0]
