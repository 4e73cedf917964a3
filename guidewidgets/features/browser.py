"""A widget-free feature browser: one model over a set of images, with per-layer caches and the slow
parts (top patches, embeddings, t-SNE, activation maximization) as background jobs.

``FeatureWidget`` is a thin view over a :class:`FeatureBrowser`; a script drives the same session:

>>> b = FeatureBrowser()                          # the embedded classifier on 256 ShapeScenes
>>> b.activations("features", 0).shape            # (C, h, w), computed now (one forward)
>>> job = b.submit_projection("features", "tsne"); job.wait(); b.cached("projection", "features", "tsne")
>>> b.neighbours("features", 0)                   # nearest images in feature space, then pixel space
>>> img, unit = b.neuron_image("features", 5, 0)  # guided backprop of channel 5's strongest unit on image 0

Every ``submit_*`` returns a :class:`~guidewidgets.jobs.Job` whose ``message`` says what it does
("Computing t-SNE of features for 256 images..."); a newer request of the same kind cancels the
older one, the same request twice computes once, and results land in the caches. A call that
needs the model now (:meth:`activations` of an image not seen yet) first stops the jobs that hold
the model's lock (they are cheap to restart and finish their cached stages first).
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import hooks, jobs
from ..checks import check_int
from ..explain.neuron_attribution import Neuron, neuron_gradient, neuron_guided_backprop
from ._common import batches, model_device
from .maximize import maximize
from .patches import TopPatches, top_patches
from .space import Embeddings, embed, neighbours, pixels, project

__all__ = ["FeatureBrowser", "PROJECTIONS", "NEURON_RULES", "NEURON_UNITS"]

#: The scatter's projections: name -> title.
PROJECTIONS = {"pca": "PCA", "tsne": "t-SNE"}
#: How a neuron's image is back-propagated (:meth:`FeatureBrowser.neuron_image`): name -> title.
NEURON_RULES = {"guided": "Guided backprop", "gradient": "Gradient"}
#: Which unit of the channel: name -> title.
NEURON_UNITS = {"max": "Strongest position", "channel": "Whole channel"}
_ACTIVATIONS_KEPT = 64  # (layer, image) activation maps kept (least recently used dropped)
_MODEL_SLOTS = ("layer", "maximize", "projection")

JobCallback = Callable[[jobs.Job], Any]


class FeatureBrowser:
    """Activations, top patches, embeddings, projections and maximizing images of a CNN's channels.

    Args:
        model: a CNN (default: the embedded ``zoo.load("shapes-classifier")``).
        data: images to search: a ShapeScenes, a (N, 3, H, W) tensor or a sequence of images / dicts
            with "image" (default: ``max_images`` ShapeScenes); at most ``max_images`` are used.
        k: top patches per channel; steps: activation-maximization steps.
    """

    def __init__(
        self, model: nn.Module | None = None, data: Any = None, *, k: int = 8, steps: int = 96, max_images: int = 256
    ) -> None:
        from .. import zoo

        self.k = check_int(k, "k (top patches per channel)", 1)
        self.steps = check_int(steps, "steps (activation-maximization steps)", 1)
        max_images = check_int(max_images, "max_images", 2)
        self.model = model if model is not None else zoo.load("shapes-classifier")
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module (a CNN), got {type(self.model).__name__}")
        data = data if data is not None else zoo.ShapeScenes(max_images, seed=1)
        xs, ys = [], []
        for _start, x, y in batches(data, 64):
            xs.append(x)
            ys.append(y)
            if sum(len(v) for v in xs) >= max_images:
                break
        self.images = torch.cat(xs)[:max_images].float()
        self.labels = torch.cat(ys)[:max_images]
        maps = hooks.feature_maps(self.model, self.images[:1])
        if not maps:
            raise ValueError("this model has no layer with a spatial feature map; a feature browser needs a CNN")
        self.layers = [fm.name for fm in maps]
        self.channels = {fm.name: fm.shape[0] for fm in maps}
        default = getattr(self.model, "default_explain_layer", "")
        self.default_layer = default if default in self.layers else self.layers[-1]
        self.classes: list[str] | None = getattr(self.model, "classes", None)
        self.pixels = pixels(self.images)
        # Why now: importing scikit-learn takes ~1 s the first time and an import cannot be
        # cancelled, so a job doing it would hold close() past its bound.
        _install_tsne_hook()
        self._acts: collections.OrderedDict[tuple[str, int], torch.Tensor] = collections.OrderedDict()
        self._patches: dict[str, TopPatches] = {}
        self._embeddings: dict[str, Embeddings] = {}
        self._projections: dict[tuple[str, str], np.ndarray] = {}
        self._maximized: dict[tuple[str, int], torch.Tensor] = {}
        self._neurons: collections.OrderedDict[tuple[str, int, int, str, str], tuple[torch.Tensor, Neuron]] = (
            collections.OrderedDict()
        )
        self._neighbours: dict[tuple[str, int, int], list[int]] = {}
        self._pixel_neighbours: dict[tuple[int, int], list[int]] = {}
        self._jobs = jobs.JobGroup("FeatureBrowser")
        self._lock = threading.Lock()
        self._users: set[jobs.Job] = set()  # jobs inside a section that holds the model's lock

    # ---- checks ---------------------------------------------------------------------------------
    def check_layer(self, layer: object) -> str:
        """``layer`` if it is one of :attr:`layers`, else a ValueError listing them."""
        if not isinstance(layer, str) or layer not in self.channels:
            raise ValueError(f"{layer!r} is no feature-map layer; pick one of {self.layers}")
        return layer

    def check_channel(self, layer: str, channel: object) -> int:
        n = self.channels[self.check_layer(layer)]
        if isinstance(channel, bool) or not isinstance(channel, (int, np.integer)) or not 0 <= int(channel) < n:
            raise ValueError(f"channel {channel!r} out of range: {layer} has {n} (0 to {n - 1})")
        return int(channel)

    def check_image(self, index: object) -> int:
        n = len(self.images)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= int(index) < n:
            raise ValueError(f"there is no image {index!r} (0..{n - 1})")
        return int(index)

    def check_projection(self, method: object) -> str:
        if method not in PROJECTIONS:
            raise ValueError(f"projection must be 'pca' or 'tsne', got {method!r}")
        return str(method)

    def class_name(self, index: int) -> str:
        """The label of image ``index`` in words (its number without class names; "?" if unknown)."""
        lab = int(self.labels[index])
        if lab < 0:
            return "?"
        return self.classes[lab] if self.classes is not None and lab < len(self.classes) else str(lab)

    # ---- caches ---------------------------------------------------------------------------------
    def cached(self, kind: str, *key: Any) -> Any:
        """A cached result, or None: ``("activations", layer, image)``, ``("patches", layer)``,
        ``("embedding", layer)``, ``("projection", layer, method)``, ``("maximized", layer, channel)``,
        ``("neuron", layer, channel, image, rule, unit)``."""
        stores: dict[str, Any] = {
            "activations": self._acts,
            "patches": self._patches,
            "embedding": self._embeddings,
            "projection": self._projections,
            "maximized": self._maximized,
            "neuron": self._neurons,
        }
        if kind not in stores:
            raise ValueError(f"kind must be one of {list(stores)}, got {kind!r}")
        return stores[kind].get(key[0] if len(key) == 1 else tuple(key))

    @contextlib.contextmanager
    def _model_use(self, job: jobs.Job | None) -> Iterator[None]:
        if job is not None:
            with self._lock:
                self._users.add(job)
        try:
            yield
        finally:
            if job is not None:
                with self._lock:
                    self._users.discard(job)

    def _preempt(self, timeout: float = 1.0) -> None:
        """Stop the jobs that hold the model's lock (activation maximization holds it for its whole
        run), so that a call the user waits for does not wait seconds behind them."""
        with self._lock:
            users = list(self._users)
        for job in users:
            job.cancel()
        for job in users:
            job.wait(timeout)

    # ---- computations (now, cached) -------------------------------------------------------------
    def activations(self, layer: str, index: int) -> torch.Tensor:
        """``layer``'s activation maps (C, h, w) for image ``index``, in channel order."""
        from .filters import activation_maps

        key = (self.check_layer(layer), self.check_image(index))
        maps = self._acts.get(key)
        if maps is None:
            self._preempt()
            maps, _ = activation_maps(self.model, layer, self.images[key[1]], sort=None)
            self._acts[key] = maps
            while len(self._acts) > _ACTIVATIONS_KEPT:
                self._acts.popitem(last=False)
        return maps

    def neuron_image(
        self, layer: str, channel: int, index: int, rule: str = "guided", unit: str = "max"
    ) -> tuple[torch.Tensor, Neuron]:
        """What ``channel`` of ``layer`` responds to in image ``index``: the signed (C, H, W) image of
        the unit's guided backprop (``rule="guided"``, Springenberg et al.) or plain gradient
        (``"gradient"``), and the unit. ``unit="max"``: the channel at its strongest position on this
        image (the visualization lecture's single neuron); ``"channel"``: the channel's sum over
        positions. Computed now (one forward up to the layer and one backward), cached."""
        if rule not in NEURON_RULES or unit not in NEURON_UNITS:
            raise ValueError(
                f"rule must be one of {list(NEURON_RULES)} and unit one of {list(NEURON_UNITS)}, got {rule!r}, {unit!r}"
            )
        key = (self.check_layer(layer), self.check_channel(layer, channel), self.check_image(index), rule, unit)
        found = self._neurons.get(key)
        if found is None:
            neuron = Neuron(key[1])
            if unit == "max":
                a = self.activations(key[0], key[2])[key[1]]
                neuron = Neuron(key[1], divmod(int(a.argmax()), a.shape[-1]))
            self._preempt()
            fn = neuron_guided_backprop if rule == "guided" else neuron_gradient
            x = self.images[key[2]][None].to(model_device(self.model))
            found = fn(self.model, x, neuron, key[0], raw=True)[0].detach().cpu(), neuron
            self._neurons[key] = found
            while len(self._neurons) > _ACTIVATIONS_KEPT:
                self._neurons.popitem(last=False)
        return found

    def patches(self, layer: str, job: jobs.Job | None = None, share: tuple[float, float] = (0.0, 1.0)) -> TopPatches:
        """The top ``k`` patches of every channel of ``layer`` over the images."""
        layer = self.check_layer(layer)
        if layer not in self._patches:
            with self._model_use(job):
                found = top_patches(self.model, layer, self.images, k=self.k, progress=_reporter(job, share))
            self._patches[layer] = found
        return self._patches[layer]

    def embedding(self, layer: str, job: jobs.Job | None = None, share: tuple[float, float] = (0.0, 1.0)) -> Embeddings:
        """Every image's ``layer`` map, average-pooled: (N, C) vectors with the images' labels."""
        layer = self.check_layer(layer)
        if layer not in self._embeddings:
            with self._model_use(job):
                e = embed(self.model, self.images, layer=layer, progress=_reporter(job, share))
            e.labels = self.labels
            self._embeddings[layer] = e
        return self._embeddings[layer]

    def projection(self, layer: str, method: str = "pca", job: jobs.Job | None = None) -> np.ndarray:
        """(N, 2) coordinates of the images' ``layer`` embedding by PCA or t-SNE (seeded)."""
        key = (self.check_layer(layer), self.check_projection(method))
        if key not in self._projections:
            e = self.embedding(layer, job, (0.0, 0.3))
            with _tsne_reporting(None if job is None else lambda f: job.report(0.3 + 0.7 * f)):
                xy = project(e, "tsne" if method == "tsne" else "pca", seed=0)
            self._projections[key] = np.asarray(xy, dtype=np.float64)
        return self._projections[key]

    def neighbours(self, layer: str, index: int, k: int | None = None) -> tuple[list[int], list[int]]:
        """Image ``index``'s ``k`` nearest neighbours (default ``k // 2 + 1``) in feature space, then
        in pixel space; empty lists when there is no other image."""
        q = self.check_image(index)
        k = min(self.k // 2 + 1 if k is None else check_int(k, "k", 1), len(self.images) - 1)
        if k < 1:
            return [], []
        key = (self.check_layer(layer), q, k)
        if key not in self._neighbours:
            feats = neighbours(self.embedding(layer), q, k=k)[0].tolist()
            if (q, k) not in self._pixel_neighbours:  # the same for every layer; a large distance matrix
                self._pixel_neighbours[(q, k)] = neighbours(self.pixels, q, k=k)[0].tolist()
            self._neighbours[key] = feats
        return list(self._neighbours[key]), list(self._pixel_neighbours[(q, k)])

    def maximized(self, layer: str, channel: int, job: jobs.Job | None = None) -> torch.Tensor:
        """The image (C, H, W) that maximises ``channel`` of ``layer`` (Fourier parametrisation, jitter)."""
        key = (self.check_layer(layer), self.check_channel(layer, channel))
        if key not in self._maximized:
            size = (int(self.images.shape[-2]), int(self.images.shape[-1]))
            with self._model_use(job):
                res = maximize(
                    self.model, key[1], kind="channel", layer=key[0], size=size, steps=self.steps, lr=0.2,
                    param="fourier", jitter=2, progress=_reporter(job),
                )  # fmt: skip
            self._maximized[key] = res.images[0]
        return self._maximized[key]

    # ---- background -----------------------------------------------------------------------------
    def submit_layer(
        self, layer: str, on_done: JobCallback | None = None, on_progress: JobCallback | None = None
    ) -> jobs.Job:
        """Top patches, then the embedding of ``layer``, in the background."""
        layer = self.check_layer(layer)
        n = len(self.images)

        def work(job: jobs.Job) -> None:
            job.report(0.0, f"Searching the top patches of {layer} over {n} images...")
            self.patches(layer, job, (0.0, 0.5))
            job.report(0.5, f"Embedding {n} images at {layer}...")
            self.embedding(layer, job, (0.5, 1.0))

        first = "Searching the top patches" if layer not in self._patches else "Embedding"
        msg = f"{first} of {layer} for {n} images..."
        return self._jobs.submit("layer", layer, work, message=msg, on_done=on_done, on_progress=on_progress)

    def submit_projection(
        self,
        layer: str,
        method: str = "pca",
        on_done: JobCallback | None = None,
        on_progress: JobCallback | None = None,
    ) -> jobs.Job:
        """The ``method`` projection of ``layer``'s embedding, in the background (after the layer's job)."""
        layer, method = self.check_layer(layer), self.check_projection(method)
        msg = f"Computing {PROJECTIONS[method]} of {layer} for {len(self.images)} images..."
        after = self._after_layer(layer)
        return self._jobs.submit(
            "projection", (layer, method), lambda job: self.projection(layer, method, job),
            message=msg, after=after, on_done=on_done, on_progress=on_progress,
        )  # fmt: skip

    def submit_maximize(
        self, layer: str, channel: int, on_done: JobCallback | None = None, on_progress: JobCallback | None = None
    ) -> jobs.Job:
        """The image maximising ``channel`` of ``layer``, in the background (after the layer's job)."""
        key = (self.check_layer(layer), self.check_channel(layer, channel))
        msg = f"Maximising channel {key[1]} of {key[0]} ({self.steps} steps)..."
        return self._jobs.submit(
            "maximize", key, lambda job: self.maximized(key[0], key[1], job),
            message=msg, after=self._after_layer(layer), on_done=on_done, on_progress=on_progress,
        )  # fmt: skip

    def _after_layer(self, layer: str) -> list[jobs.Job]:
        # Why wait for it: both need the model's lock; the layer's panels come first.
        job = self._jobs.job("layer")
        return [job] if job is not None and self._jobs.key("layer") == layer and job.running else []

    def job(self, slot: str) -> jobs.Job | None:
        """The last job of ``slot``: ``"layer"``, ``"projection"`` or ``"maximize"``."""
        return self._jobs.job(slot)

    def job_key(self, slot: str) -> Any:
        """What the last job of ``slot`` was asked for (a layer, (layer, method), (layer, channel))."""
        return self._jobs.key(slot)

    @property
    def busy(self) -> bool:
        """True while a background job runs."""
        return self._jobs.running

    def cancel(self, slot: str | None = None) -> None:
        """Cancel the background job of ``slot`` (default: all); each stops at its next progress report."""
        self._jobs.cancel(slot)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every background job is done; True if nothing runs any more."""
        return self._jobs.wait(timeout)

    def close(self, timeout: float | None = 1.0) -> bool:
        """Cancel every job, refuse new ones and wait up to ``timeout`` s; True if all have ended."""
        return self._jobs.close(timeout)


def _reporter(job: jobs.Job | None, share: tuple[float, float] = (0.0, 1.0)) -> Callable[[int, int], None] | None:
    """A ``progress(done, total)`` for the features functions that reports into ``share`` of ``job``."""
    if job is None:
        return None
    lo, hi = share
    return lambda done, total: job.report(lo + (hi - lo) * done / max(1, total))


# ---- t-SNE progress and cancel ---------------------------------------------------------------------
# scikit-learn's TSNE has no callback: its optimiser loop is the private module function
# ``_gradient_descent``, looked up at each call. A wrapper installed once reports each iteration to
# the reporter of the calling thread (if any), which raises jobs.Cancelled to stop it; other callers
# and other threads get the original function unchanged. If scikit-learn renames it, t-SNE still
# runs, without progress (and a cancel then takes effect when it returns).
_local = threading.local()
_install_lock = threading.Lock()
_REPORT_EVERY = 10  # iterations between reports: ~10 ms of t-SNE on a few hundred points


def _install_tsne_hook() -> bool:
    with _install_lock:
        try:
            mod = importlib.import_module("sklearn.manifold._t_sne")
            from sklearn.manifold import TSNE
        except ImportError:
            return False
        orig = getattr(mod, "_gradient_descent", None)
        if orig is None:
            return False
        if getattr(orig, "_guidewidgets", False):
            return True
        total = max(1, int(getattr(TSNE(), "max_iter", None) or 1000))

        def gradient_descent(objective: Any, p0: Any, *args: Any, **kwargs: Any) -> Any:
            report = getattr(_local, "report", None)
            if report is None:
                return orig(objective, p0, *args, **kwargs)
            count = [int(kwargs.get("it", args[0] if args else 0))]

            def reported(p: Any, *a: Any, **kw: Any) -> Any:
                count[0] += 1
                if count[0] % _REPORT_EVERY == 0:
                    report(min(1.0, count[0] / total))
                return objective(p, *a, **kw)

            return orig(reported, p0, *args, **kwargs)

        gradient_descent._guidewidgets = True  # type: ignore[attr-defined]
        mod._gradient_descent = gradient_descent  # type: ignore[attr-defined]
        return True


@contextlib.contextmanager
def _tsne_reporting(report: Callable[[float], None] | None) -> Iterator[None]:
    """Within the block, t-SNE in this thread calls ``report(fraction)`` every few iterations."""
    if report is None or not _install_tsne_hook():
        yield
        return
    before = getattr(_local, "report", None)
    _local.report = report
    try:
        yield
    finally:
        _local.report = before
