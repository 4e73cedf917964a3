"""Small helpers several test files share (``from tests.helpers import ...``; tests/ is a package)."""

from __future__ import annotations

import time
from collections.abc import Callable

from torch import nn


def until(cond: Callable[[], object], timeout: float = 120.0, poll: float = 0.02) -> bool:
    """Poll ``cond`` until it is true (True) or ``timeout`` seconds pass (False): a wait, not a timing."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(poll)
    return False


def hook_count(model: nn.Module) -> int:
    """Every forward, pre-forward, backward and pre-backward hook left on ``model``'s modules."""
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
        for m in model.modules()
    )
