"""A GAIN training loop for scripts, notebooks and widgets: ``fit()`` / ``step()``, callbacks,
pause / resume / stop from another thread, deterministic at a seed, on CPU or CUDA, and under
``torchrun`` with DistributedDataParallel.

    trainer = GainTrainer(model, "features", images, labels, config=GainConfig(alpha=1.0),
                          masks=masks, has_mask=has_mask, epochs=4, probes=images[:4])
    trainer.fit()

Data lives in tensors (images (N, 3, H, W) float in [0, 1] or uint8; labels (N,) or (N, K)
multi-hot). Each epoch visits the images in an order drawn from ``seed`` and the epoch number, so
the same seed and thread count give the same weights. With pixel-level masks, every step adds
``mask_batch`` of the pixel-labelled images to the batch (GAIN_ext's S_e stream), cycling through
them; L_e is computed on those rows only.

Distributed: when ``torch.distributed`` is initialised (``torchrun``), each process takes its
contiguous share of every global batch and the model is wrapped in DDP, which averages the
gradients; because every loss is a mean over equal shares, that is the gradient of the global
batch (up to BatchNorm, whose statistics stay per process unless the model uses SyncBatchNorm).
The global batch must divide by the world size; an incomplete last batch is dropped there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .. import hooks
from .attention import _name_of, attention, check_layer_output, masked_image, soft_mask
from .losses import GainConfig, check_masks, gain_losses

__all__ = ["GainTrainer", "Callback", "accuracy"]

#: A callback receives one event dict: ``kind`` is "step", "probe", "eval" or "end" (see GainTrainer).
Callback = Callable[[dict[str, Any]], None]


def _float_images(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(255) if x.dtype == torch.uint8 else x.float()


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy (single-label) of ``model`` in eval mode; the model's mode is restored."""
    if len(images) == 0:
        raise ValueError("cannot score an empty set; the test set has no images of the requested kind")
    device = next(model.parameters()).device
    correct = 0
    with hooks.model_lock(model), hooks.eval_mode(model):
        for s in range(0, len(images), batch_size):
            out = hooks.model_output(model(_float_images(images[s : s + batch_size]).to(device)))
            correct += int((out.argmax(1).cpu() == labels[s : s + batch_size]).sum())
    return correct / len(images)


class GainTrainer:
    """Train ``model`` with GAIN (``config.alpha > 0``), GAIN_ext (``masks`` given) or plainly.

    Args:
        model: a classifier (B, 3, H, W) -> (B, K); trained in place.
        layer: the feature layer (dotted name or module) whose Grad-CAM is the attention.
        images, labels: the training set; masks: (N, H, W) pixel labels of each image's class
            (or (N, K, H, W) for multi-hot labels), used where ``has_mask`` (N,) is True.
        config: GAIN's knobs. lr, weight_decay: AdamW's. batch_size: the global batch.
        mask_batch: pixel-labelled images added to every step. epochs: length of :meth:`fit`.
        seed: the shuffling seed. device: "cpu", "cuda" or None (the model's).
        probes: (P, 3, H, W) images whose attention is sent to callbacks every ``probe_every``
            steps (their labels ``probe_labels``; the prediction if None).
        eval_sets: {name: (images, labels)} scored every ``eval_every`` steps and at the end.
        callbacks: functions called with event dicts: ``{"kind": "step", "step", "epoch",
            "losses": {...}, "accuracy"}``, ``{"kind": "probe", "step", "maps", "masked",
            "predicted"}``, ``{"kind": "eval", "step", "accuracy": {name: fraction}}``,
            ``{"kind": "end", "step", "reason"}``.
        mine: compute the attention even when alpha = 0 (default: when alpha > 0 or masks).
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        masks: torch.Tensor | None = None,
        has_mask: torch.Tensor | None = None,
        config: GainConfig | None = None,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        batch_size: int = 32,
        mask_batch: int = 4,
        epochs: int = 1,
        seed: int = 0,
        device: str | torch.device | None = None,
        probes: torch.Tensor | None = None,
        probe_labels: torch.Tensor | None = None,
        probe_every: int = 10,
        eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        eval_every: int | None = None,
        callbacks: Sequence[Callback] = (),
        mine: bool | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError("images must be a (N, 3, H, W) tensor (float in [0, 1] or uint8)")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels; give one label per image")
        if batch_size < 1 or epochs < 0 or mask_batch < 0 or probe_every < 1:
            raise ValueError("batch_size and probe_every must be >= 1, epochs and mask_batch >= 0")
        self.config = config or GainConfig()
        self.config.check()
        self.model = model
        self.module = hooks.get_layer(model, layer)
        self.layer = layer
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        model.to(self.device)
        self._check_layer(images[:1])
        self.images, self.labels = images, labels
        num_classes = getattr(model, "classes", None)
        if labels.dim() == 1 and num_classes is not None:
            counts = torch.bincount(labels, minlength=len(num_classes))
            empty = [str(num_classes[i]) for i in range(len(num_classes)) if counts[i] == 0]
            if empty:
                raise ValueError(
                    f"class(es) {', '.join(empty)} have no training samples; add scenes of them or train a model "
                    "with fewer outputs (attention mining needs every class it predicts to be seen)"
                )
        self.masks, self.mask_rows = None, torch.zeros(0, dtype=torch.long)
        if masks is not None:
            check_masks(masks, images, labels)
            flags = torch.ones(len(images), dtype=torch.bool) if has_mask is None else has_mask.bool()
            if tuple(flags.shape) != (len(images),):
                raise ValueError(f"has_mask must be (N,) bool, one flag per image, got {tuple(flags.shape)}")
            self.masks, self.mask_rows = masks, flags.nonzero(as_tuple=True)[0]
        self.batch_size, self.mask_batch, self.epochs, self.seed = int(batch_size), int(mask_batch), int(epochs), seed
        self.probes, self.probe_labels, self.probe_every = probes, probe_labels, int(probe_every)
        self.eval_sets = dict(eval_sets or {})
        self.eval_every = eval_every
        self.callbacks = list(callbacks)
        self.mine = mine
        self.lr, self.weight_decay = lr, weight_decay
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)

        dist = torch.distributed
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if self.distributed and self.batch_size % self.world:
            raise ValueError(f"batch_size {self.batch_size} must divide by the world size {self.world}")
        self.net: nn.Module = model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(model, device_ids=ids)

        self.step_count = 0
        self.history: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self._order: torch.Tensor | None = None
        self._epoch_of_order = -1
        self._mask_cursor = 0
        self._run = threading.Event()
        self._run.set()
        self._stop = threading.Event()
        self._waiting = threading.Event()
        self._lock = hooks.model_lock(model)

    def _check_layer(self, image: torch.Tensor) -> None:
        """Refuse a layer without a spatial map now (one image, eval mode, no gradient), not at
        the first step of a background run."""
        with (
            torch.no_grad(),
            hooks.model_lock(self.model),
            hooks.eval_mode(self.model),
            hooks.capture(self.model, self.module, cut=False) as cap,
        ):
            logits = hooks.model_output(self.model(_float_images(image).to(self.device)))
        name = self.layer if isinstance(self.layer, str) else _name_of(self.model, self.module)
        check_layer_output(name, cap.raw, logits)

    # --- control (thread-safe) -------------------------------------------------------------------

    def pause(self) -> None:
        """Hold :meth:`fit` before its next step (from any thread)."""
        self._run.clear()

    def resume(self) -> None:
        """Let a paused :meth:`fit` go on."""
        self._run.set()

    def stop(self) -> None:
        """End :meth:`fit` after the current step (also when paused)."""
        self._stop.set()
        self._run.set()

    @property
    def paused(self) -> bool:
        """True while paused."""
        return not self._run.is_set()

    @property
    def waiting(self) -> bool:
        """True while :meth:`fit` is held by :meth:`pause` (no step in flight)."""
        return self._waiting.is_set()

    @property
    def stopped(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    # --- schedule --------------------------------------------------------------------------------

    @property
    def steps_per_epoch(self) -> int:
        """Global batches per epoch (an incomplete last batch is dropped when distributed)."""
        n = len(self.images)
        return n // self.batch_size if self.distributed else -(-n // self.batch_size)

    @property
    def total_steps(self) -> int:
        """Steps :meth:`fit` runs for ``epochs`` epochs."""
        return self.epochs * self.steps_per_epoch

    def _batch_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, k = divmod(self.step_count, self.steps_per_epoch)
        if self._epoch_of_order != epoch:
            g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._order = torch.randperm(len(self.images), generator=g)
            self._epoch_of_order = epoch
        assert self._order is not None
        idx = self._order[k * self.batch_size : (k + 1) * self.batch_size]
        extra = torch.zeros(0, dtype=torch.long)
        if self.masks is not None and self.mask_batch and len(self.mask_rows):
            take = torch.arange(self._mask_cursor, self._mask_cursor + self.mask_batch) % len(self.mask_rows)
            self._mask_cursor = int(take[-1]) + 1
            extra = self.mask_rows[take]
        if self.distributed:
            idx = torch.tensor_split(idx, self.world)[self.rank]
            extra = torch.tensor_split(extra, self.world)[self.rank]
        return idx, extra

    # --- one step ---------------------------------------------------------------------------------

    def step(self) -> dict[str, Any]:
        """One optimisation step on the next global batch; returns (and records) its losses."""
        idx, extra = self._batch_indices()
        rows = torch.cat([idx, extra])
        x = _float_images(self.images[rows]).to(self.device)
        y = self.labels[rows].to(self.device)
        masks = has = None
        if self.masks is not None:
            masks = self.masks[rows].float().to(self.device)
            has = torch.zeros(len(rows), dtype=torch.bool, device=self.device)
            has[len(idx) :] = True
        with self._lock:
            self.model.train()
            losses = gain_losses(self.net, x, y, self.module, self.config, masks=masks, has_mask=has, mine=self.mine)
            self.optimizer.zero_grad(set_to_none=True)
            losses.total.backward()
            self.optimizer.step()
        logits = losses.attention.logits if losses.attention is not None else None
        record: dict[str, Any] = {
            "kind": "step",
            "step": self.step_count + 1,
            "epoch": self.step_count / self.steps_per_epoch,
            "losses": losses.numbers(),
        }
        if logits is not None and y.dim() == 1:
            record["accuracy"] = float((logits.argmax(1) == y).float().mean())
        self.step_count += 1
        self.history.append(record)
        self._emit(record)
        if self.probes is not None and self.step_count % self.probe_every == 0:
            self._emit({"kind": "probe", "step": self.step_count, **self.probe()})
        if self.eval_every and self.step_count % self.eval_every == 0:
            self.evaluate()
        return record

    def _emit(self, event: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        for cb in self.callbacks:
            cb(event)

    # --- looking in ------------------------------------------------------------------------------

    def probe(self, images: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Attention maps (P, H, W), soft masks, masked images I* (P, 3, H, W) and predictions of the
        probe images (or ``images``), for ``labels`` (the prediction when None); eval mode, no
        weight gradients written."""
        x = self.probes if images is None else images
        if x is None:
            raise ValueError("no probe images: pass probes=... to GainTrainer or images=... here")
        x = _float_images(x).to(self.device)
        lab = self.probe_labels if images is None else labels
        with self._lock, hooks.eval_mode(self.model):
            with torch.no_grad():
                predicted = hooks.model_output(self.model(x)).argmax(1)
            target = predicted if lab is None else lab.to(self.device)
            att = attention(self.model, x, target, self.module, create_graph=False)
        t = soft_mask(att.maps, self.config.sigma, self.config.omega)
        return {
            "maps": att.maps.cpu(),
            "soft_mask": t.cpu(),
            "masked": masked_image(x, t).cpu(),
            "predicted": predicted.cpu(),
            "images": x.cpu(),
        }

    def evaluate(self) -> dict[str, float]:
        """Accuracy on every ``eval_sets`` entry (rank 0 only; {} elsewhere); sent as an "eval" event."""
        if self.rank != 0 or not self.eval_sets:
            return {}
        result = {name: accuracy(self.model, xs, ys) for name, (xs, ys) in self.eval_sets.items()}
        event = {"kind": "eval", "step": self.step_count, "accuracy": result}
        self.evaluations.append(event)
        self._emit(event)
        return result

    # --- the loop ----------------------------------------------------------------------------------

    def fit(self, steps: int | None = None, threads: int | None = None) -> list[dict[str, Any]]:
        """Run until ``epochs`` are done (or ``steps`` more steps), or :meth:`stop`; honours
        :meth:`pause`. ``threads`` sets torch's intra-op threads for the run; it and the model's
        train/eval flag are restored afterwards."""
        end = self.total_steps if steps is None else self.step_count + int(steps)
        before = torch.get_num_threads()
        was_training = self.model.training
        if threads is not None:
            torch.set_num_threads(int(threads))
        reason = "done"
        try:
            while self.step_count < end:
                if not self._run.is_set():
                    self._waiting.set()
                    while not self._run.wait(timeout=0.1):
                        pass
                    self._waiting.clear()
                if self._stop.is_set():
                    reason = "stopped"
                    break
                self.step()
            if (
                self.eval_sets
                and reason == "done"
                and (not self.evaluations or self.evaluations[-1]["step"] != self.step_count)
            ):
                self.evaluate()
        finally:
            self.model.train(was_training)  # Why: the caller's mode flag is theirs (step() trains)
            if threads is not None:
                torch.set_num_threads(before)
        self._emit({"kind": "end", "step": self.step_count, "reason": reason, "time": time.time()})
        return self.history
