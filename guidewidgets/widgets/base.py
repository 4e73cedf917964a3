"""The one widget base: status line, errors, opacity, export and keyboard shortcuts.

``ExplainWidget``, ``GuideWidget`` and ``GainWidget`` build on :class:`WidgetBase`. A subclass:

1. calls ``super().__init__()`` and then, inside ``with self._building():``, creates its child
   widgets (a failing constructor then closes every widget it made: nothing stays registered);
2. calls ``self._base_controls()`` to get ``w_status``, ``w_opacity``, ``w_export``,
   ``w_export_out`` and ``w_help`` (``opacity`` and ``status`` traits are linked to them);
3. overrides :meth:`composite` (the picture, RGBA at image resolution) and optionally
   :meth:`heading`, :meth:`colorbar` and :meth:`shortcuts`.

Then ``export()`` offers a PNG at display resolution with heading and colour bar as a browser
download, ``export(path)`` also writes it; ``key_down(key, ctrl=...)`` runs a shortcut (the image
view's canvas calls it on key presses) and ``w_help`` lists them.
"""

from __future__ import annotations

import base64
import contextlib
import html
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import ipywidgets as W
import numpy as np
import traitlets as T

from .. import render
from . import theme
from .synced import SyncedBox

ERROR_PREFIXES = ("Error", "Upload refused", "Upload failed")
NOTEBOOK7_KEYS = ("ctrl+z", "ctrl+y")  # with the arrow keys: what Notebook 7 takes before a widget sees it


def error_text(err: BaseException | str) -> str:
    """``"TypeName: message"`` for an exception (a string passes through)."""
    return err if isinstance(err, str) else f"{type(err).__name__}: {err}"


def _registry() -> dict[Any, Any]:
    # ipywidgets 8 keeps live widgets in widget._instances (Widget.widgets is its deprecated alias)
    from ipywidgets.widgets import widget

    return getattr(widget, "_instances", None) or {}


class WidgetBase(SyncedBox):
    """Status line, opacity, export and shortcuts shared by the package's widgets."""

    status = T.Unicode("", help="one line: what happened last, or 'Error: ...' with what to do")
    opacity = T.Float(0.6, help="overlay opacity in [0, 1]")
    presenter = T.Bool(
        help="presenter mode: 18 px text, 22 px headings, larger thumbnails (default: theme.set_presenter)"
    )

    def __init__(self, presenter: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_class("gw-root")
        self._style = theme.style_widget()
        self.observe(self._keep_style, "children")
        self.observe(self._on_presenter, "presenter")
        if presenter is not None:
            self.presenter = presenter
        self._on_presenter({"new": self.presenter})

    @T.default("presenter")
    def _presenter_default(self) -> bool:
        return theme.presenter_default()

    def _keep_style(self, change: dict) -> None:
        # Why an observer: each widget lays out its own children; the stylesheet must stay among them.
        style = vars(self).get("_style")
        if style is not None and style not in change["new"]:
            self.children = [style, *change["new"]]

    def _on_presenter(self, change: dict) -> None:
        (self.add_class if change["new"] else self.remove_class)("gw-presenter")

    def _close_style(self) -> None:
        style = vars(self).get("_style")
        if style is not None:
            del self._style  # the HTML widget made a layout and a style widget of its own
            for w in (style.layout, style.style, style):
                w.close()

    def close(self) -> None:
        """Close the widget and the stylesheet it carries."""
        self._close_style()
        super().close()

    #: shown as the export file's stem
    export_stem = "view"

    # ---- construction ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _building(self) -> Iterator[None]:
        """Wrap child-widget creation: on an error, close every widget made meanwhile (and self)."""
        before = set(_registry())
        prev, self._syncing = self._syncing, True
        try:
            yield
        except BaseException:
            for key in list(set(_registry()) - before):
                w = _registry().get(key)
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()
            with contextlib.suppress(Exception):
                self._close_style()
                self.layout.close()  # made with the box itself, before the snapshot
                super().close()
            raise
        finally:
            self._syncing = prev

    def _base_controls(self, opacity_label: str = "Opacity") -> None:
        self.w_status = W.HTML(layout=W.Layout(min_height="1.6em"))
        self.w_status.add_class("gw-status")
        self.w_opacity = W.FloatSlider(
            min=0.0, max=1.0, step=0.05, description=opacity_label, readout_format=".2f", value=self.opacity
        )
        self.w_opacity.add_class("gw-short")  # "0.60": a narrow readout keeps the row from wrapping
        self.w_export = W.Button(description="Export PNG", icon="download", tooltip="download what is shown, titled")
        self.w_export_out = W.HTML()
        self.w_help = W.HTML(self._help_html())
        W.link((self, "opacity"), (self.w_opacity, "value"))
        self.w_export.on_click(lambda _: self._export_cued())
        self.observe(self._on_status, "status")

    def _status_row(self, progress: W.Widget | None = None) -> W.HBox:
        """Status line, a progress bar and Export in one row: kept out of the control rows, where
        they made a row wrap at 800 px."""
        self.w_status.layout.flex = "1 1 240px"
        keys = [self.w_help] if self.w_help.value else []  # a folded "Keys" list, when there are keys
        parts = [self.w_status, *([progress] if progress is not None else []), *keys, self.w_export]
        return W.HBox(parts, layout=W.Layout(align_items="center"))

    @T.validate("opacity")
    def _valid_opacity(self, proposal: dict) -> float:
        return float(min(1.0, max(0.0, proposal["value"])))

    # ---- status ---------------------------------------------------------------------------------
    def _reject(self, name: str, err: BaseException | str) -> Any:
        """For validators: keep the old value and say why in the status line."""
        self.status = f"Error: {err}"
        return getattr(self, name)

    def _on_status(self, change: dict) -> None:
        text = change["new"]
        color = theme.BAD if text.startswith(ERROR_PREFIXES) else theme.MUTED
        self.w_status.value = f'<span style="color:{color}">{html.escape(text)}</span>'

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        """Mark the widget busy (progress cursor, "working ..." after the status line) while a
        handler computes in the kernel, then unmark it.

        Why a CSS class: the class change is one small message that leaves the kernel before the
        work starts, so a click shows feedback within a round trip (the issue 25 goal: 100 ms)
        even when the answer takes longer; the status line keeps its own text. Nested calls
        mark once.
        """
        outer = "gw-working" not in self._dom_classes
        if outer:
            self.add_class("gw-working")
        try:
            yield
        finally:
            if outer:
                self.remove_class("gw-working")

    def _clear_error(self) -> None:
        # a new picture on screen means the last error no longer describes what the user sees
        if self.status.startswith("Error"):
            self.status = ""

    # ---- what subclasses draw -------------------------------------------------------------------
    def composite(self) -> np.ndarray:
        """What the view shows, flattened to one RGBA image at image resolution."""
        raise NotImplementedError

    def heading(self) -> str:
        """One line saying what is shown (export title)."""
        return ""

    def colorbar(self) -> tuple[np.ndarray, tuple[str, str], str] | None:
        """``(bar RGBA, (low label, high label), meaning)`` for the export, or None."""
        return None

    def display_scale(self) -> int:
        view = getattr(self, "view", None)
        return int(getattr(view, "scale", 1))

    def export_image(self) -> np.ndarray:
        """The export picture: the view at display resolution, heading above, colour bar beside."""
        pic = render.upscale(self.composite(), self.display_scale())
        cb = self.colorbar()
        if cb is None:
            return render.titled(pic, self.heading())
        bar, labels, meaning = cb
        return render.titled(pic, self.heading(), bar=bar, bar_labels=labels, caption=meaning)

    def to_png(self) -> bytes:
        """The export picture as PNG bytes."""
        return render.to_png(self.export_image())

    def export(self, path: str | os.PathLike[str] | None = None) -> str:
        """Offer the export picture as a browser download; with ``path``, also write it there.

        Returns the path written, or the download's file name. Errors go to ``status``.
        """
        try:
            png = self.to_png()
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.export_stem}.png")
            if path is not None:
                with open(path, "wb") as f:
                    f.write(png)
                name = os.path.basename(os.fspath(path))
        except Exception as err:
            self.status = f"Error: export failed: {error_text(err)}"
            return ""
        b64 = base64.b64encode(png).decode()
        where = f"Saved <code>{html.escape(os.fspath(path))}</code> &nbsp; " if path is not None else ""
        self.w_export_out.value = f'{where}<a download="{html.escape(name)}" href="data:image/png;base64,{b64}">download {html.escape(name)}</a>'
        self.exported = os.path.abspath(path) if path is not None else name
        return os.fspath(path) if path is not None else name

    exported: str | None = None

    def _export_cued(self) -> None:
        with self._working():  # drawing and encoding the picture takes a moment: say so at once
            self.export()

    # ---- keyboard -------------------------------------------------------------------------------
    def shortcuts(self) -> dict[str, tuple[str, Callable[[], Any]]]:
        """Key -> (help text, action). Keys: ``"r"``, ``"ArrowLeft"``, ``"ctrl+z"``, ``"1"`` ...; help
        text ``"1-9|method"`` lists the entry as ``1-9``, an empty text leaves it out of the help line."""
        return {}

    def key_down(self, key: str, shift: bool = False, ctrl: bool = False, meta: bool = False) -> bool:
        """Run the shortcut of a key press (ipycanvas' on_key_down signature); True if one ran."""
        k = ("ctrl+" if (ctrl or meta) else "") + (key.lower() if len(key) == 1 else key)
        action = self.shortcuts().get(k)
        if action is None:
            return False
        try:
            action[1]()
        except Exception as err:  # a shortcut must never break the widget
            self.status = f"Error: {error_text(err)}"
        return True

    def _help_html(self) -> str:
        keys = self.shortcuts()
        if not keys:
            return ""
        # "1-9|method": the part before | replaces the key's name; entries without text are not listed
        shown = [(k, *(t.split("|", 1) if "|" in t else (k, t))) for k, (t, _) in keys.items() if t]

        def line(entries: list[tuple[str, str, str]], note: str = "") -> str:
            items = " &nbsp; ".join(f"<kbd>{html.escape(name)}</kbd> {html.escape(t)}" for _, name, t in entries)
            return f"Keys (click the image first): {items}{note}"

        # Notebook 7 keeps the arrow keys and Ctrl+Z / Ctrl+Y for itself; theme.py shows this line there.
        free = [e for e in shown if not (e[0].startswith("Arrow") or e[0] in NOTEBOOK7_KEYS)]
        taken = len(free) < len(shown)
        nb7 = line(
            free, " &nbsp; (Notebook 7 keeps the arrow keys and Ctrl+Z / Ctrl+Y: use the buttons)" if taken else ""
        )
        both = f'<div class="gw-muted gw-keys-all">{line(shown)}</div><div class="gw-muted gw-keys-nb7">{nb7}</div>'
        # folded: one word in the status row until opened (the full line cost a row of height)
        return f'<details class="gw-keys"><summary>Keys</summary>{both}</details>'
