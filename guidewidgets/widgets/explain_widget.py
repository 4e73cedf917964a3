"""ExplainWidget: pick an image, a target class and a method; see the explanation map live.

State lives in traitlets (``image_index``, ``method``, ``layer``, ``target``, ``opacity``,
``colormap``, ``compare``, ``compare_methods``, ``show_raw``, ``status``, ``busy``), so a notebook
can set them and tests can drive the widget without a browser; the controls are two-way linked.

Speed: maps are cached per (image, method, layer, target, options), so toggling back is
instant, and opacity/colormap changes never run the model. Fast methods run in the kernel thread
(tens of ms on the embedded model). Slow methods (``method_info(name).slow``: occlusion, RISE) run
in a background thread that reports to a progress bar; the kernel stays free to handle the other
controls meanwhile. A new request that needs the model cancels the running one (at its next
progress report), because two threads must not run forward hooks on one model at once.

Without a browser (nbval, nbclient, scripts) nothing changes except that nobody watches: a slow
method started by setting ``w.method = "occlusion"`` runs in the background while later cells
execute, and its map appears when it is done. Call ``w.wait()`` to block until it is.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import html
import threading
from typing import Any

import ipywidgets as W
import numpy as np
import torch
import traitlets as T
from torch import nn

from .. import render
from ..hooks import eval_mode
from .image_view import ImageView
from .inputs import UploadError, as_image, as_images, decode_upload, fit
from .synced import SyncedBox

DEFAULT_COMPARE = ("cam", "grad-cam", "grad-cam++", "saliency", "guided-backprop", "occlusion")
_SKIP_LAYER_TYPES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Tanh,
    nn.modules.batchnorm._BatchNorm,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)


class _Cancelled(Exception):
    """Raised from a progress callback to stop a computation nobody waits for any more."""


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


class ExplainWidget(SyncedBox):
    """Explanation maps of a classifier over images, with every registered method one click away.

    Parameters
    ----------
    model: a classifier following the package's model conventions (default: the embedded
        ``zoo.load("shapes-classifier")``); any torchvision classifier wrapped with
        ``zoo.torchvision_model`` works on CPU or CUDA. A segmenter works too: the target
        menu lists classes by their share of predicted pixels, and class k is explained through
        the sum of its logits over the image.
    images: a ``(B, 3, H, W)`` tensor, one image, a list (tensors, arrays, PIL images, paths), a
        dict name -> image or a dataset (first ``max_images`` items). Default: a few ShapeScenes
        and scikit-image's bundled photos.
    size: images are centre-cropped and resized to ``size`` x ``size`` for the model (default:
        ``model.input_size`` if it has one, else the first image's size when all agree, else 224).
    options: per-method keyword options, e.g. ``{"occlusion": {"window": 16, "stride": 8}}``.
    """

    image_index = T.Int(0)
    method = T.Unicode("grad-cam")
    layer = T.Unicode("")  # "" = the model's default_explain_layer (or the method's own default)
    target = T.Int(0)
    opacity = T.Float(0.5)
    colormap = T.Unicode("jet")
    compare = T.Bool(False)
    compare_methods = T.List(T.Unicode())
    show_raw = T.Bool(False)
    status = T.Unicode("")
    busy = T.Bool(False)

    def __init__(
        self,
        model: nn.Module | None = None,
        images: Any = None,
        *,
        size: int | None = None,
        method: str | None = None,
        top_k: int = 5,
        options: dict[str, dict[str, Any]] | None = None,
        display_size: int = 384,
        max_images: int = 32,
        cache_size: int = 256,
    ) -> None:
        from .. import explain

        super().__init__()
        self._syncing = True  # no recomputes until everything is built
        self._explain = explain
        if model is None:
            from .. import zoo

            model = zoo.load("shapes-classifier")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.device = _device(model)
        self.classes: list[str] = list(getattr(model, "classes", []) or [])
        self.top_k = int(top_k)
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self.method_names: list[str] = list(explain.methods())
        self.infos = {m: explain.method_info(m) for m in self.method_names}
        defaults = images is None
        if defaults:
            images = self._default_images()
        named = as_images(images, limit=max_images)
        if size is None:
            size = getattr(model, "input_size", None)
        if not isinstance(size, int):
            # the scenes' own size for the defaults; else keep a common square size; else 224
            shapes = {tuple(im.shape[1:]) for _, im in named[: 4 if defaults else None]}
            h, w = next(iter(shapes)) if len(shapes) == 1 else (0, 0)
            size = h if h == w and 0 < h <= 512 else 224
        self.size = int(size)
        self.names: list[str] = []
        self.images: list[torch.Tensor] = []  # (3, size, size) on the model's device
        for name, im in named:
            self._append(name, im)

        self._cache: collections.OrderedDict[tuple, dict[str, np.ndarray]] = collections.OrderedDict()
        self._cache_size = int(cache_size)
        self._cache_lock = threading.Lock()
        self._probs: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()  # one computation on the model at a time
        self._generation = 0
        self._deferred_status = ""
        self.segmentation = False  # set when the model turns out to return (B, K, H, W) logits
        self._thread: threading.Thread | None = None
        self.frame: np.ndarray | None = None  # overlay frame (RGBA, image size) last rendered
        self.compare_frame: np.ndarray | None = None
        self.current: dict[str, np.ndarray] | None = None  # the map (and raw image) on screen
        self.exported: str | None = None

        self.compare_methods = [m for m in DEFAULT_COMPARE if m in self.infos][:4] or self.method_names[:4]
        self.method = explain.method_info(
            method or ("grad-cam" if "grad-cam" in self.infos else self.method_names[0])
        ).name
        self.view = ImageView(self.size, self.size, display_size=display_size)
        self.view.value_fn = self._value_at
        self._build_controls()
        self.children = self._layout()
        self._sync_method_controls()
        self._syncing = False
        self._select_image(0)

    # ---- inputs -------------------------------------------------------------------------------
    def _default_images(self) -> list[tuple[str, Any]]:
        from .. import zoo

        items: list[tuple[str, Any]] = []
        scenes = zoo.ShapeScenes(4, seed=777, task="classification")  # zoo.train.TEST_SEED: held out
        for i in range(len(scenes)):
            it = scenes[i]
            label = self.classes[int(it["label"])] if self.classes else str(int(it["label"]))
            items.append((f"scene {i}: {label}", it["image"]))
        try:
            photos = zoo.photos()
            pairs = photos.items() if isinstance(photos, dict) else [(p, zoo.photo(p)) for p in photos]
            for name, im in pairs:
                items.append((f"photo: {name}", im))
        except Exception:  # photos are a bonus; the scenes alone make a working widget
            pass
        return dict(items)

    def _append(self, name: str, image: torch.Tensor) -> int:
        im = fit(as_image(image, name).to(self.device), self.size)
        base, k = name, 2
        while name in self.names:
            name, k = f"{base} ({k})", k + 1
        self.names.append(name)
        self.images.append(im)
        return len(self.images) - 1

    def add_image(self, image: Any, name: str | None = None, *, select: bool = True) -> int:
        """Add an image (anything ``as_image`` takes); returns its index and shows it by default."""
        i = self._append(name or f"image {len(self.images)}", image)
        self.w_image.options = list(zip(self.names, range(len(self.names))))
        if select:
            self.image_index = i
        return i

    def load_upload(self, data: bytes, name: str = "upload") -> int | None:
        """Add an uploaded file; a bad file sets ``status`` and returns None instead of raising."""
        try:
            image, note = decode_upload(bytes(data), name)
        except UploadError as err:
            self.status = f"Upload refused: {err}"
            return None
        i = self.add_image(image, name)
        if note:
            self.status = f"Loaded {name!r} ({note})."
        elif not self.status.startswith("Error"):
            self.status = f"Loaded {name!r}."
        return i

    def _on_upload(self, change: dict) -> None:
        files = change["new"]
        if not files:
            return
        for f in files:
            try:
                self.load_upload(bytes(f["content"]), str(f.get("name", "upload")))
            except Exception as err:  # never let an upload kill the widget
                self.status = f"Upload failed: {_error_text(err)}"
        with contextlib.suppress(Exception):
            self.w_upload.value = ()

    # ---- controls -----------------------------------------------------------------------------
    def _build_controls(self) -> None:
        wide = W.Layout(width="auto")
        self.w_image = W.Dropdown(
            options=list(zip(self.names, range(len(self.names)))), description="Image", layout=W.Layout(width="320px")
        )
        self.w_upload = W.FileUpload(accept="image/*", multiple=True, description="Upload")
        self.w_target = W.Dropdown(options=[], description="Target", layout=W.Layout(width="320px"))
        labels = []
        for m in self.method_names:
            info = self.infos[m]
            labels.append((info.title + (" (slow)" if info.slow else ""), m))
        self.w_method = W.ToggleButtons(
            options=labels,
            tooltips=[self.infos[m].summary for m in self.method_names],
            style={"button_width": "auto"},
            layout=wide,
        )
        self.w_layer = W.Dropdown(options=self._layer_options(), description="Layer", layout=W.Layout(width="320px"))
        self.w_opacity = W.FloatSlider(min=0.0, max=1.0, step=0.05, description="Opacity", readout_format=".2f")
        self.w_cmap = W.Dropdown(
            options=render.colormap_names(), description="Colormap", layout=W.Layout(width="220px")
        )
        self.w_raw = W.Checkbox(description="gradient image", indent=False, layout=W.Layout(width="140px"))
        self.w_compare = W.ToggleButton(description="Compare", icon="th", tooltip="several methods side by side")
        self.w_compare_methods = W.SelectMultiple(
            options=[(self.infos[m].title, m) for m in self.method_names],
            rows=4,
            description="Methods",
            layout=W.Layout(display="none"),
        )
        self.w_progress = W.FloatProgress(
            min=0.0, max=1.0, description="", layout=W.Layout(visibility="hidden", width="200px")
        )
        self.w_status = W.HTML()
        self.w_export = W.Button(description="Export PNG", icon="download")
        self.w_export_out = W.HTML()
        self.compare_image = W.Image(format="png", layout=W.Layout(display="none"))
        self.compare_label = W.HTML(layout=W.Layout(display="none"))

        for trait, ctl in [
            ("image_index", self.w_image),
            ("method", self.w_method),
            ("layer", self.w_layer),
            ("opacity", self.w_opacity),
            ("colormap", self.w_cmap),
            ("compare", self.w_compare),
            ("show_raw", self.w_raw),
        ]:
            W.link((self, trait), (ctl, "value"))
        W.link((self, "compare_methods"), (self.w_compare_methods, "value"), transform=(tuple, list))
        # target options change with the image; link by hand so a missing option can't raise
        self.w_target.observe(self._on_target_control, "value")
        self.w_upload.observe(self._on_upload, "value")
        self.w_export.on_click(lambda _: self.export())
        self.observe(
            self._on_compute_change,
            ["image_index", "method", "layer", "target", "compare", "compare_methods", "show_raw"],
        )
        self.observe(self._on_style_change, ["opacity", "colormap"])
        self.observe(self._on_status, "status")
        self.observe(self._on_busy, "busy")

    def _layout(self) -> list[W.Widget]:
        row1 = W.HBox([self.w_image, self.w_upload, self.w_target])
        row2 = W.HBox([self.w_layer, self.w_cmap, self.w_opacity, self.w_raw])
        row3 = W.HBox([self.w_compare, self.w_compare_methods, self.w_export, self.w_progress])
        return [
            row1,
            self.w_method,
            row2,
            row3,
            self.view,
            self.compare_image,
            self.compare_label,
            self.w_status,
            self.w_export_out,
        ]

    def _layer_options(self) -> list[tuple[str, str]]:
        """Layers worth explaining: modules whose output is a spatial feature map, deepest last."""
        default = getattr(self.model, "default_explain_layer", None)
        names: list[str] = []
        handles = []

        def make(name):
            def hook(_m, _a, out):
                if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] * out.shape[-2] > 1:
                    if name not in names:
                        names.append(name)

            return hook

        try:
            for name, m in self.model.named_modules():
                if name and not isinstance(m, _SKIP_LAYER_TYPES):
                    handles.append(m.register_forward_hook(make(name)))
            with eval_mode(self.model), torch.no_grad():
                self.model(self.images[0][None])
        except Exception:
            names = [n for n, m in self.model.named_modules() if isinstance(m, nn.Conv2d)]
        finally:
            for h in handles:
                h.remove()
        auto = f"default ({default})" if default else "default (last feature map)"
        return [(auto, "")] + [(n, n) for n in names if n != default] + ([(default, default)] if default else [])

    # ---- traitlet plumbing ----------------------------------------------------------------------

    def _reject(self, name: str, err: BaseException | str):
        # An impossible request keeps the old value and says why in the status line.
        self.status = f"Error: {err if isinstance(err, str) else err}"
        return getattr(self, name)

    @T.validate("method")
    def _valid_method(self, proposal):
        try:
            return self._explain.method_info(proposal["value"]).name  # accepts "Grad_CAM" etc.
        except Exception as err:
            return self._reject("method", err)

    @T.validate("layer")
    def _valid_layer(self, proposal):
        if proposal["value"]:
            try:
                from ..hooks import get_layer

                get_layer(self.model, proposal["value"])
            except Exception as err:
                return self._reject("layer", err)
        return proposal["value"]

    @T.validate("target")
    def _valid_target(self, proposal):
        k = self._num_classes()
        if k and not 0 <= proposal["value"] < k:
            return self._reject("target", f"target class {proposal['value']} is outside 0..{k - 1}")
        return proposal["value"]

    @T.validate("image_index")
    def _valid_image(self, proposal):
        if not 0 <= proposal["value"] < len(self.images):
            return self._reject("image_index", f"there is no image {proposal['value']} (0..{len(self.images) - 1})")
        return proposal["value"]

    @T.validate("colormap")
    def _valid_colormap(self, proposal):
        try:
            render.colorize(np.zeros((1, 1)), proposal["value"])
        except Exception as err:
            return self._reject("colormap", err)
        return proposal["value"]

    @T.validate("compare_methods")
    def _valid_compare(self, proposal):
        names = []
        for m in proposal["value"]:
            try:
                names.append(self._explain.method_info(m).name)
            except Exception as err:
                # shown after the valid rest is drawn (drawing clears old errors)
                self._deferred_status = f"Error: {err}"
        if names == list(self.compare_methods) and self._deferred_status:  # no change event will come
            self.status, self._deferred_status = self._deferred_status, ""
        return names

    @T.validate("opacity")
    def _valid_opacity(self, proposal):
        return float(min(1.0, max(0.0, proposal["value"])))

    def _on_status(self, change: dict) -> None:
        text = change["new"]
        color = "#b00020" if text.startswith(("Error", "Upload refused", "Upload failed")) else "#444"
        self.w_status.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    def _on_busy(self, change: dict) -> None:
        self.w_progress.layout.visibility = "visible" if change["new"] else "hidden"

    def _on_target_control(self, change: dict) -> None:
        if change["new"] is not None and change["new"] != self.target:
            self.target = int(change["new"])

    def _on_compute_change(self, change: dict) -> None:
        if self._syncing:
            return
        name = change["name"]
        if name == "method":
            self._sync_method_controls()
        elif name == "image_index":
            return self._select_image(change["new"])
        elif name == "target":
            self._sync_target_control()
        elif name == "compare":
            self._show_compare(change["new"])
        self.update()
        if self._deferred_status:
            self.status, self._deferred_status = self._deferred_status, ""

    def _sync_method_controls(self) -> None:
        info = self.infos[self.method]
        self.w_layer.disabled = not info.uses_layer
        self.w_raw.disabled = not info.has_image

    def _on_style_change(self, change: dict) -> None:
        if not self._syncing:
            self.update()

    def _show_compare(self, on: bool) -> None:
        self.view.layout.display = "none" if on else None
        self.compare_image.layout.display = None if on else "none"
        self.compare_label.layout.display = None if on else "none"
        self.w_compare_methods.layout.display = None if on else "none"

    # ---- prediction and targets ---------------------------------------------------------------
    def _num_classes(self) -> int:
        if self.classes:
            return len(self.classes)
        p = self._probs.get(self.image_index)
        return 0 if p is None else len(p)

    def _class_name(self, k: int) -> str:
        return self.classes[k] if k < len(self.classes) else f"class {k}"

    def probabilities(self, index: int | None = None) -> np.ndarray:
        """Class scores of an image (default: the one shown) for the target menu.

        Classifiers: softmax probabilities. Segmenters ((B, K, H, W) logits): the fraction of
        pixels predicted as each class; explaining class k then means "the sum of class-k logits
        over the image" (the explain API's convention for segmentation outputs).
        """
        i = self.image_index if index is None else index
        if i not in self._probs:
            with self._lock, torch.no_grad(), eval_mode(self.model):
                out = self.model(self.images[i][None])
            if isinstance(out, dict) and "out" in out:  # torchvision segmenters
                out = out["out"]
            if isinstance(out, torch.Tensor) and out.dim() == 2:
                self._probs[i] = render.to_numpy(out.softmax(1)[0].float())
            elif isinstance(out, torch.Tensor) and out.dim() == 4:
                k = out.shape[1]
                counts = torch.bincount(out[0].argmax(0).flatten(), minlength=k)
                self._probs[i] = render.to_numpy(counts.float() / counts.sum())
                self.segmentation = True
            else:
                raise ValueError(
                    "ExplainWidget needs logits of shape (B, K) (classifier) or (B, K, H, W) (segmenter); "
                    f"this model returned {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}"
                )
        return self._probs[i]

    def _select_image(self, i: int) -> None:
        self._generation += 1  # whatever ran for the previous image is moot
        self.view.set_layer("image", render.to_rgba(self.images[i]))
        with self._quiet():
            self.w_image.value = i
        try:
            p = self.probabilities(i)
        except Exception as err:
            self.status = f"Error: the model failed on this image: {_error_text(err)}"
            self.w_target.options = []
            self.view.set_layer("overlay", None)
            return
        top = [int(k) for k in np.argsort(-p)[: self.top_k]]
        if self.segmentation and len(top) > 1 and top[0] == 0 and p[top[1]] > 0:
            top = top[1:]  # the biggest object, not the background, is the interesting default
        with self._quiet():
            self.target = top[0]
        self._sync_target_control()
        self.update()

    def _sync_target_control(self) -> None:
        p = self._probs.get(self.image_index)
        if p is None:
            return
        top = [int(k) for k in np.argsort(-p)[: self.top_k]]
        if self.target not in top:
            top.append(self.target)
        unit = " of pixels" if self.segmentation else ""
        opts = [(f"{self._class_name(k)} ({p[k]:.1%}{unit})", k) for k in top]
        with self._quiet():
            if list(self.w_target.options) != opts:
                self.w_target.options = opts
            self.w_target.value = self.target

    # ---- computing ----------------------------------------------------------------------------
    def _key(self, method: str) -> tuple:
        info = self.infos[method]
        layer = (self.layer or None) if info.uses_layer else None
        opts = tuple(sorted(self.options.get(method, {}).items()))
        raw = bool(self.show_raw and info.has_image)  # the signed (3, H, W) image instead of the map
        return (self.image_index, method, layer, self.target, opts, raw)

    def _compute(self, key: tuple, progress=None) -> dict[str, np.ndarray]:
        i, method, layer, target, opts, raw = key
        kw = dict(opts)
        if self.infos[method].slow and progress is not None:
            kw["progress"] = progress
        if raw:
            kw["raw"] = True
        m = self._explain.explain(self.model, self.images[i][None], method, target=target, layer=layer, **kw)
        if raw:
            r = render.to_numpy(m[0].float())
            return {"raw": r, "map": np.abs(r).max(0)}
        return {"map": render.to_numpy(m[0].float())}

    def _store(self, key: tuple, value: dict[str, np.ndarray]) -> None:
        with self._cache_lock:  # the background thread stores while the kernel thread reads
            self._store_locked(key, value)

    def _store_locked(self, key: tuple, value: dict[str, np.ndarray]) -> None:
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def cached(self, method: str | None = None) -> bool:
        """Whether the current view of ``method`` (default: the selected one) is in the cache."""
        return self._key(method or self.method) in self._cache

    def _wanted(self) -> list[str]:
        return list(self.compare_methods) if self.compare else [self.method]

    def update(self) -> None:
        """Recompute what is missing and redraw; called by every control change."""
        if self.image_index not in self._probs:
            return  # the model failed on this image; the status says so
        keys = [self._key(m) for m in self._wanted()]
        missing = [k for k in keys if k not in self._cache]
        if not missing:
            return self._render()
        self._generation += 1  # cancels a background job at its next progress report
        if any(self.infos[k[1]].slow for k in missing):
            return self._start_background(missing)
        self.busy = False
        with self._lock:
            errors = self._compute_all(missing)
        self._finish(errors)

    def _compute_all(self, keys: list[tuple], progress_for=None) -> list[str]:
        """Compute and cache each key; a failing method is reported, the others still run."""
        errors = []
        for j, k in enumerate(keys):
            if k in self._cache:
                continue
            try:
                self._store(k, self._compute(k, progress_for(j) if progress_for else None))
            except _Cancelled:
                raise
            except Exception as err:
                errors.append(f"{self.infos[k[1]].title} failed: {_error_text(err)}")
        return errors

    def _finish(self, errors: list[str]) -> None:
        if errors and not self.compare:
            self.current = None
            self.view.set_layer("overlay", None)
        else:
            self._render()  # in compare mode the methods that worked are shown
        self.status = "Error: " + "; ".join(errors) if errors else ""

    def _start_background(self, keys: list[tuple]) -> None:
        gen = self._generation
        n = len(keys)
        self.busy = True
        self.w_progress.value = 0.0
        titles = ", ".join(self.infos[k[1]].title for k in keys)
        self.status = f"Computing {titles} in the background ..."

        def progress_for(j: int):
            def progress(f: float) -> None:
                if gen != self._generation:
                    raise _Cancelled()  # a newer request needs the model: stop at this report
                self.w_progress.value = min(1.0, (j + float(f)) / n)

            return progress

        def job() -> None:
            try:
                with self._lock:
                    if gen != self._generation:
                        raise _Cancelled()
                    errors = self._compute_all(keys, progress_for)
                if gen == self._generation:
                    self._finish(errors)
            except _Cancelled:
                pass
            except Exception as err:  # a bug here must not die silently in a thread
                if gen == self._generation:
                    self.status = f"Error: {titles} failed: {_error_text(err)}"
            finally:
                if gen == self._generation:
                    self.busy = False
                    self.w_progress.value = 1.0

        self._thread = threading.Thread(target=job, name="ExplainWidget", daemon=True)
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a background computation is done; True if nothing is running any more."""
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    # ---- rendering ----------------------------------------------------------------------------
    def _overlay_rgba(self, method: str, result: dict[str, np.ndarray]) -> np.ndarray:
        info = self.infos[method]
        if "raw" in result:
            rgba = render.gradient_image(result["raw"])
        else:
            rgba = render.colorize(result["map"], self.colormap, signed=info.signed)
        rgba = rgba.copy()
        rgba[..., 3] = int(round(self.opacity * 255))
        return rgba

    def _render(self) -> None:
        if self.compare:
            tiles, titles = [], []
            base = render.to_rgba(self.images[self.image_index])
            for m in self.compare_methods:
                res = self._cache.get(self._key(m))
                if res is None:
                    continue
                tiles.append(render.overlay(base, self._overlay_rgba(m, res), alpha=1.0))
                titles.append(self.infos[m].title)
            if not tiles:
                return
            self.compare_frame = render.grid(tiles, cols=min(4, len(tiles)), pad=4)
            h, w = self.compare_frame.shape[:2]
            zoom = max(1, min(self.view.scale, 1000 // w, 800 // h))  # small tiles shown larger, exactly
            self.compare_image.value = render.to_png(render.upscale(self.compare_frame, zoom))
            # px sizes, or the notebook's flex layout stretches the picture out of proportion
            self.compare_image.layout.width, self.compare_image.layout.height = f"{w * zoom}px", f"{h * zoom}px"
            cell = (tiles[0].shape[1] + 4) * zoom  # one title centred under each tile of the first row
            self.compare_label.value = (
                "<div style='display:flex'>"
                + "".join(f"<div style='width:{cell}px;text-align:center'>{html.escape(t)}</div>" for t in titles[:4])
                + "</div>"
                + (f"<div>then: {html.escape(', '.join(titles[4:]))}</div>" if len(titles) > 4 else "")
            )
            self._clear_error()
            return
        res = self._cache.get(self._key(self.method))
        if res is None:
            return
        with self._cache_lock:
            if self._key(self.method) in self._cache:
                self._cache.move_to_end(self._key(self.method))
        self._clear_error()
        self.current = res
        self.frame = self._overlay_rgba(self.method, res)
        self.view.set_layer("overlay", self.frame)

    def _clear_error(self) -> None:
        # a new map on screen means the last error no longer describes what the user sees
        if self.status.startswith("Error"):
            self.status = ""

    def _value_at(self, y: int, x: int) -> str:
        rgb = render.to_rgba(self.images[self.image_index][:, y : y + 1, x : x + 1])[0, 0, :3]
        text = f"RGB {tuple(int(c) for c in rgb)}"
        if self.current is not None:
            m = self.current["map"]
            lo, hi = float(m.min()), float(m.max())
            rel = (m[y, x] - lo) / (hi - lo) if hi > lo else 0.0
            text += f" | {self.infos[self.method].title}: {m[y, x]:.4g} ({rel:.0%} of range)"
        return text

    # ---- export -------------------------------------------------------------------------------
    def composite(self) -> np.ndarray:
        """What the view shows, flattened to one RGBA image (the grid in compare mode)."""
        if self.compare and self.compare_frame is not None:
            return self.compare_frame
        base = render.to_rgba(self.images[self.image_index])
        return base if self.frame is None else render.overlay(base, self.frame, alpha=1.0)

    def to_png(self) -> bytes:
        """The current view as PNG bytes."""
        return render.to_png(self.composite())

    def export(self, path: str | None = None) -> str:
        """Save the current view as a PNG file and offer it for download; returns the path."""
        import os
        import re

        try:
            png = self.to_png()
            if path is None:
                stem = re.sub(
                    r"[^A-Za-z0-9_.-]+",
                    "_",
                    f"{self.names[self.image_index]}_{'compare' if self.compare else self.method}",
                )
                path = f"explain_{stem}.png"
            with open(path, "wb") as f:
                f.write(png)
        except Exception as err:
            self.status = f"Error: export failed: {_error_text(err)}"
            return ""
        self.exported = os.path.abspath(path)
        b64 = base64.b64encode(png).decode()
        name = html.escape(os.path.basename(path))
        self.w_export_out.value = (
            f"Saved <code>{html.escape(path)}</code> &nbsp; "
            f'<a download="{name}" href="data:image/png;base64,{b64}">download {name}</a>'
        )
        return path

    def to_figure(self):
        """A matplotlib figure of the current view (image, map; or the compare grid) with titles."""
        from matplotlib import pyplot as plt  # lazily: only a user who asks for a figure pays for pyplot

        if self.compare and self.compare_frame is not None:
            methods = [m for m in self.compare_methods if self._key(m) in self._cache]
            fig, axes = plt.subplots(1, len(methods), figsize=(3 * len(methods), 3.2), squeeze=False)
            base = render.to_rgba(self.images[self.image_index])
            for ax, m in zip(axes[0], methods):
                ax.imshow(render.overlay(base, self._overlay_rgba(m, self._cache[self._key(m)]), alpha=1.0))
                ax.set_title(self.infos[m].title, fontsize=9)
                ax.axis("off")
        else:
            fig, axes = plt.subplots(1, 2, figsize=(6, 3.2), squeeze=False)
            axes[0][0].imshow(render.to_rgba(self.images[self.image_index]))
            axes[0][0].set_title(self.names[self.image_index], fontsize=9)
            axes[0][1].imshow(self.composite())
            axes[0][1].set_title(f"{self.infos[self.method].title}: {self._class_name(self.target)}", fontsize=9)
            for ax in axes[0]:
                ax.axis("off")
        fig.tight_layout()
        plt.close(fig)  # returned, not shown twice by the inline backend
        return fig

    def close(self) -> None:
        self._generation += 1
        super().close()
