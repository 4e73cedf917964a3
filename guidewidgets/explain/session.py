"""A widget-free explain session: images, the model's class scores, a bounded map cache and a
background job with progress and cancellation.

``ExplainWidget`` is a thin view over an :class:`Explainer`, as ``GuideWidget`` is over ``Guide``;
a script or a test drives the same session without a browser:

>>> s = Explainer(model, [("cat", img)])
>>> key = s.key(0, "grad-cam", target=s.top_classes(0)[0])
>>> s.compute(key)["map"]          # (H, W) numpy, cached
>>> job = s.submit([s.key(0, "occlusion", 3)]); job.wait()

Images are kept as ``(3, H, W)`` floats in [0, 1] (what a view shows); the model gets them in its
own channel count (grey for a 1-channel first conv, an opaque alpha channel added for 4).
"""

from __future__ import annotations

import collections
import numbers
import threading
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .. import jobs
from ..hooks import FeatureMap, eval_mode, feature_maps, model_lock, model_output
from . import registry
from .registry import MethodInfo, method_info, methods
from .session_texts import ExplainerTexts
from .task_targets import DetectorBoxScore, segmentation_target

Cancelled = jobs.Cancelled  # one cancellation type for the whole package (guidewidgets.jobs)

__all__ = ["Explainer", "MapKey", "Job", "Cancelled", "input_channels"]

Result = dict[str, np.ndarray]  # "map": (H, W); "raw": (3, H, W) for gradient images


class MapKey(NamedTuple):
    """What identifies a computed map in the cache."""

    image: int
    method: str
    layer: str | None
    target: int
    options: tuple[tuple[str, Any], ...] = ()
    raw: bool = False
    region: tuple[int, int, int, int] | None = None  # segmenters: class ``target`` inside this box only


class Job(jobs.Job):
    """The session's background job (a :class:`guidewidgets.jobs.Job`): ``keys`` to compute,
    ``progress`` in [0, 1], ``errors`` (one line per method that failed), ``cancelled``, :meth:`wait`.

    ``on_progress(fraction)`` is called at each progress report (in the job's thread).
    """

    def __init__(
        self,
        keys: Sequence[MapKey],
        on_progress: Callable[[float], None] | None = None,
        work: Callable[[jobs.Job], Any] | None = None,
    ) -> None:
        super().__init__(work or (lambda _job: None), name="Explainer", message="computing maps")
        self.keys = list(keys)
        self.errors: list[str] = []
        self.on_progress = on_progress
        if on_progress is not None:
            self.add_progress_callback(lambda job: on_progress(job.progress))


def input_channels(model: nn.Module) -> int:
    """The channel count the model takes: its first conv's ``in_channels`` (3 without a conv)."""
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return int(m.in_channels)
    return 3


def _is_detections(out: object) -> bool:
    """Whether a model output is a torchvision detector's: a list of dicts with boxes and scores."""
    return isinstance(out, (list, tuple)) and bool(out) and all(isinstance(d, dict) and "boxes" in d for d in out)


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class Explainer(ExplainerTexts):
    """Images, class scores and cached explanation maps of one model.

    Args:
        model: a classifier ((B, K) logits) or a segmenter ((B, K, H, W) logits; class k is
            explained through the sum of its logits over the image).
        images: ``(name, image)`` or ``(name, image, label)`` items, images ``(3, H, W)`` in
            [0, 1]; ``label`` is the true class index when known (shown in headings); true boxes,
            when known, are given to :meth:`add_image` (``boxes``, ``box_labels``) and read with
            :meth:`true_boxes`.
        classes: class names (default: the model's ``classes`` attribute, if any).
        options: per-method keyword options, e.g. ``{"occlusion": {"window": 16}}``.
        cache_size: how many maps stay cached (least recently used dropped first).

    The texts a view shows come from :class:`~guidewidgets.explain.session_texts.ExplainerTexts`.
    """

    def __init__(
        self,
        model: nn.Module,
        images: Sequence[tuple[Any, ...]] = (),
        *,
        classes: Sequence[str] | None = None,
        options: dict[str, dict[str, Any]] | None = None,
        cache_size: int = 256,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if int(cache_size) < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self.model = model
        p = next(model.parameters(), None)
        self.device = p.device if p is not None else torch.device("cpu")
        self.channels = input_channels(model)
        self.classes: list[str] = list(classes if classes is not None else getattr(model, "classes", []) or [])
        self.options = {method_info(k).name: dict(v) for k, v in (options or {}).items()}
        self.names: list[str] = []
        self.images: list[torch.Tensor] = []
        self.labels: list[int | None] = []
        self.boxes: list[tuple[torch.Tensor, torch.Tensor | None] | None] = []  # (N, 4) boxes, (N,) classes
        self.segmentation = False  # set once the model returns (B, K, H, W) logits
        self.detection = False  # set once the model returns torchvision detections; targets are then boxes
        self.detections: dict[int, dict[str, torch.Tensor]] = {}  # image -> boxes, labels, scores (CPU)
        self._probs: dict[int, np.ndarray] = {}
        self._layers: dict[tuple[int, ...], list[FeatureMap]] = {}
        self._cache: collections.OrderedDict[MapKey, Result] = collections.OrderedDict()
        self._cache_size = int(cache_size)
        self._cache_lock = threading.Lock()
        self._job: Job | None = None
        for item in images:
            self.add_image(item[1], item[0], item[2] if len(item) > 2 else None)

    # ---- images and scores ----------------------------------------------------------------------
    def add_image(
        self,
        image: torch.Tensor,
        name: str | None = None,
        label: int | None = None,
        boxes: Any = None,
        box_labels: Any = None,
    ) -> int:
        """Add a ``(3, H, W)`` image in [0, 1]; returns its index. Names are made unique. ``boxes``:
        optional true boxes ``(N, 4)`` ``[x0, y0, x1, y1]`` (exclusive ends) in this image's pixels,
        ``box_labels`` their ``(N,)`` classes (without them every box counts for every class)."""
        b = lab = None
        if boxes is not None:
            b = torch.as_tensor(boxes, dtype=torch.long).reshape(-1, 4).cpu()
            lab = None if box_labels is None else torch.as_tensor(box_labels, dtype=torch.long).reshape(-1).cpu()
            if lab is not None and len(lab) != len(b):
                raise ValueError(f"{len(b)} boxes but {len(lab)} box labels; give one class per box")
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
            shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(
                f"images must be (3, H, W) tensors in [0, 1], got {shape}; widgets.inputs.as_image converts"
            )
        base = name or f"image {len(self.images)}"
        name, k = base, 2
        while name in self.names:
            name, k = f"{base} ({k})", k + 1
        self.names.append(name)
        self.images.append(image.to(self.device))
        self.labels.append(None if label is None else int(label))
        self.boxes.append(None if b is None else (b, lab))
        return len(self.images) - 1

    def _image_index(self, index: object) -> int:
        """``index`` as an int if it names an added image, else a TypeError/ValueError naming the
        valid range (a negative index would silently pick an image from the end)."""
        n = len(self.images)
        valid = f"0 to {n - 1}" if n else "none yet: add one with add_image(image)"
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(f"the image index must be an int (images: {valid}), got {index!r}")
        i = int(index)
        if not 0 <= i < n:
            raise ValueError(f"image index {i} is out of range: this session has {n} images, so use {valid}")
        return i

    def true_boxes(self, index: int, cls: int | None = None) -> torch.Tensor | None:
        """True boxes ``(N, 4)`` of image ``index`` (those of class ``cls`` when the boxes have
        classes); None when no boxes are known for the image."""
        known = self.boxes[self._image_index(index)]
        if known is None:
            return None
        b, lab = known
        return b if cls is None or lab is None else b[lab == int(cls)]

    def model_input(self, index: int) -> torch.Tensor:
        """Image ``index`` as the model takes it: ``(1, C, H, W)`` with the model's channel count."""
        x = self.images[self._image_index(index)][None]
        if self.channels == 1:  # ITU-R BT.601 luma, what PIL's "L" conversion computes
            w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
            return (x * w[None, :, None, None]).sum(1, keepdim=True)
        if self.channels == 4:
            return torch.cat([x, torch.ones_like(x[:, :1])], 1)
        return x

    def class_name(self, k: int) -> str:
        return self.classes[k] if 0 <= k < len(self.classes) else f"class {k}"

    def num_classes(self, index: int = 0) -> int:
        if not self.images:
            return 0
        index = self._image_index(index)
        if self.detection:  # targets are the detected boxes
            return len(self.probabilities(index))
        if self.classes:
            return len(self.classes)
        return len(self.probabilities(index))

    def probabilities(self, index: int) -> np.ndarray:
        """Class scores of an image: softmax for classifiers, predicted-pixel fractions for segmenters."""
        index = self._image_index(index)
        if index not in self._probs:
            with model_lock(self.model), torch.no_grad(), eval_mode(self.model):
                raw = self.model(self.model_input(index))
            if _is_detections(raw):
                return self._detected(index, raw[0])
            out = model_output(raw)
            if out.dim() == 2:
                self._probs[index] = out.softmax(1)[0].float().cpu().numpy()
            elif out.dim() == 4:
                counts = torch.bincount(out[0].argmax(0).flatten(), minlength=out.shape[1])
                self._probs[index] = (counts.float() / counts.sum()).cpu().numpy()
                self.segmentation = True
            else:
                raise ValueError(
                    "the explain session needs logits of shape (B, K) (classifier) or (B, K, H, W) (segmenter); "
                    f"this model returned shape {tuple(out.shape)}"
                )
        return self._probs[index]

    def _detected(self, index: int, det: Any) -> np.ndarray:
        d = {k: v.detach().cpu() for k, v in det.items()}
        self.detection = True
        if not len(d["boxes"]):  # not stored: the view reports the error and has nothing to explain
            raise ValueError(
                "the detector found no box in this image; build it with a lower box_score_thresh "
                "(e.g. box_score_thresh=0.0) or try another image"
            )
        self.detections[index] = d
        self._probs[index] = d["scores"].float().numpy()
        return self._probs[index]

    def target_name(self, index: int, target: int) -> str:
        """What ``target`` means on image ``index``: a class name, or a detector's ``"box j: label"``."""
        index = self._image_index(index)
        if not self.detection or index not in self.detections:
            return self.class_name(target)
        d = self.detections[index]
        return f"box {target}: {self.class_name(int(d['labels'][target]))}" if target < len(d["boxes"]) else "?"

    def top_classes(self, index: int, k: int | None = None) -> list[int]:
        """Classes by score, best first (segmenters: the largest non-background class first)."""
        p = self.probabilities(index)
        order = [int(c) for c in np.argsort(-p, kind="stable")]
        if self.segmentation and len(order) > 1 and order[0] == 0 and p[order[1]] > 0:
            order = order[1:] + [0]  # the biggest object, not the background, is the interesting default
        return order if k is None else order[:k]

    def layers(self, index: int = 0) -> list[FeatureMap]:
        """Spatial feature maps of the model on image ``index`` (one scan per input shape)."""
        x = self.model_input(index)
        shape = tuple(x.shape)
        if shape not in self._layers:
            with model_lock(self.model):
                self._layers[shape] = feature_maps(self.model, x)
        return self._layers[shape]

    # ---- maps -----------------------------------------------------------------------------------
    def info(self, method: str) -> MethodInfo:
        return method_info(method)

    def key(
        self,
        image: int,
        method: str,
        target: int,
        layer: str | None = None,
        raw: bool = False,
        region: Sequence[int] | None = None,
    ) -> MapKey:
        """The cache key of a request; ``layer``/``raw`` are dropped where the method ignores them.
        ``region`` (x0, y0, x1, y1), exclusive ends, image pixels: a segmenter's class ``target``
        summed inside that box only (:func:`~guidewidgets.explain.task_targets.segmentation_target`)."""
        info = method_info(method)
        image = self._image_index(image)
        return MapKey(
            image,
            info.name,
            (layer or None) if info.uses_layer else None,
            self._target_index(image, target),
            tuple(sorted(self.options.get(info.name, {}).items())),
            bool(raw and info.has_image),
            None if region is None else (int(region[0]), int(region[1]), int(region[2]), int(region[3])),
        )

    def _target_index(self, image: int, target: object) -> int:
        """``target`` as an int class (a box for detectors) of image ``image``; its upper bound is
        checked once the count is known without a forward (the method checks it otherwise)."""
        what = "box" if self.detection else "class"
        if not isinstance(target, numbers.Integral) or isinstance(target, bool):
            raise TypeError(f"target must be an int {what} index, got {target!r}")
        t = int(target)
        k = self.num_classes(image) if image in self._probs or (self.classes and not self.detection) else None
        if t < 0 or (k is not None and t >= k):
            bound = f"from 0 to {k - 1}" if k else "from 0 up"
            raise ValueError(f"target {what} {t} is out of range for image {image}: use a {what} index {bound}")
        return t

    def get(self, key: MapKey) -> Result | None:
        """A cached result (marked recently used), or None."""
        with self._cache_lock:
            res = self._cache.get(key)
            if res is not None:
                self._cache.move_to_end(key)
            return res

    def __contains__(self, key: MapKey) -> bool:
        return key in self._cache

    def clear(self) -> None:
        """Forget every cached map."""
        with self._cache_lock:
            self._cache.clear()

    def compute(self, key: MapKey, progress: Callable[[float], None] | None = None) -> Result:
        """The result of ``key``, from the cache or computed now (and cached)."""
        res = self.get(key)
        if res is not None:
            return res
        kw = dict(key.options)
        if progress is not None and method_info(key.method).slow:
            kw["progress"] = progress
        if key.raw:
            kw["raw"] = True
        with model_lock(self.model):
            x = self.model_input(key.image)
            target: Any = key.target
            model, layer = self.model, key.layer
            if self.detection:  # the chosen box's score, as a one-output model (explained with target 0)
                d = self.detections[key.image]
                model, target = DetectorBoxScore(self.model, d["boxes"][key.target], d["labels"][key.target]), 0
                layer = None if layer is None else "detector." + layer
            if key.region is not None:
                target = segmentation_target(key.target, box=key.region, size=(x.shape[-2], x.shape[-1]))
            m = registry.explain(model, x, key.method, target=target, layer=layer, **kw)
        a = m[0].detach().float().cpu().numpy()
        res = {"raw": a, "map": np.abs(a).max(0)} if key.raw else {"map": a}
        with self._cache_lock:  # a background job stores while the kernel thread reads
            self._cache[key] = res
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return res

    def compute_many(self, keys: Sequence[MapKey], job: jobs.Job | None = None) -> list[str]:
        """Compute each key; a failing method is reported (``"<title> failed: ..."``), the rest still run.
        With ``job``, progress goes to ``job.report`` (which raises :class:`Cancelled` after a cancel)."""
        errors = []
        n = max(1, len(keys))
        for j, k in enumerate(keys):

            def progress(f: float, j: int = j) -> None:
                if job is not None:
                    job.report((j + float(f)) / n)

            try:
                self.compute(k, progress)
            except Cancelled:
                raise
            except Exception as err:
                errors.append(f"{method_info(k.method).title} failed: {_error_text(err)}")
        return errors

    def submit(
        self,
        keys: Sequence[MapKey],
        on_done: Callable[[Job], None] | None = None,
        on_progress: Callable[[float], None] | None = None,
    ) -> Job:
        """Compute ``keys`` in a background thread; a previous job is cancelled first.

        ``on_progress(fraction)`` and ``on_done(job)`` run in that thread; ``on_done`` also after a
        cancel or an error (``job.cancelled``, ``job.errors`` say which).
        """
        self.cancel()

        def work(job: jobs.Job) -> None:
            assert isinstance(job, Job)
            job.errors = self.compute_many(job.keys, job)

        job = Job(keys, on_progress, work)

        def finished(job: jobs.Job) -> None:
            assert isinstance(job, Job)
            if job.error is not None:  # a bug here must not die silently in a thread
                job.errors = [job.error_text]

        job.add_done_callback(finished)
        if on_done is not None:
            job.add_done_callback(lambda _job: on_done(job))
        self._job = job
        job.start()
        return job

    def cancel(self) -> None:
        """Cancel the running background job, if any (it stops at its next progress report)."""
        if self._job is not None:
            self._job.cancel()

    @property
    def job(self) -> Job | None:
        """The last submitted job."""
        return self._job

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background job is done; True if nothing runs any more."""
        return self._job.wait(timeout) if self._job is not None else True

    def close(self, timeout: float | None = 1.0) -> bool:
        """Cancel the background job and wait up to ``timeout`` s for it to let go of the model;
        True if nothing runs any more. The session stays usable (a new request starts a new job)."""
        self.cancel()
        return self.wait(timeout)

    @staticmethod
    def methods() -> list[str]:
        return methods()
