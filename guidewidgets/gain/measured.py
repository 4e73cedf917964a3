"""The stored full-size measurement of the premise design (issue 28), for notebooks and docs that
cannot afford an hour of training: one entry per training seed (0-4; segmentation rows for seeds
3 and 4), as ``--save`` writes it, kept in ``measured_premise.json`` beside this module.

Made by the commands in :data:`guidewidgets.gain.tables.MEASURED_COMMANDS` (held-out seed 9100,
one thread per process, two processes side by side on a shared 2-core machine);
:func:`guidewidgets.gain.tables.format_measured` prints it.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

__all__ = ["premise_full"]


def premise_full() -> list[dict[str, Any]]:
    """The stored runs: ``setting``, ``seed``, ``test_seed``, ``columns`` (scores as fractions),
    ``seconds``, ``design`` and ``segmentation`` (or None), one dict per training seed.

    Returns:
        The runs, in training-seed order.
    """
    text = resources.files(__package__).joinpath("measured_premise.json").read_text(encoding="utf-8")
    return list(json.loads(text))
