"""ExplainWidget: pick an image, a target class and a method; see the explanation map live.

A thin view over :class:`guidewidgets.explain.session.Explainer` (images, scores, map cache, background job).
State lives in traitlets (``image_index``, ``method``, ``layer``, ``target``, ``opacity``, ``colormap``, ``compare``,
``compare_methods``, ``shared_scale``, ``show_raw``, ``show_original``, ``box``, ``box_threshold``, ``region``,
``status``, ``busy``) linked to the controls; ``box``: the map's box and IoU (box_overlay); ``region``: a segmenter's
class inside a dragged rectangle (region_targets). Slow methods run in a cancellable background job with progress.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import numpy as np
import traitlets as T
from torch import nn

from .. import render
from ..explain.registry import MethodInfo
from ..explain.session import Explainer, Job, MapKey
from ..hooks import get_layer
from .base import WidgetBase, error_text
from .box_overlay import BoxOverlay
from .explain_controls import ImageList, build_controls, layout, load_inputs
from .image_view import ImageView
from .inputs import fit
from .region_targets import RegionSelect

DEFAULT_COMPARE = ("cam", "grad-cam", "grad-cam++", "saliency", "guided-backprop", "occlusion")
TILE = 192  # compare tiles are shown about this many px wide
CAMS = ("cam", "grad-cam")


def _not_here(info: MethodInfo) -> str:
    return (
        f"{info.title} explains one unit of a layer, not a class: pick a layer and channel in the "
        f"FeatureWidget, or call explain.explain(model, x, {info.name!r}, target=Neuron(channel), layer=...)"
    )


class ExplainWidget(ImageList, RegionSelect, BoxOverlay, WidgetBase):
    """Explanation maps of a classifier over images, every registered method one click away.

    Args:
        model: a classifier (default: the embedded ``zoo.load("shapes-classifier")``), CPU or CUDA;
            a segmenter explains class k through the sum of its logits over the image.
        images: a ``(B, C, H, W)`` tensor, an image, a list, a dict name -> image or a dataset
            (labels shown as the true class); grey/RGBA converted for the model, floats in 0..255
            rescaled.
        size: square size for the model (default ``model.input_size``, else the images' own, else 224).
        method: the method shown first (default Grad-CAM).
        top_k: classes listed first in the target menu.
        options: per-method keyword options, e.g. ``{"occlusion": {"window": 16, "stride": 8}}``.
        display_size: about how many px wide the image is shown.
        max_images: images kept from ``images``. cache_size: maps kept.
        presenter: larger text for a projector (default: ``theme.set_presenter``).
    """

    image_index = T.Int(0, help="which image is shown (index into ``images``)")
    method = T.Unicode("grad-cam", help="the explanation method shown (a name from ``explain.methods()``)")
    layer = T.Unicode("", help="'' = the method's default layer")
    target = T.Int(0, help="the class explained (index into ``classes``)")
    opacity = T.Float(0.6, help="overlay opacity in [0, 1]")
    colormap = T.Unicode("turbo" + render.FADE, help="colour map of the map (``render.colormap_names()``)")
    compare = T.Bool(False, help="show the methods in ``compare_methods`` side by side")
    compare_methods = T.List(T.Unicode(), help="the methods compare mode shows")
    shared_scale = T.Bool(False, help="compare tiles on one colour scale (unsigned maps)")
    show_raw = T.Bool(False, help="show the gradient image (RGB) instead of a heat map where a method has one")
    show_original = T.Bool(True, help="show the plain image beside the map")
    busy = T.Bool(False, help="True while a slow method computes in the background (read-only)")
    _deferred_status = ""  # an error found by a validator, shown after the redraw that follows

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
        presenter: bool | None = None,
    ) -> None:
        super().__init__(presenter=presenter)
        with self._building():
            model, items, self.size, notes = load_inputs(model, images, size, max_images)
            self.session = Explainer(model, options=options, cache_size=cache_size)
            for name, im, label, true in items:
                self.session.add_image(fit(im, self.size), name, label, *(true or ()))
            self.model, self.top_k = model, int(top_k)
            # Neuron methods explain a unit of a layer, not a class: their place is the FeatureWidget
            # (a channel is picked there); here the Target menu lists classes.
            infos = [self.session.info(m) for m in self.session.methods()]
            self.infos = {v.name: v for v in infos if v.target_kind == "class"}
            self.frame: np.ndarray | None = None  # overlay (RGBA, image size) on screen
            self.current: dict[str, np.ndarray] | None = None
            self.compare_frame: np.ndarray | None = None
            self.compare_captions: list[str] = []
            self._layer_labels: dict[str, str] = {}
            self.compare_methods = [m for m in DEFAULT_COMPARE if m in self.infos][:4] or list(self.infos)[:4]
            first = self.session.info(method or "grad-cam")  # an unknown name: ValueError with close matches
            if first.name not in self.infos:
                raise ValueError(_not_here(first))
            self.method = first.name
            self.view = ImageView(self.size, self.size, display_size=display_size)
            self.view.value_fn = self._value_at
            self.view.canvas.on_key_down(self.key_down)
            build_controls(self)
            self.children = layout(self)
            self._sync_method_controls()
        self._select_image(0)
        if notes:
            self.status = "; ".join(notes[:3]) + (f" (and {len(notes) - 3} more)" if len(notes) > 3 else "") + "."

    # ---- controls -----------------------------------------------------------------------------
    def shortcuts(self) -> dict[str, tuple[str, Any]]:
        def step(d: int) -> Callable[[], None]:
            return lambda: setattr(self, "image_index", (self.image_index + d) % len(self.images))

        def pick(m: str) -> Callable[[], None]:
            return lambda: setattr(self, "method", m)

        keys = {str(i + 1): ("" if i else "1-9|method", pick(m)) for i, m in enumerate(list(self.infos)[:9])}
        keys["ArrowLeft"], keys["ArrowRight"] = ("←|previous image", step(-1)), ("→|next image", step(1))
        keys["c"] = ("compare", lambda: setattr(self, "compare", not self.compare))
        return keys

    # ---- validation ----------------------------------------------------------------------------
    @T.validate("method")
    def _valid_method(self, proposal: dict) -> str:
        try:
            info = self.session.info(proposal["value"])  # accepts "Grad_CAM" etc.
        except Exception as err:
            return self._reject("method", err)
        if info.name not in self.infos:
            return self._reject("method", _not_here(info))
        return info.name

    @T.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        name = proposal["value"]
        if name and name not in self._layer_labels:
            try:
                get_layer(self.model, name)
            except Exception as err:
                return self._reject("layer", err)
            # a real module the menu does not list (no spatial output here): listed, and said so
            self._layer_labels[name] = f"{name} (not a spatial feature map here)"
            self.w_layer.options = list(self.w_layer.options) + [(self._layer_labels[name], name)]
            self.status = f"Layer {name!r} added to the menu; it gives no spatial feature map on these images, so layer methods may fail."
        return name

    @T.validate("target", "image_index")
    def _valid_index(self, proposal: dict) -> int:
        name, v = proposal["trait"].name, proposal["value"]
        n = len(self.images) if name == "image_index" else self.session.num_classes(self.image_index)
        why = (
            f"there is no image {v} (0..{n - 1})"
            if name == "image_index"
            else f"target class {v} is outside 0..{n - 1}"
        )
        return v if 0 <= v < n or not n else self._reject(name, why)

    @T.validate("colormap")
    def _valid_colormap(self, proposal: dict) -> str:
        err = render.check_cmap(proposal["value"])
        return self._reject("colormap", err) if err else proposal["value"]

    @T.validate("compare_methods")
    def _valid_compare(self, proposal: dict) -> list[str]:
        names, bad = [], []
        for m in proposal["value"]:
            try:
                names.append(self.session.info(m).name)
            except Exception as err:
                bad.append(str(err))
        self._deferred_status = f"Error: {bad[0]}" if bad else ""
        return names

    # ---- observers -----------------------------------------------------------------------------
    def _on_compute_change(self, change: dict) -> None:
        if self._syncing:
            return
        with self._working():
            name = change["name"]
            if name == "image_index":
                return self._select_image(change["new"])
            if name == "method":
                self._sync_method_controls()
            elif name == "target":
                self._sync_target_control()
            self.update()
            if self._deferred_status:
                self.status, self._deferred_status = self._deferred_status, ""

    def _sync_method_controls(self) -> None:
        info = self.infos[self.method]
        self.w_layer.disabled = not info.uses_layer
        self.w_raw.disabled = not info.has_image
        note = " On a global-average-pool + linear head Grad-CAM equals CAM up to scale." * (info.name in CAMS)
        self.w_summary.value = f"<b>{html.escape(info.title)}</b>: {html.escape(info.summary)}{note}"

    # ---- image, targets, layers ------------------------------------------------------------------
    def probabilities(self, index: int | None = None) -> np.ndarray:
        """Class scores of an image (default: the one shown); see ``Explainer.probabilities``."""
        return self.session.probabilities(self.image_index if index is None else index)

    @property
    def segmentation(self) -> bool:
        return self.session.segmentation

    def _select_image(self, i: int) -> None:
        self.session.cancel()  # whatever ran for the previous image is moot
        base = render.to_rgba(self.images[i])
        self.view.set_layer("image", base)
        self.w_orig_img.value = render.to_png(render.upscale(base, self.view.scale))
        with self._quiet():
            self.w_image.value = i
        try:
            top = self.session.top_classes(i)
        except Exception as err:
            self.status = f"Error: the model failed on this image: {error_text(err)}"
            self.w_target.options = []
            self.view.set_layer("overlay", None)
            return
        self._sync_layers(i)
        with self._quiet():
            self.target = top[0]
        self._sync_target_control()
        self.update()

    def _sync_layers(self, i: int) -> None:
        opts = self.session.layer_options(i)
        self._layer_labels = {name: label for label, name in opts if name}
        if self.layer and self.layer not in self._layer_labels:
            self._layer_labels[self.layer] = self.layer
            opts.append((self.layer, self.layer))
        with self._quiet():
            self.w_layer.options = opts
            self.w_layer.value = self.layer

    def _sync_target_control(self) -> None:
        if self.image_index in self.session._probs:
            opts = self.session.target_options(self.image_index, self.top_k)
            with self._quiet():
                if list(self.w_target.options) != opts:
                    self.w_target.options = opts
                self.w_target.value = self.target

    # ---- computing ----------------------------------------------------------------------------
    def _key(self, method: str) -> MapKey:
        return self.session.key(self.image_index, method, self.target, self.layer, self.show_raw, self.region_box)

    def cached(self, method: str | None = None) -> bool:
        """Whether the current view of ``method`` (default: the selected one) is in the cache."""
        return self._key(method or self.method) in self.session

    def update(self) -> None:
        """Recompute what is missing and redraw; called by every control change."""
        if self.image_index not in self.session._probs:
            return  # the model failed on this image; the status says so
        wanted = list(self.compare_methods) if self.compare else [self.method]
        missing = [k for k in (self._key(m) for m in wanted) if k not in self.session]
        if not missing:
            return self._render()
        if any(self.infos[k.method].slow for k in missing):
            self._show_progress(True)
            self.status = f"Computing {', '.join(self.infos[k.method].title for k in missing)} in the background ..."
            self.session.submit(missing, self._job_done, self._on_progress)
            return
        self.session.cancel()
        self._show_progress(False)
        self._finish(self.session.compute_many(missing))

    def _show_progress(self, on: bool) -> None:
        # Why this order: the bar is shown only at 0 and reset only once hidden, so it never
        # appears at the last job's 100 %.
        if on:
            self.w_progress.value = 0.0
            self.busy = True
        else:
            self.busy = False
            self.w_progress.value = 0.0

    def _on_progress(self, fraction: float) -> None:
        if self.busy:  # a late report from a finished or cancelled job must not move the bar
            self.w_progress.value = fraction

    def _job_done(self, job: Job) -> None:
        if job is not self.session.job or job.cancelled:
            return
        self._show_progress(False)
        self._finish(job.errors)

    def _finish(self, errors: list[str]) -> None:
        if errors and not self.compare:
            self.current = self.frame = None
            self.view.set_layer("overlay", None)
        else:
            self._render()  # in compare mode the methods that worked are shown
        keep = "" if self.status.startswith("Computing") else self.status
        self.status = "Error: " + "; ".join(errors) if errors else keep

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a background computation is done; True if nothing is running any more."""
        return self.session.wait(timeout)

    # ---- rendering ----------------------------------------------------------------------------
    def _overlay_rgba(self, method: str, result: dict[str, np.ndarray], vrange: Any = None) -> np.ndarray:
        signed = self.infos[method].signed
        return render.map_rgba(result, self.colormap, signed=signed, opacity=self.opacity, vrange=vrange)

    def heading(self) -> str:
        if self.image_index not in self.session._probs:
            return self.names[self.image_index]
        title = "Methods compared" if self.compare else None
        return self.session.heading(self._key(self.method), title) + ("" if self.compare else self.box_text())

    def colorbar(self) -> tuple[np.ndarray, tuple[str, str], str] | None:
        if self.compare or self.current is None or "raw" in self.current:
            return None
        labels, meaning = self.session.scale_text(self._key(self.method), self.current)
        return render.colorbar(self.colormap, 128, 14, signed=self.infos[self.method].signed), labels, meaning

    def _render(self) -> None:
        if self.compare:
            return self._render_compare()
        res = self.session.get(self._key(self.method))
        if res is None:
            return
        self._clear_error()
        note = self.session.empty_note(self._key(self.method), res)
        if note or self.status.startswith("The model gives"):
            self.status = note[:1].upper() + note[1:] + "." if note else ""
        self.current = res
        self.frame = self._with_box(self._overlay_rgba(self.method, res), res)
        self.view.set_layer("overlay", self.frame)
        self.w_heading.value = f"<b>{html.escape(self.heading())}</b>"
        cb = self.colorbar()
        self.w_bar_box.show(cb)

    def _render_compare(self) -> None:
        results = [(m, r) for m in self.compare_methods if (r := self.session.get(self._key(m))) is not None]
        if not results:
            return
        unsigned = [r["map"] for m, r in results if not self.infos[m].signed and "raw" not in r]
        vr = None
        if self.shared_scale and unsigned:
            vr = (min(float(a.min()) for a in unsigned), max(float(a.max()) for a in unsigned))
        base = render.to_rgba(self.images[self.image_index])
        tiles, captions = [], []
        for m, r in results:
            tiles.append(
                render.overlay(base, self._overlay_rgba(m, r, None if self.infos[m].signed else vr), alpha=1.0)
            )
            (lo, hi), _ = self.session.scale_text(self._key(m), r)
            captions.append(f"{self.infos[m].title} ({lo.split()[0]} .. {hi.split()[0]})")
        self.w_grid.show(tiles, captions, zoom=max(1, TILE // base.shape[1]))
        self.compare_frame, self.compare_captions = self.w_grid.frame, captions
        self.w_heading.value = f"<b>{html.escape(self.heading())}</b>" + (" (one colour scale)" if vr else "")
        self._clear_error()

    def _value_at(self, y: int, x: int) -> str:
        return self.session.value_text(self._key(self.method), y, x, self.current)

    # ---- export -------------------------------------------------------------------------------
    def composite(self) -> np.ndarray:
        """What the view shows, flattened to one RGBA image (the grid in compare mode)."""
        if self.compare and self.compare_frame is not None:
            return self.compare_frame
        base = render.to_rgba(self.images[self.image_index])
        return base if self.frame is None else render.overlay(base, self.frame, alpha=1.0)

    def display_scale(self) -> int:
        return 1 if self.compare else self.view.scale  # compare tiles are already enlarged

    @property
    def export_stem(self) -> str:  # type: ignore[override]
        return f"{self.names[self.image_index]}_{'compare' if self.compare else self.method}"

    def close(self) -> None:
        if "session" in vars(self):  # a constructor that failed made none (ipywidgets closes on __del__ too)
            self.session.close()  # cancels the background job and waits (1 s at most) until it lets go
        super().close()
