"""The image view both widgets share: an ipycanvas ``MultiCanvas`` with four layers.

Layers, bottom to top: ``image`` (the picture), ``overlay`` (heatmap or segmentation), ``hints``
(user strokes, the asked pixel) and ``cursor`` (brush outline; the top layer also receives the
mouse events, ipycanvas only sends them from there).

Why it is built this way (see NOTES.md, measured):
- Draw commands sent before a browser view exists are lost, and drawing eagerly *and* in
  ``on_client_ready`` breaks Voila. So frames are kept here as state and sent only once a client
  said it is ready; every later ``client_ready`` (a re-attached or second view) replays them.
- RGB arrays go to the browser as lossy JPEG; RGBA as lossless PNG. Every frame here is RGBA.
- The canvas has a pixel size (``scale`` times the image) but is drawn at most that wide and
  narrower when the output area is (theme.py: ``width: 100%`` of a view capped at that size,
  ``image-rendering: pixelated``). ipycanvas reports mouse positions in canvas pixels whatever the
  drawn size, so mouse coordinates are divided by ``scale`` back to image pixels at any width.
  Small images are enlarged by an integer factor in numpy (nearest neighbour, exact blocks).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import ipywidgets as W
import numpy as np
from ipycanvas import MultiCanvas, hold_canvas

from .. import render

LAYERS = ("image", "overlay", "hints", "cursor")

# ipycanvas batches commands in one global manager (hold_canvas flips a global flag and tracks the
# "current canvas"); a background thread (a slow explanation finishing) drawing while the kernel
# thread draws a cursor would interleave their commands. All our drawing takes this lock.
_DRAW_LOCK = threading.RLock()

MouseHandler = Callable[[int, int], None]  # (y, x) in image pixels


def display_scale(height: int, width: int, display_size: int = 384) -> int:
    """The integer enlargement that brings the longer image side closest to ``display_size`` px."""
    return max(1, int(round(display_size / max(height, width))))


class ImageView(W.VBox):
    """A layered canvas of an ``height x width`` image shown ``scale`` times larger.

    ``frames[layer]`` holds each layer's RGBA frame at image resolution (what the widget asked
    for); ``sent[layer]`` the last array actually put into the canvas (display resolution), or
    ``None`` after a clear. Tests read both; the browser only ever sees ``sent``.
    """

    def __init__(self, height: int, width: int, *, scale: int | None = None, display_size: int = 384) -> None:
        self.height, self.width = int(height), int(width)
        self.scale = int(scale) if scale is not None else display_scale(self.height, self.width, display_size)
        if self.scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        dh, dw = self.height * self.scale, self.width * self.scale
        self.canvas = MultiCanvas(len(LAYERS), width=dw, height=dh, layout=W.Layout(width=f"{dw}px", height=f"{dh}px"))
        # fixed height (two lines): the hover text changes ~60 times a second and must never move the layout
        self.value_label = W.Label(value=" ", layout=W.Layout(height="2.9em", width="auto", overflow="hidden"))
        self.value_label.add_class("gw-readout")
        super().__init__([self.canvas, self.value_label], layout=W.Layout(max_width=f"{dw}px"))
        # The stylesheet (theme.py) lets the canvas shrink with the output area: ipycanvas scales mouse
        # positions by the canvas' drawn size, so image pixels stay exact at any width.
        self.add_class("gw-view")
        self.frames: dict[str, np.ndarray | None] = {name: None for name in LAYERS}
        self.sent: dict[str, np.ndarray | None] = {name: None for name in LAYERS}
        self.sent_count = 0  # number of put_image_data calls, for tests
        self.client_ready = False
        self.cursor: tuple[int, int, int] | None = None  # (y, x, radius) of the brush outline
        self.cursor_radius = 0
        self.value_fn: Callable[[int, int], str] | None = None
        self.pressed = False
        self._down: list[MouseHandler] = []
        self._move: list[MouseHandler] = []  # called on moves while the button is down
        self._up: list[MouseHandler] = []
        self.canvas.on_client_ready(self._on_client_ready)
        self.canvas.on_mouse_down(self.on_mouse_down)
        self.canvas.on_mouse_move(self.on_mouse_move)
        self.canvas.on_mouse_up(self.on_mouse_up)
        self.canvas.on_mouse_out(self.on_mouse_out)

    # ---- layers -------------------------------------------------------------------------------
    def set_layer(self, name: str, rgba: np.ndarray | None) -> None:
        """Replace a layer's frame (``(H, W, 4) uint8`` at image resolution, or ``None`` to clear)."""
        self.set_layers(**{name: rgba})

    def set_layers(self, **frames: np.ndarray | None) -> None:
        """Replace several layers, sent in one canvas message (no flicker between them)."""
        checked = {name: self._check(name, rgba) for name, rgba in frames.items()}
        self.frames.update(checked)
        if self.client_ready:
            with _DRAW_LOCK, hold_canvas():
                for name in checked:
                    self._send_layer(name)

    def _check(self, name: str, rgba: np.ndarray | None) -> np.ndarray | None:
        if name not in LAYERS:
            raise ValueError(f"unknown layer {name!r}; layers are {LAYERS}")
        if rgba is None:
            return None
        rgba = render.to_rgba(rgba)
        if rgba.shape[:2] != (self.height, self.width):
            raise ValueError(
                f"{name} frame is {rgba.shape[1]}x{rgba.shape[0]} px but the view shows "
                f"{self.width}x{self.height}; resize it first (view.resize)"
            )
        return rgba

    def _send_layer(self, name: str) -> None:  # not _send: that is ipywidgets.Widget's own
        layer = self.canvas[LAYERS.index(name)]
        frame = self.frames[name]
        layer.clear()
        if frame is None:
            self.sent[name] = None
            return
        big = render.upscale(frame, self.scale)
        layer.put_image_data(big, 0, 0)  # RGBA -> lossless PNG on the wire
        self.sent[name] = big
        self.sent_count += 1

    def redraw(self) -> None:
        """Send every layer again (what a newly attached browser view needs)."""
        if not self.client_ready:
            return
        with _DRAW_LOCK, hold_canvas():
            for name in ("image", "overlay", "hints"):
                self._send_layer(name)
            self._draw_cursor()

    def _on_client_ready(self) -> None:
        self.client_ready = True
        self.redraw()

    def resize(self, height: int, width: int, scale: int | None = None) -> None:
        """Show an image of another size; all layers are cleared."""
        self.height, self.width = int(height), int(width)
        if scale is not None:
            self.scale = int(scale)
        dh, dw = self.height * self.scale, self.width * self.scale
        self.canvas.width, self.canvas.height = dw, dh
        self.canvas.layout.width, self.canvas.layout.height = f"{dw}px", f"{dh}px"
        self.layout.max_width = f"{dw}px"
        self.frames = {name: None for name in LAYERS}
        self.cursor = None
        self.redraw()

    # ---- mouse --------------------------------------------------------------------------------
    def to_image(self, x: float, y: float) -> tuple[int, int] | None:
        """Canvas coordinates (as ipycanvas reports them) -> image pixel (y, x), or None if outside."""
        iy, ix = int(np.floor(y / self.scale)), int(np.floor(x / self.scale))
        if 0 <= iy < self.height and 0 <= ix < self.width:
            return iy, ix
        return None

    def on(self, event: str, handler: MouseHandler) -> None:
        """Register ``handler(y, x)`` for ``"down"``, ``"drag"`` (move with button down) or ``"up"``."""
        {"down": self._down, "drag": self._move, "up": self._up}[event].append(handler)

    def on_mouse_down(self, x: float, y: float) -> None:
        p = self.to_image(x, y)
        if p is None:
            return
        self.pressed = True
        for h in self._down:
            h(*p)

    def on_mouse_move(self, x: float, y: float) -> None:
        p = self.to_image(x, y)
        if p is None:
            self.on_mouse_out(x, y)
            return
        self._hover(*p)
        if self.pressed:
            for h in self._move:
                h(*p)

    def on_mouse_up(self, x: float, y: float) -> None:
        if not self.pressed:
            return
        self.pressed = False
        p = self.to_image(min(max(x, 0), self.width * self.scale - 1), min(max(y, 0), self.height * self.scale - 1))
        if p is None:  # cannot happen after the clamp; keeps the type checker sure
            return
        for h in self._up:
            h(*p)

    def on_mouse_out(self, x: float, y: float) -> None:
        if self.pressed:  # leaving the canvas ends a drag
            self.on_mouse_up(x, y)
        self.cursor = None
        self.value_label.value = " "
        if self.client_ready:
            with _DRAW_LOCK, hold_canvas():
                self._draw_cursor()

    def _hover(self, y: int, x: int) -> None:
        text = f"(y={y}, x={x})"
        if self.value_fn is not None:
            try:
                text += "  " + self.value_fn(y, x)
            except Exception as err:  # a readout must never break the mouse handling
                text += f"  ({type(err).__name__}: {err})"
        self.value_label.value = text
        self.cursor = (y, x, self.cursor_radius)
        if self.client_ready:
            with _DRAW_LOCK, hold_canvas():
                self._draw_cursor()

    def _draw_cursor(self) -> None:
        # Vector commands, not a frame: hover fires ~60 times a second and a ring is a few bytes.
        layer = self.canvas[LAYERS.index("cursor")]
        layer.clear()
        if self.cursor is None:
            return
        y, x, r = self.cursor
        s = self.scale
        layer.stroke_style = "white"
        layer.line_width = 1.5
        if r > 0:
            layer.stroke_circle((x + 0.5) * s, (y + 0.5) * s, (r + 0.5) * s)
        else:
            layer.stroke_rect(x * s, y * s, s, s)
