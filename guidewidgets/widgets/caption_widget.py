"""CaptionWidget: a generated caption, one button per word, and where the captioner looked for it.

A thin view over :class:`guidewidgets.attend.CaptionSession`: pick a held-out scene (or the next
one), read the generated caption beside the reference, click a word (or step with the arrow keys)
to see its attention map over the image with a colour bar, and switch between soft attention
(``z = sum_i p_i a_i``: the map is p) and hard attention (one cell sampled from p and read alone:
the sampled cell is outlined on top of p; "Resample" draws another).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets as T

from .. import render
from ..attend.captioner import GRID, CaptionSession
from .base import WidgetBase, error_text
from .image_view import ImageView

__all__ = ["CaptionWidget"]

_CMAP = "turbo (fade)"  # Why: low attention leaves the photo visible


class CaptionWidget(WidgetBase):
    """Caption a scene and show each word's attention map.

    Args:
        session: a :class:`CaptionSession` (default: the shipped captioner on 64 held-out scenes).
        index: the scene shown first; mode: ``"soft"`` or ``"hard"``; word: the word shown first.
        display_size: on-screen size of the image in px.
    """

    export_stem = "caption_attention"

    index = T.Int(0, help="scene shown (index into session.scenes)")
    mode = T.Unicode("soft", help="'soft' (z = sum p_i a_i) or 'hard' (one sampled cell)")
    word = T.Int(0, help="the word whose attention map is shown (0-based)")
    seed = T.Int(0, help="seed of the hard-attention samples")

    def __init__(
        self,
        session: CaptionSession | None = None,
        index: int = 0,
        mode: str = "soft",
        word: int = 0,
        display_size: int = 288,
        *,
        presenter: bool | None = None,
    ) -> None:
        super().__init__(presenter=presenter)
        self.session = session if session is not None else CaptionSession(index=index, mode=mode)
        with self._building():
            self._base_controls()
            self.opacity = 0.55
            n = len(self.session.scenes)
            side = int(self.session.image.shape[-1])
            self.view = ImageView(side, side, display_size=display_size)
            self.view.value_fn = self._hover
            self.view.on("down", self._click)
            self.view.canvas.on_key_down(self.key_down)
            self.w_index = W.BoundedIntText(min=0, max=n - 1, description="scene", layout=W.Layout(width="11em"))
            self.w_next = W.Button(description="Next image", icon="forward", tooltip="the next held-out scene")
            self.w_mode = W.ToggleButtons(
                options=[("soft attention", "soft"), ("hard attention", "hard")],
                tooltips=["z = sum_i p_i a_i over all cells", "z = a_i of one cell sampled from p"],
            )
            self.w_resample = W.Button(description="Resample", icon="random", tooltip="another hard-attention sample")
            self.w_words = W.ToggleButtons(options=[], style={"button_width": "auto"})
            self.w_words.add_class("gw-caption-words")
            self.w_prev_word = W.Button(icon="arrow-left", tooltip="previous word", layout=W.Layout(width="40px"))
            self.w_next_word = W.Button(icon="arrow-right", tooltip="next word", layout=W.Layout(width="40px"))
            self.w_caption = W.HTML()
            self.w_heading = W.HTML()
            h = self.view.height * self.view.scale
            self.w_bar = W.Image(
                value=render.to_png(render.colorbar(_CMAP, length=h, thickness=14)),
                format="png",
                layout=W.Layout(width="14px", height=f"{h}px"),
            )
            self.w_bar_hi = W.HTML()
            self.w_bar_lo = W.HTML("<b>0</b>: none")
            bar = W.VBox(
                [
                    self.w_bar_hi,
                    self.w_bar,
                    self.w_bar_lo,
                    W.HTML("<span class='gw-muted'>attention<br>per cell</span>"),
                ],
                layout=W.Layout(margin="0 0 0 6px", width="auto", max_width="10em"),
            )
            bar.add_class("gw-colorbar")
            panel = W.HBox([self.view, bar])
            panel.add_class("gw-panel")
            W.link((self, "index"), (self.w_index, "value"))
            W.link((self, "mode"), (self.w_mode, "value"))
            self.w_next.on_click(lambda _: self.next_image())
            self.w_resample.on_click(lambda _: self.resample())
            self.w_prev_word.on_click(lambda _: self.step_word(-1))
            self.w_next_word.on_click(lambda _: self.step_word(1))
            self.w_words.observe(self._on_word_button, "index")
            self.w_opacity.observe(lambda _: self._draw(), "value")
            self.children = [
                W.HTML(
                    "<b>Show, attend and tell</b>: the decoder says one word per step; click a word to see "
                    "where it looked (attention over the 12 x 12 feature grid)."
                ),
                W.HBox([self.w_index, self.w_next, self.w_mode, self.w_resample]),
                W.HBox([self.w_prev_word, self.w_words, self.w_next_word]),
                self.w_caption,
                self.w_heading,
                panel,
                self.w_opacity,
                self._status_row(),
                self.w_export_out,
            ]
            with self._quiet():
                self.index, self.mode = self.session.index, self.session.mode
            self._refresh(word)

    # ---- actions -----------------------------------------------------------------------------------
    def pick(self, index: int) -> None:
        """Show scene ``index``."""
        self.index = index

    def next_image(self) -> None:
        """Show the next scene."""
        self.index = (self.index + 1) % len(self.session.scenes)

    def resample(self) -> None:
        """Another hard-attention sample (switches to hard attention)."""
        with self._quiet():
            self.seed += 1
            self.mode = "hard"
        self._recaption(self.session.set_mode, "hard", self.seed)

    def select_word(self, k: int) -> None:
        """Show word ``k``'s map (0-based)."""
        n = len(self.session.words)
        if not 0 <= k < n:
            self.status = f"Error: word index must be from 0 to {n - 1} (the caption has {n} words), got {k}"
            return
        self.word = k

    def step_word(self, delta: int) -> None:
        """The previous (-1) or next (+1) word, wrapping around."""
        n = len(self.session.words)
        if n:
            self.word = (self.word + delta) % n

    @T.validate("index")
    def _valid_index(self, proposal: dict[str, Any]) -> int:
        n = len(self.session.scenes)
        v = proposal["value"]
        if not 0 <= v < n:
            return self._reject("index", f"scene index must be from 0 to {n - 1}, got {v}")
        return int(v)

    @T.validate("mode")
    def _valid_mode(self, proposal: dict[str, Any]) -> str:
        if proposal["value"] not in ("soft", "hard"):
            return self._reject("mode", f"mode must be 'soft' or 'hard', got {proposal['value']!r}")
        return str(proposal["value"])

    @T.observe("index")
    def _on_index(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._recaption(self.session.pick, change["new"])

    @T.observe("mode")
    def _on_mode(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self._recaption(self.session.set_mode, change["new"])

    @T.observe("word")
    def _on_word(self, change: dict[str, Any]) -> None:
        if self._syncing:
            return
        with self._quiet():
            self.w_words.index = change["new"]
        self._draw()

    def _on_word_button(self, change: dict[str, Any]) -> None:
        if not self._syncing and change["new"] is not None:
            self.word = int(change["new"])

    def _recaption(self, action: Callable[..., Any], *args: Any) -> None:
        try:
            action(*args)
        except Exception as err:
            self.status = f"Error: {error_text(err)}"
            with self._quiet():  # the traits go back to what is shown
                self.index, self.mode = max(self.session.index, 0), self.session.mode
            return
        self._refresh(0)

    def _refresh(self, word: int) -> None:
        s = self.session
        words = s.words
        with self._quiet():
            self.w_words.options = [(f"{w}", k) for k, w in enumerate(words)]
            self.word = min(max(0, int(word)), max(0, len(words) - 1))
            self.w_words.index = self.word if words else None
        self.w_resample.disabled = self.mode != "hard"
        said = html.escape(" ".join(words))
        if s.truth is not None:
            ref = " ".join(s.truth["words"])
            ok = " ".join(words) == ref
            mark = '<span class="gw-good">matches</span>' if ok else '<span class="gw-bad">differs</span>'
            self.w_caption.value = f"<b>says</b>: {said} &nbsp; <b>reference</b>: {html.escape(ref)} ({mark})"
        else:
            self.w_caption.value = f"<b>says</b>: {said}"
        self._clear_error()
        self._draw(image=True)  # a new caption may come with a new image

    # ---- drawing -------------------------------------------------------------------------------------
    def current_map(self) -> np.ndarray | None:
        """The shown word's p over the image (H, W), per-cell weights (the 12 x 12 grid sums to 1)."""
        if not self.session.words:
            return None
        return self.session.word_map(self.word, which="p").numpy()

    def _sampled_cell(self) -> tuple[int, int] | None:
        if self.mode != "hard" or not self.session.words:
            return None
        cell = int(self.session.result["cells"][self.word])
        return divmod(cell, GRID)

    def _overlay(self, m: np.ndarray | None) -> np.ndarray | None:
        if m is None:
            return None
        layer = render.heatmap_rgba(m, _CMAP, opacity=self.opacity, vrange=(0.0, float(m.max()) or 1.0))
        cell = self._sampled_cell()
        if cell is not None:
            step = layer.shape[0] // GRID
            y0, x0 = cell[0] * step, cell[1] * step
            y1, x1 = y0 + step - 1, x0 + step - 1
            for sl in (
                np.s_[y0, x0 : x1 + 1],
                np.s_[y1, x0 : x1 + 1],
                np.s_[y0 : y1 + 1, x0],
                np.s_[y0 : y1 + 1, x1],
            ):
                layer[sl] = (255, 255, 255, 255)
        return layer

    def _draw(self, image: bool = False) -> None:
        # A word or opacity change redraws only the overlay: the photo is sent when it changes.
        m = self.current_map()
        frames = {"overlay": self._overlay(m)}
        if image:
            frames["image"] = render.to_rgba(self.session.image)
        self.view.set_layers(**frames)
        self.w_bar_hi.value = f"<b>{m.max():.2f}</b>: most" if m is not None else ""
        self.w_heading.value = f"<b>{html.escape(self.heading())}</b>"
        if m is not None:
            mass = self.session.mass_inside(self.word)
            where = f"; {100 * mass:.0f}% of p lies on the pixels this word names" if mass is not None else ""
            self.status = f"word {self.word + 1} of {len(self.session.words)}{where}"

    def _hover(self, y: int, x: int) -> str:
        m = self.current_map()
        return "" if m is None else f"p of this cell: {m[y, x]:.3f}"

    def _click(self, y: int, x: int) -> None:
        # Why: the inverse question, "which word looked here most?"
        res = self.session.result
        if not res["words"]:
            return
        cy, cx = y * GRID // self.view.height, x * GRID // self.view.width
        self.word = int(res["p"][:, cy, cx].argmax())

    # ---- WidgetBase ------------------------------------------------------------------------------------
    def composite(self) -> np.ndarray:
        base = render.to_rgba(self.session.image)
        layer = self._overlay(self.current_map())
        return base if layer is None else render.overlay(base, layer, alpha=1.0)

    def heading(self) -> str:
        words = self.session.words
        if not words:
            return "no words generated"
        trained = ", REINFORCE-trained decoder" if self.session.hard_trained else ""
        kind = (
            f"hard attention: the sampled cell outlined, the weights p under it{trained}"
            if self.mode == "hard"
            else "soft attention: the weight p of each cell"
        )
        return f'"{words[self.word]}" (word {self.word + 1} of {len(words)}): {kind}'

    def colorbar(self) -> tuple[np.ndarray, tuple[str, str], str] | None:
        m = self.current_map()
        hi = f"{m.max():.2f}" if m is not None else "1"
        return render.colorbar(_CMAP), ("0", hi), "attention weight of a 12 x 12 cell (all cells sum to 1)"

    def shortcuts(self) -> dict[str, tuple[str, Callable[[], Any]]]:
        return {
            "ArrowLeft": ("previous word", lambda: self.step_word(-1)),
            "ArrowRight": ("next word", lambda: self.step_word(1)),
            "n": ("next image", self.next_image),
            "h": ("soft / hard", lambda: setattr(self, "mode", "soft" if self.mode == "hard" else "hard")),
        }
