"""FeatureWidget: pick a layer and a channel; see what the channel responds to.

A thin view over :class:`guidewidgets.features.FeatureBrowser` (``w.session``: the per-layer
caches and the background jobs). The layer's activation maps for the current image (the chosen
channel framed, with a colour bar) and, in folds, the image that maximises the channel with the
guided backprop (or gradient) of its strongest unit on the current image, its top patches, the
image's nearest neighbours in feature vs pixel space, and the embedding. What takes longer than
a blink (a new layer's patches and embedding, t-SNE, the maximization) runs in the background:
the status says at once what is computed, each panel is drawn when ready, and a newer request
cancels the older one. State lives in traitlets (``layer``, ``channel``, ``image_index``,
``projection``, ``neuron_rule``, ``neuron_unit``, ``busy``, ``status``) linked to the controls.

The embedding scatter (PCA or t-SNE, coloured by class) is drawn in numpy onto the package's
canvas view (hover a dot: its thumbnail; click: select it). Why not bqplot here: a few hundred dots
with a hover thumbnail need no more than the canvas view the other widgets already use.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets as T
from torch import nn

from .. import jobs, render
from ..features.browser import NEURON_RULES, NEURON_UNITS, PROJECTIONS, FeatureBrowser
from .base import WidgetBase
from .compare import ColorBar
from .feature_panels import PATCH_PX, NeuronPanel, draw_maximized, framed, rgb, scatter_pixels, show
from .image_view import ImageView

TILE_SCALE = 2
SCATTER = 160  # the scatter's side in its own pixels (shown 2x)
MARGIN = 6
_SLOTS = ("layer", "projection", "maximize")
_REDRAWS = {  # what a change of each trait redraws ("neuron": only while its fold is open)
    "layer": ("activations", "neuron", "patches", "neighbours", "scatter", "maximized"),
    "channel": ("activations", "neuron", "patches", "maximized"),
    "image_index": ("activations", "neuron", "neighbours", "scatter"),
    "projection": ("scatter",),
    "neuron_rule": ("neuron",),
    "neuron_unit": ("neuron",),
    "neuron": ("neuron",),  # its fold was opened
}
_WHAT = {"layer": "top patches", "projection": "the projection", "maximize": "activation maximization"}


class FeatureWidget(WidgetBase):
    """Activation maps, top patches, activation maximization and neighbours of one layer's channels.

    Args:
        model: a CNN (default: the embedded ``zoo.load("shapes-classifier")``).
        data: images to search: a ShapeScenes, a (N, 3, H, W) tensor or a sequence of images / dicts
            with "image" (default: 256 ShapeScenes); at most ``max_images`` are used.
        k: top patches and neighbours shown. steps: activation-maximization steps.
        session: a :class:`FeatureBrowser` to show (``model``, ``data`` and the sizes are then its own).
        presenter: larger text for a projector (default: ``theme.set_presenter``).
    """

    layer = T.Unicode("", help="the layer browsed (a module name; '' until set)")
    channel = T.Int(0, help="the channel of ``layer`` shown")
    image_index = T.Int(0, help="the image whose activations are shown")
    projection = T.Unicode("pca", help="'pca' or 'tsne': the embedding scatter's map")
    neuron_rule = T.Unicode("guided", help="'guided' (guided backprop) or 'gradient': the neuron image's rule")
    neuron_unit = T.Unicode("max", help="'max' (the channel at its strongest position) or 'channel' (summed)")
    busy = T.Bool(False, help="True while something is computed in the background")
    export_stem = "features"

    def __init__(
        self,
        model: nn.Module | None = None,
        data: Any = None,
        *,
        k: int = 8,
        steps: int = 96,
        max_images: int = 256,
        session: FeatureBrowser | None = None,
        presenter: bool | None = None,
    ) -> None:
        super().__init__(presenter=presenter)
        with self._building():
            self.session = session or FeatureBrowser(model, data, k=k, steps=steps, max_images=max_images)
            self._xy: dict[tuple[str, str], np.ndarray] = {}  # dot positions (N, 2) in scatter pixels
            self._status_lock = threading.Lock()
            self._build()
        self.observe(self._on_change, ["layer", "channel", "image_index", "projection", "neuron_rule", "neuron_unit"])
        self.w_tabs.observe(self._on_fold, "selected_index")
        self._refresh()

    # ---- the session's data, read-only ----------------------------------------------------------
    model = property(lambda self: self.session.model)
    images = property(lambda self: self.session.images, doc="(N, 3, H, W) the images searched")
    labels = property(lambda self: self.session.labels)
    layers = property(lambda self: self.session.layers, doc="the feature-map layers, in forward order")

    def _build(self) -> None:
        b = self.session
        self.w_layer = W.Dropdown(options=b.layers, description="Layer")
        self.w_channel = W.BoundedIntText(min=0, max=0, description="Channel")
        self.w_image = W.IntSlider(min=0, max=len(b.images) - 1, description="Image")
        self.w_progress = W.FloatProgress(min=0.0, max=1.0, description="Maximising", layout=W.Layout(width="auto"))
        self.w_acts, self.w_patches, self.w_max, self.w_neigh = (W.Image(format="png") for _ in range(4))
        self.w_neuron = NeuronPanel()
        self.w_acts_caption, self.w_patches_caption, self.w_max_caption, self.w_neigh_caption = (
            W.HTML() for _ in range(4)
        )
        self.scatter = ImageView(SCATTER, SCATTER, scale=2)
        self.scatter.value_fn = self._scatter_hover
        self.scatter.on("down", self._scatter_click)
        self.w_projection = W.ToggleButtons(options=[(t, m) for m, t in PROJECTIONS.items()], value="pca")
        self.w_thumb = W.Image(format="png", layout=W.Layout(width="192px", height="192px"))
        self.w_scatter_caption = W.HTML()
        # CSS classes: what a browser test (and a user's stylesheet) can find
        self.add_class("gw-features")
        for w, name in [
            (self.w_layer, "layer"), (self.w_channel, "channel"), (self.w_acts, "acts"),
            (self.w_patches, "patches"), (self.w_max, "max"), (self.w_thumb, "thumb"),
            (self.scatter, "scatter"), (self.w_patches_caption, "patches-caption"),
        ]:  # fmt: skip
            w.add_class(f"gw-feat-{name}")
        for w in (self.w_patches, self.w_neigh):
            w.add_class("gw-thumbs")  # presenter mode enlarges them
        self._base_controls()
        with self._quiet():
            self.layer = b.default_layer
        self.w_channel.max = b.channels[self.layer] - 1
        W.link((self, "layer"), (self.w_layer, "value"))
        W.link((self, "channel"), (self.w_channel, "value"))
        W.link((self, "image_index"), (self.w_image, "value"))
        W.link((self, "projection"), (self.w_projection, "value"))
        W.link((self, "neuron_rule"), (self.w_neuron.w_rule, "value"))
        W.link((self, "neuron_unit"), (self.w_neuron.w_unit, "value"))
        self.w_acts_bar = ColorBar(128)
        acts = W.HBox([W.VBox([self.w_acts_caption, self.w_acts]), self.w_acts_bar])
        acts.add_class("gw-panel")
        # secondary panels fold (closed at first): the main view fits 760 px at any width
        self.w_tabs = W.Accordion(
            [
                W.VBox([self.w_max_caption, self.w_max, self.w_progress, self.w_neuron]),
                W.VBox([self.w_patches_caption, self.w_patches]),
                W.VBox([self.w_neigh_caption, self.w_neigh]),
                W.HBox([W.VBox([self.w_scatter_caption, self.w_projection, self.scatter]), self.w_thumb]),
            ],
            titles=("Maximising image, guided backprop", "Top patches", "Neighbours", "Embedding (PCA / t-SNE)"),
            selected_index=None,
        )
        self.w_acts.add_class("gw-pixels")  # theme.py: at most 560 px wide (16 x 8 tiles of 35 px)
        self.children = [
            W.HBox([self.w_layer, self.w_channel, self.w_image]),
            acts,
            self.w_tabs,
            self._status_row(),
            self.w_export_out,
        ]

    # ---- validation -----------------------------------------------------------------------------
    def _check(self, name: str, proposal: dict, check: Any) -> Any:
        if "session" not in vars(self):
            return proposal["value"]
        try:
            check(proposal["value"])
        except (TypeError, ValueError) as err:
            return self._reject(name, err)
        return proposal["value"]

    @T.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        return self._check("layer", proposal, lambda name: self.session.check_layer(name))

    @T.validate("channel")
    def _valid_channel(self, proposal: dict) -> int:
        return self._check("channel", proposal, lambda c: self.session.check_channel(self.layer, c))

    @T.validate("projection")
    def _valid_projection(self, proposal: dict) -> str:
        return self._check("projection", proposal, lambda p: self.session.check_projection(p))

    @T.validate("neuron_rule", "neuron_unit")
    def _valid_neuron(self, proposal: dict) -> str:
        name, known = proposal["trait"].name, NEURON_RULES if proposal["trait"].name == "neuron_rule" else NEURON_UNITS

        def check(v: object) -> None:
            if v not in known:
                raise ValueError(f"{name} must be one of {list(known)}, got {v!r}")

        return self._check(name, proposal, check)

    @T.validate("image_index")
    def _valid_image(self, proposal: dict) -> int:
        return self._check("image_index", proposal, lambda i: self.session.check_image(i))

    # ---- updates --------------------------------------------------------------------------------
    def _on_change(self, change: dict) -> None:
        if self._syncing:
            return
        with self._working():
            if change["name"] == "layer":
                n = self.session.channels[self.layer]
                with self._quiet():
                    self.w_channel.max = n - 1
                    if self.channel >= n:
                        self.channel = 0
            self._refresh(change["name"])

    def _wanted(self) -> dict[str, Any]:
        """What each background slot should be computing for what is shown now."""
        layer = self.layer
        return {"layer": layer, "projection": (layer, self.projection), "maximize": (layer, self.channel)}

    def _current(self, job: jobs.Job, slot: str) -> bool:
        return self.session.job(slot) is job and self.session.job_key(slot) == self._wanted()[slot]

    def _refresh(self, changed: str = "layer") -> None:
        """Redraw what ``changed`` (a trait's name) affects; start what is missing in the background."""
        b, wanted = self.session, self._wanted()
        for slot in _SLOTS:  # what nobody looks at any more stops (and lets go of the model)
            if b.job_key(slot) != wanted[slot]:
                b.cancel(slot)
        draws = _REDRAWS[changed]
        try:
            if "activations" in draws:  # first: it may need the model now, before the jobs take it
                self._draw_activations()
            if "neuron" in draws:  # so does the neuron image
                self.w_neuron.refresh(self)
            self._clear_error()
            if b.cached("patches", self.layer) is None or b.cached("embedding", self.layer) is None:
                b.submit_layer(self.layer, on_done=self._job_done)
            if b.cached("projection", self.layer, self.projection) is None:
                b.submit_projection(self.layer, self.projection, self._job_done, self._on_projection_progress)
            if b.cached("maximized", self.layer, self.channel) is None:
                self.w_progress.value = 0.0  # reset before it shows: never seen at the last job's 100 %
                self.w_progress.layout.visibility = "visible"
                b.submit_maximize(self.layer, self.channel, self._job_done, self._on_max_progress)
            self._say()  # the status says what runs before the slower redraws below
            for name in draws:
                if name not in ("activations", "neuron"):
                    getattr(self, f"_draw_{name}")()
        except Exception as err:
            self.status = f"Error: {jobs.error_text(err)}"

    def _say(self, ended: jobs.Job | None = None) -> None:
        """Status and ``busy`` from the jobs still running ("" once all are done; an error stays)."""
        with self._status_lock:
            running = [j for s in _SLOTS if (j := self.session.job(s)) is not None and j.state == "running"]
            running = [j for j in running if j is not ended and not j.cancelled]
            self.busy = bool(running)
            if running:
                self.status = " ".join(dict.fromkeys(j.message for j in running))
            elif not self.status.startswith("Error"):
                self.status = ""

    # ---- background results (the job's thread) -------------------------------------------------
    def _job_done(self, job: jobs.Job) -> None:
        slot = next((s for s in _SLOTS if self.session.job(s) is job), None)
        if slot is None or job.state == "cancelled" or not self._current(job, slot):
            return self._say(job)
        if job.state == "failed":
            self.status = f"Error: {_WHAT[slot]} failed: {job.error_text}"
        else:
            try:
                self._draw_slot(slot)
            except Exception as err:  # a drawing bug must reach the status line, not die in the thread
                self.status = f"Error: {jobs.error_text(err)}"
        self._say(job)

    def _draw_slot(self, slot: str) -> None:
        if slot == "layer":
            self._draw_patches()
            self._draw_neighbours()
        elif slot == "projection":
            self._draw_scatter()
        else:
            self._draw_maximized()
            self.w_neuron.refresh(self)  # deferred while the maximization ran

    def _on_fold(self, change: dict) -> None:
        if change["new"] == 0:
            with self._working():
                self._refresh("neuron")

    def _on_max_progress(self, job: jobs.Job) -> None:
        if self._current(job, "maximize"):
            self.w_progress.value = job.progress

    def _on_projection_progress(self, job: jobs.Job) -> None:
        if self._current(job, "projection") and job.progress >= 0.3:  # the t-SNE part, after the embedding
            pct = f"{job.progress:.0%}"
            if pct not in self.w_scatter_caption.value:
                self.w_scatter_caption.value = html.escape(f"{job.message} {pct}")

    # ---- drawing --------------------------------------------------------------------------------
    def _draw_activations(self) -> None:
        maps = self.session.activations(self.layer, self.image_index)
        top = float(maps.max()) or 1.0
        tiles = []
        for c, m in enumerate(maps):
            rgba = render.colorize(m.numpy() / top, "viridis", normalized=True)
            rgba = render.upscale(rgba, max(1, TILE_SCALE * 24 // max(1, m.shape[-1])))
            tiles.append(framed(rgba) if c == self.channel else rgba)
        self.acts_frame = render.grid(tiles, cols=16, pad=1)
        show(self.w_acts, self.acts_frame)
        self.w_acts_bar.show(
            (
                render.colorbar("viridis", 128, 14),
                ("0: off", f"{top:.2f}: strongest"),
                "activation (every tile, one scale)",
            )
        )
        self.w_acts_caption.value = (
            f"<b>{html.escape(self.layer)}</b>: {len(maps)} channels of image {self.image_index}; "
            f"channel {self.channel} framed red"
        )

    def _draw_patches(self) -> None:
        n = len(self.images)
        top = self.session.cached("patches", self.layer)
        if top is None:
            self.w_patches_caption.value = f"Searching the top patches of {html.escape(self.layer)} over {n} images..."
            return
        r = top.row(self.channel)
        crops = top.patches(self.images, self.channel)
        tiles = [rgb(p) for p in crops] or [np.full((PATCH_PX, PATCH_PX, 4), 255, np.uint8)]
        show(self.w_patches, render.grid(tiles, pad=2))
        vals = ", ".join(f"{v:.2f}" for v in top.values[r].tolist() if np.isfinite(v))
        size = top.field.size if top.field is not None else "gradient-measured"
        self.w_patches_caption.value = (
            f"Top {len(crops)} patches of channel {self.channel} (receptive field {size}); activations {vals}"
        )

    def _draw_neighbours(self) -> None:
        q = self.image_index
        if self.session.cached("embedding", self.layer) is None:
            self.w_neigh_caption.value = f"Embedding the images at {html.escape(self.layer)}..."
            return
        nf, npx = self.session.neighbours(self.layer, q)
        if not nf:
            show(self.w_neigh, rgb(self.images[q]))
            return
        blank = np.full((PATCH_PX * 2, 6, 4), 255, np.uint8)
        row = [rgb(self.images[q], 2 * PATCH_PX), blank]
        row += [rgb(self.images[i], 2 * PATCH_PX) for i in nf] + [blank]
        row += [rgb(self.images[i], 2 * PATCH_PX) for i in npx]
        self.neighbours_shown = (nf, npx)
        show(self.w_neigh, render.grid(row, pad=2))
        name = self.session.class_name
        self.w_neigh_caption.value = (
            f"Image {q} ({html.escape(name(q))}), then its {len(nf)} nearest neighbours in feature space "
            f"({html.escape(', '.join(name(i) for i in nf))}), then in pixel space "
            f"({html.escape(', '.join(name(i) for i in npx))})"
        )

    def _draw_maximized(self) -> None:
        draw_maximized(self)

    # ---- embedding scatter ------------------------------------------------------------------------
    def _dots(self) -> np.ndarray | None:
        """The shown projection's dots in scatter pixels, or None while it is being computed."""
        key = (self.layer, self.projection)
        if key not in self._xy:
            xy = self.session.cached("projection", *key)
            if xy is None:
                return None
            self._xy[key] = scatter_pixels(xy, SCATTER, MARGIN)
        return self._xy[key]

    def _draw_scatter(self) -> None:
        what = PROJECTIONS[self.projection]
        xy = self._dots()
        if xy is None:
            self.w_scatter_caption.value = html.escape(
                f"Computing {what} of {self.layer} for {len(self.images)} images..."
            )
            return
        rgba = np.full((SCATTER, SCATTER, 4), 255, np.uint8)
        n_cls = int(self.labels.max()) + 1 if int(self.labels.max()) >= 0 else 1
        colours = render.palette(n_cls + 1)[1:]
        for i, (px, py) in enumerate(xy):
            lab = int(self.labels[i])
            rgba[SCATTER - 1 - py - 1 : SCATTER - 1 - py + 1, px - 1 : px + 1] = (
                colours[lab] if lab >= 0 else (90, 90, 90, 255)
            )
        px, py = xy[self.image_index]
        y0, x0 = SCATTER - 1 - py, px
        rgba[max(y0 - 3, 0) : y0 + 4, max(x0 - 3, 0) : x0 + 4][[0, -1]] = (0, 0, 0, 255)
        rgba[max(y0 - 3, 0) : y0 + 4, max(x0 - 3, 0) : x0 + 4][:, [0, -1]] = (0, 0, 0, 255)
        self.scatter.set_layer("image", rgba)
        names = self.session.classes or [str(c) for c in range(n_cls)]
        legend = " ".join(
            f'<span style="color:rgb({c[0]},{c[1]},{c[2]})">&#9632;</span> {html.escape(str(names[k]))}'
            for k, c in enumerate(colours[: len(names)])
        )
        self.w_scatter_caption.value = (
            f"{what} of {html.escape(self.layer)} (pooled), {len(xy)} images; image {self.image_index} ringed. "
            f"Hover a dot for its image, click to select it.<br>{legend}"
        )

    def nearest_dot(self, y: int, x: int) -> int:
        """Index of the image whose dot is nearest to scatter pixel (y, x)."""
        xy = self._dots()
        if xy is None:
            raise ValueError(f"the {PROJECTIONS[self.projection]} is still being computed; wait for it")
        d = (xy[:, 0] - x) ** 2 + (SCATTER - 1 - xy[:, 1] - y) ** 2
        return int(np.argmin(d))

    def _scatter_hover(self, y: int, x: int) -> str:
        if self._dots() is None:
            return "computing..."
        i = self.nearest_dot(y, x)
        self.w_thumb.value = render.to_png(rgb(self.images[i], 2 * PATCH_PX))
        return f"image {i} ({self.session.class_name(i)})"  # a Label: plain text

    def _scatter_click(self, y: int, x: int) -> None:
        if self._dots() is not None:
            self.image_index = self.nearest_dot(y, x)

    # ---- background work --------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the background work (what it finished stays cached) and wait for it (1 s at most)."""
        self.session.cancel()
        self.session.wait(1.0)
        self._say()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background work is done; True if nothing is running."""
        return self.session.wait(timeout)

    def close(self) -> None:
        """Stop the background work (it lets go of the model within a second) and close the widget."""
        if "session" in vars(self):  # a constructor that failed made none (close runs on __del__ too)
            self.session.close()
        super().close()

    def composite(self) -> np.ndarray:
        return self.acts_frame

    def heading(self) -> str:
        return f"{self.layer}: activations of image {self.image_index}, channel {self.channel} framed"
