"""One guide per model: the takeover, the model's lock around every call, and close.

A Guide's block acts on every forward of its model while it is open, so two open guides on one
model would stack. A new Guide on a model that carries an open one takes over: the older guide
is closed (its methods then raise RuntimeError with :data:`SUPERSEDED`), and the model is
claimed in :mod:`guidewidgets.owners`, where any other layer (explain's ``check_model``) can
ask whether a model's forward is guided without importing this package.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from torch import nn

from .. import owners
from ..hooks import model_lock

__all__ = ["SUPERSEDED"]

SUPERSEDED = (
    "this Guide was closed because a newer Guide on the same model took over (one guide per model "
    "at a time, so the model is never guided by a session you can no longer reach); use the newer "
    "Guide, or make a new one"
)
CLOSED = "this Guide is closed; make a new one"


def _detach_hooks(handles: list) -> None:
    for h in handles:
        h.remove()
    handles.clear()


class _Owned:
    """The part of a Guide that owns its model: taking over, the lock around calls, closing."""

    model: nn.Module
    _handles: list
    _closed_reason: str | None
    _bypass: bool  # hooks pass through (while a newer Guide on the model is being made)

    def _take_over(self, model: nn.Module, setup: Callable[[], None]) -> None:
        """Run ``setup`` (which attaches this guide's hooks), then close the model's older guide.

        Why bypass first, close later: the new plain forward that ``setup`` runs must not see the
        old block, yet a failing constructor must leave the old session working as it was.
        """
        self._handles = []
        self._closed_reason = None
        self._bypass = False
        with model_lock(model):
            owner = owners.owner_of(model)
            older = owner if isinstance(owner, _Owned) and not owner.closed else None
            if older is not None:
                older._bypass = True
            try:
                setup()
            except BaseException:
                if older is not None:
                    older._bypass = False
                self.close()
                raise
            if older is not None:
                older._supersede()
            owners.claim(model, self)

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        """Hold the model's lock and check that the guide is open.

        Why under the lock: a newer Guide takes over (closing this one) under the same lock, so a
        call racing with it either runs on an open guide or gets the documented RuntimeError.
        """
        with model_lock(self.model):
            self._check_open()
            yield

    def _check_open(self) -> None:
        if self._closed_reason is not None or not self._handles:
            raise RuntimeError(self._closed_reason or CLOSED)

    def _supersede(self) -> None:
        # Called under the model's lock by the newer Guide: the reason is set before the hooks go.
        self._closed_reason = SUPERSEDED
        self.close()

    def _let_go(self) -> None:
        """What a closed guide stops holding besides its hooks (a subclass frees its caches here)."""

    def close(self) -> None:
        """Remove the guiding block from the model (safe to call twice)."""
        with model_lock(self.model) if hasattr(self, "model") else contextlib.nullcontext():
            _detach_hooks(self._handles)
            self._let_go()
            if hasattr(self, "model"):
                owners.release(self.model, self)
            if self._closed_reason is None:
                self._closed_reason = CLOSED

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran or a newer Guide on the same model took over."""
        return self._closed_reason is not None or not self._handles

    @property
    def closed_reason(self) -> str | None:
        """None while open; otherwise a sentence a widget can show (closed, or superseded)."""
        return self._closed_reason
