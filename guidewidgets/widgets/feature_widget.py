"""FeatureWidget: pick a layer and a channel; see what the channel responds to.

Panels: the layer's activation maps for the current image (the chosen channel framed), the
channel's top patches over the widget's images, the image that maximises the channel (computed
in a background thread with a progress bar, cached, cancelled by the next request), and the
current image's nearest neighbours in feature space (the layer, pooled) next to pixel space.
State lives in traitlets (``layer``, ``channel``, ``image_index``, ``busy``, ``status``), linked to
the controls, so a notebook can set it and a test can drive it without a browser.

The embedding scatter (PCA or t-SNE of the layer's pooled vectors, coloured by class) is drawn in
numpy onto the package's canvas view: hovering a dot shows that image's thumbnail, clicking it
selects the image. Why not bqplot, plotly or ipympl: none is a dependency, and the canvas view
already works in JupyterLab 4, Notebook 7 and Voila (see NOTES.md); a few hundred dots need no
more than that.
"""

from __future__ import annotations

import html
import threading
from typing import Any

import ipywidgets as W
import numpy as np
import torch
import traitlets as T
from torch import nn

from .. import features, hooks, render
from ..features._common import batches
from .base import WidgetBase, error_text
from .compare import ColorBar
from .image_view import ImageView

PATCH_PX = 64  # each top patch and neighbour is shown this many px wide (readable from the back row)
TILE_SCALE = 2
SCATTER = 160  # the scatter's side in its own pixels (shown 2x)
MARGIN = 6


class _Cancelled(Exception):
    pass


def _png(rgba: np.ndarray) -> bytes:
    return render.to_png(rgba)


def _show(image: W.Image, rgba: np.ndarray) -> None:
    """Put ``rgba`` into ``image`` at its own pixel size (a flex box would stretch it otherwise)."""
    image.value = _png(rgba)
    image.layout.width, image.layout.height = f"{rgba.shape[1]}px", f"{rgba.shape[0]}px"


def _rgb(t: torch.Tensor, px: int = PATCH_PX) -> np.ndarray:
    """(3, h, w) image in [0, 1] -> RGBA about ``px`` wide (nearest-neighbour enlargement)."""
    rgba = render.to_rgba(t.clamp(0, 1))
    return render.upscale(rgba, max(1, px // max(1, rgba.shape[1])))


class FeatureWidget(WidgetBase):
    """Activation maps, top patches, activation maximization and neighbours of one layer's channels.

    Parameters
    ----------
    model: a CNN (default: the embedded ``zoo.load("shapes-classifier")``).
    data: images to search: a ShapeScenes, a (N, 3, H, W) tensor or a sequence of images / dicts
        with "image" (default: 256 ShapeScenes); at most ``max_images`` are used.
    k: top patches and neighbours shown; steps: activation-maximization steps.
    """

    layer = T.Unicode("")
    channel = T.Int(0)
    image_index = T.Int(0)
    projection = T.Unicode("pca", help="'pca' or 'tsne': the embedding scatter's map")
    busy = T.Bool(False)
    export_stem = "features"

    def __init__(
        self,
        model: nn.Module | None = None,
        data: Any = None,
        *,
        k: int = 8,
        steps: int = 96,
        max_images: int = 256,
        presenter: bool | None = None,
    ) -> None:
        super().__init__(presenter=presenter)
        with self._building():
            from .. import zoo

            self.model = model if model is not None else zoo.load("shapes-classifier")
            data = data if data is not None else zoo.ShapeScenes(max_images, seed=1)
            xs, ys = [], []
            for _start, x, y in batches(data, 64):
                xs.append(x)
                ys.append(y)
                if sum(len(v) for v in xs) >= max_images:
                    break
            self.images = torch.cat(xs)[:max_images].float()
            self.labels = torch.cat(ys)[:max_images]
            self.k, self.steps = int(k), int(steps)
            self.layers = [fm.name for fm in hooks.feature_maps(self.model, self.images[:1])]
            if not self.layers:
                raise ValueError("this model has no layer with a spatial feature map; FeatureWidget needs a CNN")
            default = getattr(self.model, "default_explain_layer", "")
            self._channels = {fm.name: fm.shape[0] for fm in hooks.feature_maps(self.model, self.images[:1])}
            self._patches: dict[str, features.TopPatches] = {}
            self._embeddings: dict[str, features.Embeddings] = {}
            self._pixels = features.pixels(self.images)
            self._maximized: dict[tuple[str, int], torch.Tensor] = {}
            self._xy: dict[tuple[str, str], np.ndarray] = {}  # dot positions (N, 2) in scatter pixels
            self._job: threading.Thread | None = None
            self._cancel = threading.Event()
            self._job_lock = threading.Lock()

            self.w_layer = W.Dropdown(options=self.layers, description="Layer")
            self.w_channel = W.BoundedIntText(min=0, max=0, description="Channel")
            self.w_image = W.IntSlider(min=0, max=len(self.images) - 1, description="Image")
            self.w_progress = W.FloatProgress(min=0.0, max=1.0, description="Maximising", layout=W.Layout(width="auto"))
            self.w_acts, self.w_patches, self.w_max, self.w_neigh = (W.Image(format="png") for _ in range(4))
            self.w_acts_caption, self.w_patches_caption, self.w_max_caption, self.w_neigh_caption = (
                W.HTML() for _ in range(4)
            )
            self.scatter = ImageView(SCATTER, SCATTER, scale=2)
            self.scatter.value_fn = self._scatter_hover
            self.scatter.on("down", self._scatter_click)
            self.w_projection = W.ToggleButtons(options=[("PCA", "pca"), ("t-SNE", "tsne")], value="pca")
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
                self.layer = default if default in self.layers else self.layers[-1]
            self.w_channel.max = self._channels[self.layer] - 1
            W.link((self, "layer"), (self.w_layer, "value"))
            W.link((self, "channel"), (self.w_channel, "value"))
            W.link((self, "image_index"), (self.w_image, "value"))
            W.link((self, "projection"), (self.w_projection, "value"))
            self.w_acts_bar = ColorBar(128)
            acts = W.HBox([W.VBox([self.w_acts_caption, self.w_acts]), self.w_acts_bar])
            acts.add_class("gw-panel")
            self.w_tabs = W.Tab(
                [
                    W.VBox([self.w_patches_caption, self.w_patches]),
                    W.VBox([self.w_neigh_caption, self.w_neigh]),
                    W.HBox([W.VBox([self.w_scatter_caption, self.w_projection, self.scatter]), self.w_thumb]),
                ],
                titles=("Top patches", "Neighbours", "Embedding"),
            )
            self.children = [
                W.HBox([self.w_layer, self.w_channel, self.w_image]),
                W.HBox([acts, W.VBox([self.w_max_caption, self.w_max, self.w_progress])]),
                self.w_tabs,
                self.w_status,
                W.HBox([self.w_export, self.w_export_out]),
            ]
        self.observe(self._on_change, ["layer", "channel", "image_index", "projection"])
        self._refresh()

    # ---- validation -----------------------------------------------------------------------------
    @T.validate("layer")
    def _valid_layer(self, proposal: dict) -> str:
        if proposal["value"] not in getattr(self, "layers", [proposal["value"]]):
            return self._reject("layer", f"{proposal['value']!r} is no feature-map layer; pick one of {self.layers}")
        return proposal["value"]

    @T.validate("channel")
    def _valid_channel(self, proposal: dict) -> int:
        n = self._channels.get(self.layer, 1) if hasattr(self, "_channels") else 1
        if not 0 <= proposal["value"] < n:
            return self._reject(
                "channel", f"channel {proposal['value']} out of range: {self.layer} has {n} (0 to {n - 1})"
            )
        return proposal["value"]

    @T.validate("projection")
    def _valid_projection(self, proposal: dict) -> str:
        if proposal["value"] not in ("pca", "tsne"):
            return self._reject("projection", f"projection must be 'pca' or 'tsne', got {proposal['value']!r}")
        return proposal["value"]

    @T.validate("image_index")
    def _valid_image(self, proposal: dict) -> int:
        n = len(self.images) if hasattr(self, "images") else 1
        if not 0 <= proposal["value"] < n:
            return self._reject("image_index", f"there is no image {proposal['value']} (0..{n - 1})")
        return proposal["value"]

    # ---- updates --------------------------------------------------------------------------------
    def _on_change(self, change: dict) -> None:
        if self._syncing:
            return
        if change["name"] == "layer":
            with self._quiet():
                self.w_channel.max = self._channels[self.layer] - 1
                if self.channel >= self._channels[self.layer]:
                    self.channel = 0
        self._refresh()

    def _refresh(self) -> None:
        # Why cancel first: the running maximization holds the model's lock until its next step.
        self.cancel()
        self.w_channel.max = self._channels[self.layer] - 1
        try:
            self._draw_activations()
            self._draw_patches()
            self._draw_neighbours()
            self._draw_scatter()
            self._start_maximizing()
            self._clear_error()
        except Exception as err:
            self.status = f"Error: {error_text(err)}"

    def _draw_activations(self) -> None:
        maps, _ = features.activation_maps(self.model, self.layer, self.images[self.image_index], sort=None)
        top = float(maps.max()) or 1.0
        tiles = []
        for c, m in enumerate(maps):
            rgba = render.colorize(m.numpy() / top, "viridis", normalized=True)
            rgba = render.upscale(rgba, max(1, TILE_SCALE * 24 // max(1, m.shape[-1])))
            if c == self.channel:
                rgba = rgba.copy()
                rgba[:2], rgba[-2:], rgba[:, :2], rgba[:, -2:] = (
                    (255, 0, 0, 255),
                    (255, 0, 0, 255),
                    (255, 0, 0, 255),
                    (255, 0, 0, 255),
                )
            tiles.append(rgba)
        self.acts_frame = render.grid(tiles, cols=16, pad=1)
        _show(self.w_acts, self.acts_frame)
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
        if self.layer not in self._patches:
            self.status = f"Searching the top patches of {self.layer} over {len(self.images)} images..."
            self._patches[self.layer] = features.top_patches(self.model, self.layer, self.images, k=self.k)
            self.status = ""
        top = self._patches[self.layer]
        r = top.row(self.channel)
        crops = top.patches(self.images, self.channel)
        tiles = [_rgb(p) for p in crops] or [np.full((PATCH_PX, PATCH_PX, 4), 255, np.uint8)]
        _show(self.w_patches, render.grid(tiles, pad=2))
        vals = ", ".join(f"{v:.2f}" for v in top.values[r].tolist() if np.isfinite(v))
        size = top.field.size if top.field is not None else "gradient-measured"
        self.w_patches_caption.value = (
            f"Top {len(crops)} patches of channel {self.channel} (receptive field {size}); activations {vals}"
        )

    def _draw_neighbours(self) -> None:
        embedding = self._embedding()
        q, k = self.image_index, min(self.k // 2 + 1, len(self.images) - 1)
        if k < 1:
            _show(self.w_neigh, _rgb(self.images[q]))
            return
        nf = features.neighbours(embedding, q, k=k)[0].tolist()
        npx = features.neighbours(self._pixels, q, k=k)[0].tolist()
        blank = np.full((PATCH_PX * 2, 6, 4), 255, np.uint8)
        row = [_rgb(self.images[q], 2 * PATCH_PX), blank]
        row += [_rgb(self.images[i], 2 * PATCH_PX) for i in nf] + [blank]
        row += [_rgb(self.images[i], 2 * PATCH_PX) for i in npx]
        self.neighbours_shown = (nf, npx)
        _show(self.w_neigh, render.grid(row, pad=2))
        names = getattr(self.model, "classes", None)

        def name(i: int) -> str:
            lab = int(self.labels[i])
            return names[lab] if names is not None and 0 <= lab < len(names) else str(lab)

        self.w_neigh_caption.value = (
            f"Image {q} ({html.escape(name(q))}), then its {k} nearest neighbours in feature space "
            f"({html.escape(', '.join(name(i) for i in nf))}), then in pixel space "
            f"({html.escape(', '.join(name(i) for i in npx))})"
        )

    # ---- embedding scatter ------------------------------------------------------------------------
    def _embedding(self) -> features.Embeddings:
        if self.layer not in self._embeddings:
            e = features.embed(self.model, self.images, layer=self.layer)
            e.labels = self.labels
            self._embeddings[self.layer] = e
        return self._embeddings[self.layer]

    def _draw_scatter(self) -> None:
        key = (self.layer, self.projection)
        if key not in self._xy:
            xy = features.project(self._embedding(), "tsne" if self.projection == "tsne" else "pca", seed=0)
            lo, hi = xy.min(0), xy.max(0)
            span = np.where(hi - lo > 0, hi - lo, 1.0)
            self._xy[key] = np.rint(MARGIN + (xy - lo) / span * (SCATTER - 1 - 2 * MARGIN)).astype(int)
        xy = self._xy[key]
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
        names = getattr(self.model, "classes", None) or [str(c) for c in range(n_cls)]
        legend = " ".join(
            f'<span style="color:rgb({c[0]},{c[1]},{c[2]})">&#9632;</span> {html.escape(str(names[k]))}'
            for k, c in enumerate(colours[: len(names)])
        )
        what = "PCA" if self.projection == "pca" else "t-SNE"
        self.w_scatter_caption.value = (
            f"{what} of {html.escape(self.layer)} (pooled), {len(xy)} images; image {self.image_index} ringed. "
            f"Hover a dot for its image, click to select it.<br>{legend}"
        )

    def nearest_dot(self, y: int, x: int) -> int:
        """Index of the image whose dot is nearest to scatter pixel (y, x)."""
        xy = self._xy[(self.layer, self.projection)]
        d = (xy[:, 0] - x) ** 2 + (SCATTER - 1 - xy[:, 1] - y) ** 2
        return int(np.argmin(d))

    def _scatter_hover(self, y: int, x: int) -> str:
        i = self.nearest_dot(y, x)
        self.w_thumb.value = _png(_rgb(self.images[i], 2 * PATCH_PX))
        names = getattr(self.model, "classes", None)
        lab = int(self.labels[i])
        return f"image {i}" + (f" ({names[lab]})" if names is not None and 0 <= lab < len(names) else "")

    def _scatter_click(self, y: int, x: int) -> None:
        self.image_index = self.nearest_dot(y, x)

    # ---- activation maximization in the background ------------------------------------------------
    def _start_maximizing(self) -> None:
        key = (self.layer, self.channel)
        self.cancel()
        if key in self._maximized:
            self._show_maximized(key)
            return
        _show(self.w_max, np.full((192, 192, 4), 235, np.uint8))  # grey until the image arrives
        self.w_max_caption.value = f"Maximising channel {self.channel} of {html.escape(self.layer)}..."
        self.w_progress.value = 0.0
        self.busy = True
        cancel = threading.Event()
        self._cancel = cancel
        size = (int(self.images.shape[-2]), int(self.images.shape[-1]))

        def progress(step: int, total: int) -> None:
            if cancel.is_set():
                raise _Cancelled
            self.w_progress.value = step / total

        def run() -> None:
            try:
                res = features.maximize(
                    self.model, key[1], kind="channel", layer=key[0], size=size, steps=self.steps, lr=0.2,
                    param="fourier", jitter=2, progress=progress,
                )  # fmt: skip
            except _Cancelled:
                return
            except Exception as err:
                self.status = f"Error: activation maximization failed: {error_text(err)}"
                self.busy = False
                return
            self._maximized[key] = res.images[0]
            if (self.layer, self.channel) == key and not cancel.is_set():
                self._show_maximized(key)
                self.busy = False

        with self._job_lock:
            self._job = threading.Thread(target=run, daemon=True)
            self._job.start()

    def _show_maximized(self, key: tuple[str, int]) -> None:
        _show(self.w_max, _rgb(self._maximized[key], 192))
        self.w_progress.value = 1.0
        self.w_max_caption.value = (
            f"Image maximising channel {key[1]} of {html.escape(key[0])} ({self.steps} steps, Fourier + jitter)"
        )
        self.busy = False

    def cancel(self) -> None:
        """Stop the running activation maximization (its image is not cached)."""
        self._cancel.set()
        job = self._job
        if job is not None and job is not threading.current_thread():
            job.join()
        self.busy = False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the background maximization is done; True if nothing is running."""
        job = self._job
        if job is not None:
            job.join(timeout)
            return not job.is_alive()
        return True

    # ---- export ---------------------------------------------------------------------------------
    def composite(self) -> np.ndarray:
        return self.acts_frame

    def heading(self) -> str:
        return f"{self.layer}: activations of image {self.image_index}, channel {self.channel} framed"
