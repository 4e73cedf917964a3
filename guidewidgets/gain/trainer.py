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

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .. import hooks
from .attention import _name_of, attention, check_layer_output, masked_image, soft_mask
from .checks import (
    as_labels,
    check_class_counts,
    check_eval_sets,
    check_images,
    check_labels,
    check_mask_rows,
    check_options,
    check_probes,
    float_images,
    training_device,
)
from .losses import GainConfig, check_number, check_whole, gain_losses

__all__ = ["GainTrainer", "Callback", "accuracy"]

_BUSY = (
    "this trainer is already training (fit() or step() runs in another thread); call stop() and wait for it, "
    "or build a second GainTrainer"
)
_TERMS = {
    "cl": "L_cl (classification)",
    "am": "L_am (attention mining)",
    "e": "L_e (pixel labels)",
    "total": "the loss",
}

#: A callback receives one event dict: ``kind`` is "step", "probe", "eval" or "end" (see GainTrainer).
Callback = Callable[[dict[str, Any]], None]


def _non_finite_term(losses: dict[str, float]) -> str | None:
    """The first loss term that is NaN or inf, by name, or None."""
    return next((name for key, name in _TERMS.items() if not math.isfinite(losses[key])), None)


def _all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return not flags or bool(torch.stack(flags).all())  # one device sync, not one per tensor


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy (single-label) of ``model`` in eval mode; the model's mode is restored."""
    if len(images) == 0:
        raise ValueError("cannot score an empty set; the test set has no images of the requested kind")
    device = next(model.parameters()).device
    correct = 0
    with hooks.model_lock(model), hooks.eval_mode(model):
        for s in range(0, len(images), batch_size):
            out = hooks.model_output(model(float_images(images[s : s + batch_size]).to(device)))
            correct += int((out.argmax(1).cpu() == labels[s : s + batch_size]).sum())
    return correct / len(images)


class GainTrainer:
    """Train ``model`` with GAIN (``config.alpha > 0``), GAIN_ext (``masks`` given) or plainly.

    Everything is checked when the trainer is built (a ValueError or TypeError naming the fix), so
    that ``fit()`` in a widget's background thread does not fail late: NaN or inf pixels, masks
    outside [0, 1], knobs that are not finite or out of range, non-integer counts, an empty set,
    images, probes or eval sets the model cannot take (one image each, eval mode, no gradient).

    Args:
        model: a classifier (B, C, H, W) -> (B, K); trained in place.
        layer: the feature layer (dotted name or module) whose Grad-CAM is the attention.
        images, labels: the training set: images (N, C, H, W) float in [0, 1] or uint8; labels
            (N,) class indices (a tensor or a list of ints) or (N, K) multi-hot. masks: (N, H, W)
            pixel labels of each image's class in [0, 1] (or (N, K, H, W) for multi-hot labels),
            used where ``has_mask`` (N,) is True.
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
        labels: torch.Tensor | Sequence[int],
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
        probe_labels: torch.Tensor | Sequence[int] | None = None,
        probe_every: int = 10,
        eval_sets: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        eval_every: int | None = None,
        callbacks: Sequence[Callback] = (),
        mine: bool | None = None,
    ) -> None:
        # Everything is checked here, before the first step: a widget runs fit() in a background
        # thread, where a late error (or a silent NaN) is far from the cell that caused it.
        if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
            raise TypeError(f"model must be a torch nn.Module with weights to train, got {type(model).__name__}")
        check_images(images, "images")
        labels = as_labels(labels, "labels")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels; give one label per image")
        self.batch_size = check_whole("batch_size", batch_size, 1, "images per step")
        self.mask_batch = check_whole("mask_batch", mask_batch, 0, "pixel-labelled images added to every step")
        self.epochs = check_whole("epochs", epochs, 1, "passes over the training set that fit() runs")
        self.seed = check_whole("seed", seed, 0)
        self.probe_every = check_whole("probe_every", probe_every, 1, "steps between probe events")
        self.eval_every = None if eval_every is None else check_whole("eval_every", eval_every, 1, "or None")
        # Why at most 1: AdamW moves every weight by about lr per step, and lr / (1 - beta1) must stay a float.
        self.lr = check_number("lr", lr, 0.0, strict=True, high=1.0, why="AdamW's learning rate, e.g. 1e-3")
        self.weight_decay = check_number("weight_decay", weight_decay, 0.0, why="AdamW's weight decay")
        check_options(config, mine, callbacks)
        self.config = config or GainConfig()
        self.config.check()
        self.model = model
        self.module = hooks.get_layer(model, layer)
        self.layer = layer
        self.device = training_device(device, model)
        model.to(self.device)
        classes = self._check_layer(images[:1], "images")
        check_labels(labels, classes, "labels")
        self.images, self.labels = images, labels
        check_class_counts(model, labels)
        self.masks, self.mask_rows = check_mask_rows(self, masks, has_mask)
        self.probes, self.probe_labels = check_probes(self, probes, probe_labels, classes)
        self.eval_sets = check_eval_sets(self, eval_sets, classes)
        self.callbacks = list(callbacks)
        self.mine = mine
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)

        self.net: nn.Module = self._distribute(model, len(images))
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
        # Why not the model lock: fit() runs for minutes and the model lock is re-entrant, so a
        # second fit() in the same or another thread would interleave steps instead of failing.
        self._training = threading.Lock()

    def _distribute(self, model: nn.Module, n: int) -> nn.Module:
        """Under ``torchrun`` (``torch.distributed`` initialised): the rank and world size, the
        batch checked against them, and the model wrapped in DDP; the model itself otherwise."""
        dist = torch.distributed
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if not self.distributed:
            return model
        if self.batch_size % self.world:
            raise ValueError(f"batch_size {self.batch_size} must divide by the world size {self.world}")
        if n < self.batch_size:
            raise ValueError(
                f"{n} images make no complete batch of {self.batch_size}; under torchrun an incomplete "
                "batch is dropped, so use a smaller batch_size or more images"
            )
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def _check_layer(self, image: torch.Tensor, what: str) -> int:
        """Refuse a layer without a spatial map, or ``image`` the model cannot take, now (one image,
        eval mode, no gradient), not at the first step of a background run; returns the number of
        the model's outputs."""
        with (
            torch.no_grad(),
            hooks.model_lock(self.model),
            hooks.eval_mode(self.model),
            hooks.capture(self.model, self.module, cut=False) as cap,
        ):
            logits = self._forward_one(image, what)
        name = self.layer if isinstance(self.layer, str) else _name_of(self.model, self.module)
        check_layer_output(name, cap.raw, logits)
        return int(logits.shape[1])

    def _forward_one(self, image: torch.Tensor, what: str) -> torch.Tensor:
        """The model's logits for one image (the caller holds the lock, eval mode, no grad); a
        ValueError naming ``what`` and the fix when the model cannot run on it."""
        try:
            return hooks.model_output(self.model(float_images(image).to(self.device)))
        except (RuntimeError, AssertionError, IndexError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            conv = next((m for m in self.model.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
            if conv is not None and conv.in_channels != image.shape[1]:
                fix = (
                    f"the model's first convolution takes {conv.in_channels} channels but {what} have "
                    f"{image.shape[1]}: convert them (grey to RGB: x.expand(-1, 3, -1, -1); RGBA to RGB: x[:, :3])"
                )
            else:
                fix = "give images of the size and channel count the model was built for"
            raise ValueError(f"the model cannot run on {what} of shape {tuple(image.shape)} ({first}); {fix}") from err

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
        """One optimisation step on the next global batch; returns (and records) its losses.

        A loss, gradient or weight that is not finite stops it with a ValueError naming the step
        and the term; the model's weights and statistics are then those before the step.
        """
        if not self._training.acquire(blocking=False):
            raise RuntimeError(_BUSY)
        try:
            return self._step()
        finally:
            self._training.release()

    def _step(self) -> dict[str, Any]:
        cursor = self._mask_cursor
        idx, extra = self._batch_indices()
        rows = torch.cat([idx, extra])
        x = float_images(self.images[rows]).to(self.device)
        y = self.labels[rows].to(self.device)
        masks = has = None
        if self.masks is not None:
            masks = self.masks[rows].float().to(self.device)
            has = torch.zeros(len(rows), dtype=torch.bool, device=self.device)
            has[len(idx) :] = True
        with self._lock:
            # Why a copy: the forward moves BatchNorm's statistics and the update the weights before
            # either can be checked; a diverged step must leave the last finite model, not NaN.
            saved = [t.detach().clone() for t in self._state()]
            self.model.train()
            losses = gain_losses(self.net, x, y, self.module, self.config, masks=masks, has_mask=has, mine=self.mine)
            self.optimizer.zero_grad(set_to_none=True)
            losses.total.backward()  # also when not finite: under DDP every process must join the all-reduce
            values = losses.numbers()
            bad = _non_finite_term(values) or self._non_finite_grads()
            if bad is None:
                self.optimizer.step()
                if not _all_finite(self.model.parameters()):
                    bad = "the weights (the update overflowed)"
            if bad is not None:
                with torch.no_grad():
                    for t, old in zip(self._state(), saved):
                        t.copy_(old)
                self.optimizer.zero_grad(set_to_none=True)
                self._mask_cursor = cursor
                raise ValueError(
                    f"training diverged at step {self.step_count + 1}: {bad} is not finite "
                    f"({', '.join(f'{k} {v:.4g}' for k, v in values.items())}); stopped with the weights of step "
                    f"{self.step_count}. Lower lr (now {self.lr:g})"
                    + (f" or weight_decay (now {self.weight_decay:g})" if self.weight_decay else "")
                    + ", or check the images and masks"
                )
        logits = losses.attention.logits if losses.attention is not None else None
        record: dict[str, Any] = {
            "kind": "step",
            "step": self.step_count + 1,
            "epoch": self.step_count / self.steps_per_epoch,
            "losses": values,
        }
        if logits is not None and y.dim() == 1:
            record["accuracy"] = float((logits.argmax(1) == y).float().mean())
        self.step_count += 1
        self.history.append(record)
        self._emit(record)
        if self._stop.is_set():
            return record  # Why: a stop (a closing widget) should not wait for probes or an evaluation
        if self.probes is not None and self.step_count % self.probe_every == 0:
            self._emit({"kind": "probe", "step": self.step_count, **self.probe()})
        if self.eval_every and self.step_count % self.eval_every == 0:
            self.evaluate()
        return record

    def _state(self) -> list[torch.Tensor]:
        return [*self.model.parameters(), *self.model.buffers()]

    def _non_finite_grads(self) -> str | None:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        return None if _all_finite(grads) else "the gradient"

    def _emit(self, event: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        for cb in self.callbacks:
            cb(event)

    # --- looking in ------------------------------------------------------------------------------

    def probe(
        self, images: torch.Tensor | None = None, labels: torch.Tensor | Sequence[int] | None = None
    ) -> dict[str, torch.Tensor]:
        """Attention maps (P, H, W), soft masks, masked images I* (P, 3, H, W) and predictions of the
        probe images (or ``images``), for ``labels`` (the prediction when None); eval mode, no
        weight gradients written."""
        x = self.probes if images is None else images
        if x is None:
            raise ValueError("no probe images: pass probes=... to GainTrainer or images=... here")
        lab = self.probe_labels
        if images is not None:
            check_images(images, "images")
            lab = None if labels is None else as_labels(labels, "labels")
            if lab is not None and (lab.dim() != 1 or len(lab) != len(images)):
                raise ValueError(f"labels must be ({len(images)},) class indices, one per image, or None")
        x = float_images(x).to(self.device)
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
        train/eval flag are restored afterwards. One fit at a time: a second call while one runs
        raises RuntimeError."""
        steps = None if steps is None else check_whole("steps", steps, 1, "how many more steps to run")
        threads = None if threads is None else check_whole("threads", threads, 1, "torch's intra-op threads")
        if not self._training.acquire(blocking=False):
            raise RuntimeError(_BUSY)
        try:
            reason = self._fit(steps, threads)
        finally:
            self._training.release()
        self._emit({"kind": "end", "step": self.step_count, "reason": reason, "time": time.time()})
        return self.history

    def _fit(self, steps: int | None, threads: int | None) -> str:
        end = self.total_steps if steps is None else self.step_count + steps
        before = torch.get_num_threads()
        was_training = self.model.training
        if threads is not None:
            torch.set_num_threads(threads)
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
                self._step()
            if (
                self.eval_sets
                and reason == "done"
                and not self._stop.is_set()
                and (not self.evaluations or self.evaluations[-1]["step"] != self.step_count)
            ):
                self.evaluate()
        finally:
            self.model.train(was_training)  # Why: the caller's mode flag is theirs (step() trains)
            if threads is not None:
                torch.set_num_threads(before)
        return reason
