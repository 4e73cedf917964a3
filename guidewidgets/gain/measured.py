"""The stored full-size measurements of the premise designs (issue 28), for notebooks and docs that
cannot afford the training: one entry per training seed (0-4), as ``reproduce --save`` writes it
(with the segmentation rows that ``python -m guidewidgets.gain.segment --into`` added), kept as
JSON beside this module:

- ``measured_premise.json``: the first premise design (segmentation rows for seeds 3 and 4);
- ``measured_premise_form.json``: the second, ``premise-form`` (segmentation rows for all five seeds).

Made by the commands in :data:`guidewidgets.gain.tables.MEASURED` (held-out seed 9100, one thread
per process, two processes side by side on a shared 2-core machine);
:func:`guidewidgets.gain.tables.format_measured` prints them.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["premise_full", "premise_form_full", "FILES"]

#: The stored file of each measured design.
FILES = {"premise": "measured_premise.json", "premise-form": "measured_premise_form.json"}


def _read(design: str) -> list[dict[str, Any]]:
    if design not in FILES:
        raise ValueError(f"no stored measurement of design {design!r}; there is one of {list(FILES)}")
    text = resources.files(__package__).joinpath(FILES[design]).read_text(encoding="utf-8")
    return list(json.loads(text))


def premise_full() -> list[dict[str, Any]]:
    """The stored runs of the first premise design: ``setting``, ``seed``, ``test_seed``,
    ``columns`` (scores as fractions), ``seconds``, ``design`` and ``segmentation`` (or None), one
    dict per training seed.

    Returns:
        The runs, in training-seed order.
    """
    return _read("premise")


def premise_form_full() -> list[dict[str, Any]]:
    """The stored runs of the second premise design (``premise-form``), as :func:`premise_full`.

    Returns:
        The runs, in training-seed order.
    """
    return _read("premise-form")
