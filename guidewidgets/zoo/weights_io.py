"""Reading the package's weights files, with errors that say how to make the file again.

Every shipped network (zoo models, STN, captioner, text guide, PV decoder) is a ``torch.save``d
dict read with ``weights_only=True``. A missing file, a torn download, a foreign ``.pt`` and a
state dict of another version each get one sentence naming the file and the command that
regenerates it, instead of a pickle traceback.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["read_blob", "load_state"]

#: What ``torch.load`` raises on a file that is not a (complete) torch archive.
_LOAD_ERRORS = (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, ValueError)


def read_blob(
    path: str | os.PathLike[str],
    what: str,
    regen: str,
    *,
    keys: Sequence[str] = ("state_dict",),
    accept: Callable[[dict[str, Any]], bool] | None = None,
) -> dict[str, Any]:
    """The dict saved in ``path`` (on the CPU), checked to be a guidewidgets file of ``what``.

    ``keys`` must be present and ``accept(blob)`` true (e.g. a format tag); ``regen`` ends every
    message ("regenerate it with `python -m ...`").
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file for {what} not found at {p}; {regen}")
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as e:
        raise ValueError(
            f"weights file {p} for {what} is corrupted or not a torch file ({type(e).__name__}); {regen}"
        ) from None
    if not isinstance(blob, dict) or any(k not in blob for k in keys) or (accept is not None and not accept(blob)):
        raise ValueError(f"{p} is not a guidewidgets weights file for {what}; {regen}")
    return blob


def load_state(
    module: nn.Module, state: Mapping[str, Any], path: str | os.PathLike[str], what: str, regen: str
) -> None:
    """``module.load_state_dict(state)`` (strict), a mismatch reported as a ValueError naming the file."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        raise ValueError(
            f"weights in {Path(path)} do not fit {what} (made for another version?): {' '.join(str(e).split())[:200]}; {regen}"
        ) from None
