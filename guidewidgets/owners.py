"""Which session owns a model's forward: one neutral table that any layer may read.

A session that changes what a model's forward computes while it is open (a :class:`Guide` attaches
its guiding block with hooks) claims the model here and releases it when it closes. Code that
must know whether a "plain" forward is really plain (explain's ``check_model``) asks
:func:`owner_of` instead of importing the session's package: the table sits below both, so
neither imports the other sideways.

The table is weak on both sides: a dropped model is not kept alive by its entry, and neither is
a dropped owner (its entry reads as free as soon as it is collected). Every call holds one lock,
so a claim racing with a release on another thread leaves the table consistent.

>>> claim(model, guide); owner_of(model) is guide
True
>>> release(model, guide); owner_of(model) is None
True
"""

from __future__ import annotations

import threading
import weakref

from torch import nn

__all__ = ["claim", "release", "owner_of"]

_OWNERS: weakref.WeakKeyDictionary[nn.Module, weakref.ref[object]] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return model


def claim(model: nn.Module, owner: object) -> object | None:
    """Make ``owner`` the session that owns ``model``'s forward; returns the owner it replaced.

    Why return the old one instead of refusing: "one owner per model" is a handover (a re-run
    notebook cell makes a new Guide while the old one is still reachable); the caller decides what
    happens to the previous owner.

    Args:
        model: the module whose forward the owner changes.
        owner: the session; it must support weak references (any ordinary class instance does).

    Returns:
        The previous live owner, or None when the model was free.
    """
    _check_model(model)
    try:
        ref = weakref.ref(owner)
    except TypeError:
        raise TypeError(
            f"an owner must support weak references (the table never keeps it alive), got {type(owner).__name__}"
        ) from None
    with _GUARD:
        old = _OWNERS.get(model)
        _OWNERS[model] = ref
    previous = old() if old is not None else None
    return None if previous is owner else previous


def release(model: nn.Module, owner: object) -> bool:
    """Free ``model`` if ``owner`` still owns it; returns whether it did.

    Why only the current owner: an owner that was replaced may close later, and its release must
    not free the model its successor now owns.

    Args:
        model: the module.
        owner: the session that claimed it.

    Returns:
        True when ``owner`` owned ``model`` and the entry was removed, else False.
    """
    _check_model(model)
    with _GUARD:
        ref = _OWNERS.get(model)
        if ref is None or ref() is not owner:
            return False
        del _OWNERS[model]
        return True


def owner_of(model: nn.Module) -> object | None:
    """The live session that owns ``model``'s forward, or None when the forward is the model's own.

    Args:
        model: the module (anything else has no owner: None, so a caller need not check first).

    Returns:
        The owner passed to :func:`claim`, or None (never claimed, released, or the owner collected).
    """
    if not isinstance(model, nn.Module):
        return None
    with _GUARD:
        ref = _OWNERS.get(model)
    return ref() if ref is not None else None
