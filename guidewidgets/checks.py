"""Argument checks shared across the package: refuse with a sentence, never coerce.

Why refuse: ``int(2.5)`` and ``int(True)`` silently move a hint, a window or a class, and NaN turns
every comparison false. Each check names the argument, what it must be, and what it got.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_int", "check_number"]


def _range_text(low: float | None, high: float | None, low_open: bool = False) -> str:
    if low is not None and high is not None:
        return f" in ({low:g}, {high:g}]" if low_open else f" from {low:g} to {high:g}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    return "" if high is None else f" <= {high:g}"


def check_int(value: object, name: str, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int in [low, high], else a TypeError (not an int; a bool or 2.5 is refused,
    not converted) or a ValueError (out of range) that names what is expected."""
    want = f"an int{_range_text(low, high)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {want}, got {value!r} ({type(value).__name__}); pass a whole number")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} must be {want}, got {v}")
    return v


def check_number(
    value: object, name: str, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    """``value`` as a finite float in [low, high] (``low_open``: > low), else a TypeError or a
    ValueError naming what is expected (NaN and inf are refused: they silently turn every
    comparison false)."""
    want = f"a finite number{_range_text(low, high, low_open)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {want}, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be {want}, got {v}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {want}, got {v:g}")
    if high is not None and v > high:
        raise ValueError(f"{name} must be {want}, got {v:g}")
    return v
