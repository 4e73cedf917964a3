"""A VBox whose traitlet observers can be silenced while the widget itself syncs its state."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ipywidgets as W


class SyncedBox(W.VBox):
    """Base of the widgets: observers check ``self._syncing`` and skip recomputes while it is set."""

    _syncing = False

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """Set traitlets without triggering a recompute (we are the ones syncing them)."""
        prev, self._syncing = self._syncing, True
        try:
            yield
        finally:
            self._syncing = prev
