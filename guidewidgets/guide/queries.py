"""The query generator of Guide Me: play the user who describes a segmentation's mistakes in words.

As the paper's Figure 2: the frozen network's prediction and the ground truth are compared on an
N x N grid; in each cell the classes the prediction misses give ``find`` queries ("there is a
circle in the top left") and the classes it invents give ``remove`` queries ("the star in the
bottom is wrong"); a class predicted somewhere but absent from the whole image gives "there is no
star in this image". Queries come from a fixed template, so the vocabulary is small and closed
(:data:`VOCABULARY`), and the generator is deterministic (sampling takes a seed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

__all__ = [
    "Query",
    "generate_queries",
    "sample_queries",
    "cell_names",
    "region_mask",
    "render_query",
    "template_words",
    "GRID",
    "MIN_PIXELS",
]

#: Grid side N of the paper's N x N cells (3: top/middle/bottom x left/centre/right).
GRID = 3
#: Fewest pixels (at image resolution, per cell) a class needs to count as present or predicted.
MIN_PIXELS = 12
#: A class counts as found in a cell when the prediction covers at least this share of its truth.
RECALL = 0.5

_ROWS = ("top", "", "bottom")
_COLS = ("left", "", "right")


def cell_names(n: int = GRID) -> list[str]:
    """Location phrases of the N x N cells, row by row ("top left", "top", ..., "bottom right")."""
    if n == 1:
        return ["this image"]
    if n == 2:
        return ["top left", "top right", "bottom left", "bottom right"]
    if n == 3:
        names = []
        for r in _ROWS:
            for c in _COLS:
                names.append(" ".join(p for p in (r, c) if p) or "centre")
        return names
    raise ValueError(f"grid must be 1, 2 or 3 cells a side (the template names those cells), got {n}")


def region_mask(cell: int | None, height: int, width: int, n: int = GRID) -> torch.Tensor:
    """(H, W) bool mask of grid cell ``cell`` (row-major), or of the whole image when None."""
    if cell is None:
        return torch.ones(height, width, dtype=torch.bool)
    r, c = divmod(int(cell), n)
    ys = torch.arange(height) * n // height
    xs = torch.arange(width) * n // width
    return (ys == r)[:, None] & (xs == c)[None, :]


@dataclasses.dataclass(frozen=True)
class Query:
    """One generated (or typed) hint in words.

    ``kind`` is ``"find"`` or ``"remove"``; ``cls`` the class index it names; ``cell`` the grid
    cell (row-major, ``None`` = the whole image); ``text`` the sentence; ``pixels`` how many
    wrong pixels of that class in that region the query is about (0 for typed queries).
    """

    kind: str
    cls: int
    cell: int | None
    text: str
    pixels: int = 0


def render_query(kind: str, class_name: str, cell: int | None, n: int = GRID) -> str:
    """The template sentence of a query (lower case, no punctuation)."""
    article = "an" if class_name[:1] in "aeiou" else "a"
    if kind == "find":
        where = "this image" if cell is None else "the " + cell_names(n)[cell]
        return f"there is {article} {class_name} in {where}"
    if kind == "remove":
        if cell is None:
            return f"there is no {class_name} in this image"
        return f"the {class_name} in the {cell_names(n)[cell]} is wrong"
    raise ValueError(f"kind must be 'find' or 'remove', got {kind!r}")


def template_words(classes: Sequence[str], n: int = GRID) -> list[str]:
    """Every word the templates can produce for these class names, sorted."""
    words = {"there", "is", "a", "an", "no", "in", "the", "this", "image", "wrong"}
    for name in cell_names(n):
        words.update(name.split())
    for c in classes:
        words.update(c.split())
    return sorted(words)


def generate_queries(
    prediction: torch.Tensor,
    truth: torch.Tensor,
    classes: Sequence[str],
    *,
    n: int = GRID,
    ignore: Sequence[int] = (0,),
    void: int = 255,
    min_pixels: int = MIN_PIXELS,
    recall: float = RECALL,
) -> list[Query]:
    """All find and remove queries for one image, largest mistake first (ties: class, then cell).

    ``prediction`` and ``truth`` are (H, W) class maps; ``truth == void`` pixels are ignored.
    ``ignore``: classes never named (the background, by default). In a cell, class c gets a
    ``find`` when the truth has at least ``min_pixels`` of c there and the prediction covers less
    than ``recall`` of them; a ``remove`` when the prediction has at least ``min_pixels`` of c
    there and the truth has fewer than ``min_pixels``. A class the prediction shows but the truth
    lacks in the whole image gets one image-wide remove ("there is no c in this image") instead of
    one per cell. Finds always name their cell (the paper's "there is a person in the top right").
    """
    if prediction.shape != truth.shape or prediction.dim() != 2:
        raise ValueError(
            f"prediction and truth must be (H, W) class maps of the same shape, got "
            f"{tuple(prediction.shape)} and {tuple(truth.shape)}"
        )
    h, w = truth.shape
    valid = truth != void
    pred, true = prediction.cpu(), truth.cpu()
    valid = valid.cpu()
    queries: list[Query] = []
    for k, name in enumerate(classes):
        if k in ignore:
            continue
        t_k = (true == k) & valid
        p_k = (pred == k) & valid
        t_all, p_all = int(t_k.sum()), int(p_k.sum())
        if p_all >= min_pixels and t_all < min_pixels:
            queries.append(Query("remove", k, None, render_query("remove", name, None, n), p_all))
            continue
        for cell in range(n * n):
            region = region_mask(cell, h, w, n)
            t_c, p_c = int((t_k & region).sum()), int((p_k & region).sum())
            if t_c >= min_pixels and int((t_k & p_k & region).sum()) < recall * t_c:
                queries.append(Query("find", k, cell, render_query("find", name, cell, n), t_c))
            elif p_c >= min_pixels and t_c < min_pixels:
                queries.append(Query("remove", k, cell, render_query("remove", name, cell, n), p_c))
    queries.sort(key=lambda q: (-q.pixels, q.cls, -1 if q.cell is None else q.cell, q.kind))
    return queries


def sample_queries(
    queries: Sequence[Query], k: int, generator: torch.Generator | None = None, kinds: Sequence[str] | None = None
) -> list[Query]:
    """Up to ``k`` distinct queries (only of ``kinds``, if given): the largest mistakes first when
    ``generator`` is None, else a random choice that the generator's seed fixes."""
    pool = [q for q in queries if kinds is None or q.kind in kinds]
    if generator is None:
        return list(pool[:k])
    order = torch.randperm(len(pool), generator=generator).tolist()
    return [pool[i] for i in order[:k]]
