"""What the two reproduction scripts share: the paper's numbers, the row format of the printed
tables, and the guiding locations from early to bottleneck.

``reproduce.py`` prints tables 1-6 (clicks) and ``text_tables.py`` tables 7-11 (words); both
import from here, so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..hooks import feature_maps

__all__ = ["PAPER_QUESTIONS", "PAPER_LOCATION", "PAPER_HINT_KIND", "PAPER_TEXT_HINTS", "row", "location_layers"]

#: Table 1 of the paper (FCN-8s on PASCAL VOC val) after 0, 1, 5, 10, 15, 20 questions.
PAPER_QUESTIONS = {
    "mIoU": (62.6, 65.3, 73.1, 76.9, 77.3, 81.0),
    "p.accuracy": (91.1, 91.8, 94.1, 95.3, 96.0, 96.3),
}
#: The paper's text-guide tables (its network's ResNet blocks res3a .. res5c, PASCAL VOC, mIoU).
PAPER_LOCATION = (("res3a", 32.21), ("res4a", 33.56), ("res5a", 35.97), ("res5c", 36.50))
PAPER_HINT_KIND = {"remove": (31.53, 32.56), "find or rmv": (32.22, 33.73), "find": (33.56, 35.97)}
PAPER_TEXT_HINTS = (30.53, 34.04, 35.01, 34.24, 31.44)


def row(label: str, values: Sequence[float | str], width: int = 7, fmt: str = "{:.1f}") -> str:
    """One line of a printed table: the label, then each value right-aligned in ``width`` characters.

    Args:
        label: the row's name (34 characters wide).
        values: numbers (formatted with ``fmt``) or ready strings.
        width: the width of each cell.
        fmt: the format of a number.

    Returns:
        The line, without a newline.
    """
    cells = [v if isinstance(v, str) else fmt.format(v) for v in values]
    return f"{label:<34}" + "".join(f"{c:>{width}}" for c in cells)


def location_layers(model: nn.Module, x: torch.Tensor, last: str, count: int = 4) -> list[str]:
    """Up to ``count`` layers from early to ``last``: the outermost module at each feature-map
    size the forward passes through before ``last`` ends (e.g. stride 2, 4, 8, bottleneck).

    Args:
        model: the segmenter.
        x: (1, C, H, W) an input the model takes.
        last: the last layer (the guide's default layer).
        count: the most layers to return.

    Returns:
        Dotted layer names, early first, ending with ``last``.
    """
    seen = [(fm.name, fm.grid) for fm in feature_maps(model, x)]
    names = [n for n, _ in seen]
    if last not in names:
        return [last]
    seen = seen[: names.index(last) + 1]
    by_size: dict[tuple[int, int], str] = {}
    for name, size in seen:  # hooks fire inner first, so the last name per size is the outermost
        by_size[size] = name
    last_size = seen[-1][1]
    del by_size[last_size]
    # At the bottleneck's own size, also the last map before the block (e.g. the encoder's end).
    before = [n for n, s in seen if s == last_size and n != last and not n.startswith(last + ".")]
    layers = list(dict.fromkeys([*by_size.values(), *before[-1:]]))
    layers = layers[-(count - 1) :] if count > 1 else []
    return [*layers, last]
