"""The ExplainWidget's parts that are plain view code: its controls and layout, and the image
list (defaults, added images, uploads). Kept apart so explain_widget.py reads as the behaviour."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import ipywidgets as W
import torch
from torch import nn

from .. import render
from .base import error_text
from .box_overlay import TrueBoxes, fit_boxes, item_boxes, source_boxes
from .compare import ColorBar, TileGrid
from .inputs import UploadError, decode_upload, fit, labelled_images


def load_inputs(
    model: nn.Module | None, images: Any, size: int | None, limit: int
) -> tuple[nn.Module, list[tuple[str, torch.Tensor, int | None, TrueBoxes | None]], int, list[str]]:
    """The model (default: the embedded classifier), labelled images with their true boxes (moved
    to the model's square size; None where unknown), the square size for the model and notes on
    conversions; a clear error for a non-module model or an empty image set."""
    if model is None:
        from .. import zoo

        model = zoo.load("shapes-classifier")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    notes: list[str] = []
    defaults = images is None
    source = ImageList._default_images() if defaults else images
    items = labelled_images(source, limit, notes)
    if not items:
        raise ValueError("no images given (an empty batch): pass at least one image, e.g. images=x[:8]")
    if not isinstance(size, int):
        size = getattr(model, "input_size", None)
    if not isinstance(size, int):
        shapes = {tuple(im.shape[1:]) for _, im, _ in items[: 4 if defaults else None]}
        h, w = next(iter(shapes)) if len(shapes) == 1 else (0, 0)
        size = h if h == w and 0 < h <= 512 else 224
    boxes = source_boxes(source, len(items))
    to_model = class_mapping(getattr(source, "classes", None), getattr(model, "classes", None))
    out = [
        (
            name,
            im,
            to_model(label),
            None if b is None else (fit_boxes(b[0], tuple(im.shape[1:]), int(size)), _map_labels(b[1], to_model)),
        )
        for (name, im, label), b in zip(items, boxes)
    ]
    return model, out, int(size), notes


def class_mapping(source: Any, target: Any) -> Callable[[int | None], int | None]:
    """Label index in a dataset's ``classes`` -> the same class's index in the model's, by name.

    Why: ShapeScenes labels count the six shapes while the segmenter's classes start with
    "background", so index 3 is a triangle in one and a square in the other. Unknown names map to
    None; without two class lists the index is kept.
    """
    if not source or not target or list(source) == list(target):
        return lambda i: i
    index = {str(c): k for k, c in enumerate(target)}
    names = [str(c) for c in source]
    return lambda i: None if i is None or not 0 <= i < len(names) else index.get(names[i])


def _map_labels(labels: torch.Tensor | None, to_model: Callable[[int | None], int | None]) -> torch.Tensor | None:
    if labels is None:
        return None
    mapped = [to_model(int(v)) for v in labels]
    return torch.tensor([-1 if m is None else m for m in mapped], dtype=torch.long)


class ImageList:
    """Mixin: the image list of an ExplainWidget (its ``session`` holds the images)."""

    session: Any
    size: int
    status: str
    image_index: int
    w_image: W.Dropdown
    w_upload: W.FileUpload

    @staticmethod
    def _default_images() -> dict[str, Any]:
        from .. import zoo

        scenes = zoo.ShapeScenes(4, seed=777, task="classification")  # zoo.train.TEST_SEED: held out
        items: dict[str, Any] = {}
        for i in range(len(scenes)):
            items[f"scene {i}: {scenes.classes[int(scenes[i]['label'])]}"] = scenes[i]
        with contextlib.suppress(Exception):  # photos are a bonus; the scenes alone make a working widget
            items.update({f"photo: {k}": v for k, v in zoo.photos().items()})
        return items

    # names, images and the cache live in the session; these are views of it
    images = property(lambda self: self.session.images)
    names = property(lambda self: self.session.names)
    classes = property(lambda self: self.session.classes)

    def add_image(self, image: Any, name: str | None = None, *, select: bool = True) -> int:
        """Add an image (anything ``inputs.as_image`` takes); returns its index, shown by default."""
        notes: list[str] = []
        ((_, im, label),) = labelled_images([image], 1, notes)
        b = item_boxes(image)
        true = () if b is None else (fit_boxes(b[0], tuple(im.shape[1:]), self.size), b[1])
        i = self.session.add_image(fit(im, self.size), name or f"image {len(self.images)}", label, *true)
        self.w_image.options = list(zip(self.names, range(len(self.names))))
        if select:
            self.image_index = i
        if notes:
            self.status = notes[0] + "."
        return i

    def load_upload(self, data: bytes, name: str = "upload") -> int | None:
        """Add an uploaded file; a bad file sets ``status`` and returns None instead of raising."""
        try:
            image, note = decode_upload(bytes(data), name)
        except UploadError as err:
            self.status = f"Upload refused: {err}"
            return None
        i = self.add_image(image, name)
        if note or not self.status.startswith("Error"):
            self.status = f"Loaded {name!r}" + (f" ({note})." if note else ".")
        return i

    def _on_upload(self, change: dict) -> None:
        for f in change["new"] or ():
            try:
                self.load_upload(bytes(f["content"]), str(f.get("name", "upload")))
            except Exception as err:  # never let an upload kill the widget
                self.status = f"Upload failed: {error_text(err)}"
        if change["new"]:
            self.w_upload.value = ()


def build_controls(self: Any) -> None:
    """Create the ExplainWidget's controls (``self.w_*``) and link them to its traitlets.

    Args:
        self: the ExplainWidget being built (its session, ``infos`` and ``view`` exist).
    """
    _make_controls(self)
    _wire_controls(self)


# Why an asterisk, not "(slow)": a shorter label keeps the buttons to fewer rows (a stopwatch glyph
# rendered as an empty box in headless Chromium: no font has it there).
SLOW = " *"
# Why a family row above the methods: 39 methods as one row of buttons wrapped to 6-7 rows and
# pushed the picture below the fold of a 1280 x 800 screen; one family's buttons take 1-3 rows.
FAMILIES = {"cam": "CAM family", "gradient": "Gradients", "perturbation": "Perturbation", "attention": "Attention"}


def _make_method_picker(self: Any) -> None:
    """Two rows: the method families, then the buttons of the family the shown method is in."""
    families = list(dict.fromkeys(v.family for v in self.infos.values()))
    count = {f: sum(v.family == f for v in self.infos.values()) for f in families}
    self.w_family = W.ToggleButtons(
        options=[(FAMILIES.get(f, f.title()), f) for f in families],
        tooltips=[f"{count[f]} methods" for f in families],
        style={"button_width": "auto"},
    )
    self.w_family.add_class("gw-compact")
    self._method_labels = {
        m: f"{i + 1 if i < 9 else ''} {v.title}{SLOW if v.slow else ''}".strip()
        for i, (m, v) in enumerate(self.infos.items())
    }
    self.w_method = W.ToggleButtons(options=[], style={"button_width": "auto"})
    self.w_method.add_class("gw-compact")  # tighter buttons save a row of height


def show_family(self: Any, family: str) -> None:
    """Show ``family``'s method buttons, the shown method pressed if it is one of them."""
    names = [m for m, v in self.infos.items() if v.family == family]
    self._picking = True  # setting options resets the selection: not a user's click
    try:
        self.w_family.value = family
        if [v for _, v in self.w_method.options] != names:  # Why: a click within the row resends nothing
            self.w_method.options = [(self._method_labels[m], m) for m in names]
            self.w_method.tooltips = [
                self.infos[m].summary + (" (slow: runs in the background)" if self.infos[m].slow else "") for m in names
            ]
        self.w_method.index = names.index(self.method) if self.method in names else None
    finally:
        self._picking = False


def _wire_method_picker(self: Any) -> None:
    self._picking = False

    def on_click(change: dict) -> None:
        if not self._picking and change["new"] is not None:
            self.method = change["new"]

    self.w_method.observe(on_click, "value")

    def on_family(change: dict) -> None:
        if not self._picking:
            show_family(self, change["new"])

    self.w_family.observe(on_family, "value")
    self.observe(lambda c: show_family(self, self.infos[c["new"]].family), "method")
    show_family(self, self.infos[self.method].family)


def _make_controls(self: Any) -> None:
    self.w_image = W.Dropdown(options=list(zip(self.names, range(len(self.names)))), description="Image")
    self.w_upload = W.FileUpload(accept="image/*", multiple=True, description="Upload")
    self.w_target = W.Dropdown(options=[], description="Target")
    self.w_find = W.Combobox(
        placeholder="find a class ...", options=self.classes, ensure_option=True, layout=W.Layout(width="11em")
    )
    _make_method_picker(self)
    self.w_summary = W.HTML()
    self.w_layer = W.Dropdown(options=[("default", "")], description="Layer")
    cmaps = [c for c in render.colormap_names(fade=True)]
    self.w_cmap = W.Dropdown(options=cmaps, description="Colours", layout=W.Layout(width="auto"))
    self._base_controls()
    self.w_raw = W.Checkbox(description="gradient image", indent=False)
    self.w_original = W.Checkbox(description="original beside", indent=False)
    self.w_compare = W.ToggleButton(description="Compare", icon="th", tooltip="several methods side by side")
    self.w_box = W.ToggleButton(
        description="Box", icon="square-o", tooltip="the map's box (threshold, largest component) and the true box"
    )
    self.w_box_threshold = W.FloatSlider(
        min=0.05, max=0.95, step=0.05, description="Threshold", readout_format=".0%", layout=W.Layout(width="260px")
    )
    self.w_checks = {
        m: W.Checkbox(description=v.title, indent=False, layout=W.Layout(margin="0 12px 0 0"))
        for m, v in self.infos.items()
    }
    self.w_shared = W.Checkbox(description="one colour scale", indent=False)
    self.w_compare_box = W.VBox(
        # Why a scrolled box: 39 checkboxes wrap to 5-6 rows; three rows stay in view, the rest scroll.
        [
            W.Box(
                list(self.w_checks.values()),
                layout=W.Layout(flex_flow="row wrap", max_height="5.6em", overflow="auto"),
            ),
            self.w_shared,
        ],
        layout=W.Layout(display="none"),
    )
    self.w_progress = W.FloatProgress(min=0.0, max=1.0, layout=W.Layout(visibility="hidden", width="160px"))
    self.w_heading = W.HTML()
    self.w_heading.add_class("gw-heading")
    side = f"{self.view.width * self.view.scale}px"
    self.w_orig_img = W.Image(format="png", layout=W.Layout(width=side, max_width=side, margin="0 8px 0 0"))
    self.w_orig_img.add_class("gw-fit")
    self.w_orig_img.add_class("gw-pixels")
    self.w_bar_box = ColorBar(self.view.height * self.view.scale)
    self.w_grid = TileGrid()


def _wire_controls(self: Any) -> None:
    _wire_method_picker(self)
    links = {"image_index": self.w_image, "layer": self.w_layer, "colormap": self.w_cmap}
    links.update(compare=self.w_compare, show_raw=self.w_raw, show_original=self.w_original, shared_scale=self.w_shared)
    links.update(box=self.w_box, box_threshold=self.w_box_threshold)
    for trait, ctl in links.items():
        W.link((self, trait), (ctl, "value"))

    def on_check(method: str, on: bool) -> None:
        if on != (method in self.compare_methods):
            self.compare_methods = [m for m in self.infos if (m in self.compare_methods) != (m == method)]

    def on_compare_methods(change: dict) -> None:
        with self._quiet():
            for m, box in self.w_checks.items():
                box.value = m in change["new"]

    def on_compare(change: dict) -> None:
        for w, on in ((self.w_panel, not change["new"]), (self.w_grid, change["new"])):
            w.layout.display = None if on else "none"
        self.w_compare_box.layout.display = self.w_grid.layout.display

    def on_find(change: dict) -> None:
        if change["new"] in self.classes:
            self.target = self.classes.index(change["new"])

    for m, box in self.w_checks.items():
        box.value = m in self.compare_methods
        box.observe(lambda c, m=m: on_check(m, c["new"]), "value")
    self.observe(on_compare_methods, "compare_methods")
    self.observe(on_compare, "compare")

    def on_target(change: dict) -> None:
        if change["new"] is not None:
            self.target = int(change["new"])

    self.w_target.observe(on_target, "value")
    self.w_find.observe(on_find, "value")
    self.w_upload.observe(self._on_upload, "value")
    self.observe(
        self._on_compute_change,
        ["image_index", "method", "layer", "target", "compare", "compare_methods", "show_raw", "shared_scale"],
    )
    self.observe(lambda _: self._syncing or self.update(), ["opacity", "colormap", "box", "box_threshold"])

    def on_box(change: dict) -> None:  # the threshold only matters with a box: out of the row without one
        self.w_box_threshold.disabled = not change["new"]
        self.w_box_threshold.layout.display = None if change["new"] else "none"

    on_box({"new": self.box})
    self.observe(on_box, "box")
    self.observe(lambda c: setattr(self.w_orig_img.layout, "display", None if c["new"] else "none"), "show_original")
    self.observe(lambda c: setattr(self.w_progress.layout, "visibility", "visible" if c["new"] else "hidden"), "busy")
    self._build_region_controls()


def layout(self: Any) -> list[W.Widget]:
    """The ExplainWidget's children, top to bottom."""
    self.w_panel = W.HBox([self.w_orig_img, self.view, self.w_bar_box])
    self.w_panel.add_class("gw-panel")
    return [
        W.HBox([self.w_image, self.w_upload, self.w_target, self.w_find]),
        self.w_family,
        self.w_method,
        self.w_summary,
        W.HBox([self.w_layer, self.w_cmap, self.w_opacity]),
        W.HBox([self.w_compare, self.w_box, self.w_box_threshold, self.w_raw, self.w_original]),
        self.w_compare_box,
        self.w_region_bar,
        self.w_heading,
        self.w_panel,
        self.w_grid,
        self._status_row(self.w_progress),
        self.w_export_out,
    ]
