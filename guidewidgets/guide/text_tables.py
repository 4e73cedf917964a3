"""Guide Me's text tables on held-out ShapeScenes (``python -m guidewidgets.guide.reproduce --text``).

Table 7: guiding location (one text guide trained per layer, the same recipe for each), table 8:
hint complexity at two locations, table 9: number of hints 0..4 (sum of the sentences'
parameters, and the GRU reading them in sequence), table 10: one click vs one sentence, table 11:
the time of one text query. Queries come from the query generator (the largest mistake first),
on the held-out scenes' plain predictions against their ground truth.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from ..metrics import segmentation
from .questions import confusion, miou, play
from .session import Guide
from .tables import PAPER_HINT_KIND, PAPER_LOCATION, PAPER_TEXT_HINTS, location_layers, row
from .text import TextGuide, load_text_guide
from .train_text import TRAIN_SEED, SceneSet, Tail, TrainConfig, guided_predictions, scene_set, train

__all__ = ["text_tables", "PAPER_TEXT_LOCATION", "PAPER_TEXT_KIND", "PAPER_TEXT_HINTS"]

#: The paper's text-guide tables (its network's ResNet blocks res3a .. res5c, PASCAL VOC, mIoU):
#: the same numbers as ``reproduce``'s location and hint-kind rows, under the names used here.
PAPER_TEXT_LOCATION = PAPER_LOCATION
PAPER_TEXT_KIND = PAPER_HINT_KIND

_row = functools.partial(row, width=9, fmt="{:.2f}")


def _miou(pred: torch.Tensor, data: SceneSet, k: int) -> float:
    return 100 * segmentation.miou(pred, data.truth, k)  # the tables are in percent


def _first(data: SceneSet, kinds: Sequence[str], n: int = 1) -> list[list[str]]:
    return [[q.text for q in qs if q.kind in kinds][:n] for qs in data.queries]


def text_tables(
    model: nn.Module,
    seed: int,
    scenes: int,
    few: int,
    quick: bool = False,
    layers: Sequence[str] | None = None,
) -> None:
    """Print tables 7-11 on ``scenes`` held-out scenes of ``seed`` (``few`` of them for 10).

    Args:
        model: the segmenter (the embedded one: its ``classes`` and ``default_guide_layer``).
        seed: the ShapeScenes seed of the held-out scenes.
        scenes: how many scenes tables 7-9 and 11 use.
        few: how many of them table 10 uses.
        quick: train tiny text guides and use the quick one for table 9 (seconds, not minutes).
        layers: the locations of table 7 (None: four from early to the guide layer).
    """
    k = len(model.classes)  # type: ignore[arg-type]
    size = (96, 96)
    layer0 = str(model.default_guide_layer)
    cfg = TrainConfig.tiny() if quick else TrainConfig(scenes=800, steps=600)
    print(
        f"\nText guide (Guide Me, 'Learning to Guide with Text'): GRU over the query's words -> (alpha, beta, "
        f"gamma_s, gamma_b); queries from the generator (3 x 3 grid, largest mistake first) on {scenes} "
        f"held-out scenes (seed {seed}); text guides trained on seed {TRAIN_SEED}"
    )
    x = torch.rand(1, 3, *size)
    layers = list(layers) if layers is not None else location_layers(model, x, layer0, count=4)
    guides, sets = _table7(model, layers, cfg, scenes, seed, size, k)
    _table8(model, layers[-2:], guides, sets, scenes, size, k)
    tg = load_text_guide() if not quick else guides[layer0]
    tail = Tail(model, layer0, size)
    data = sets.get(layer0) or scene_set(model, tail, scenes, seed)
    _table9(tg, tail, data, scenes, layer0, quick, k)
    m = min(few, scenes)
    times = _table10(model, tg, data, layer0, m, k)
    _table11(model, tg, data, layer0, range(m, min(scenes, m + 100)), times)


def _table7(model, layers, cfg, scenes, seed, size, k) -> tuple[dict[str, TextGuide], dict[str, SceneSet]]:
    """Location: the same recipe at each layer; returns each layer's text guide and scene set."""
    guides: dict[str, TextGuide] = {}
    sets: dict[str, SceneSet] = {}
    print(
        f"\nTable 7. Location of the guiding block, text guide, 1 query (find or remove) per scene, mIoU "
        f"(each layer's guide trained alike: {cfg.steps} steps x {cfg.batch} queries on {cfg.scenes} scenes)"
    )
    print(
        "paper (text guide; its network's ResNet blocks; PASCAL VOC): "
        + "  ".join(f"{n} {v:.2f}" for n, v in PAPER_TEXT_LOCATION)
    )
    print(_row("ours: layer (feature map)", ["0 query", "1 query", "gain", "train s"]))
    for name in layers:
        t0 = time.perf_counter()
        cfg.layer = name
        guides[name] = train(model, cfg)
        seconds = time.perf_counter() - t0
        tail = Tail(model, name, size)
        sets[name] = data = scene_set(model, tail, scenes, seed)
        pred = guided_predictions(guides[name], tail, data, _first(data, ("find", "remove")))
        base, one = _miou(data.plain, data, k), _miou(pred, data, k)
        shape = "x".join(str(v) for v in data.acts.shape[1:])
        print(_row(f"{name} ({shape})", [base, one, one - base, f"{seconds:.0f}"]))
    return guides, sets


def _table8(model, pair, guides, sets, scenes, size, k) -> None:
    """Hint complexity at two locations (the last two of table 7)."""
    print("\nTable 8. Hint complexity, 1 query per scene (scenes without such a query stay unguided), mIoU")
    print(f"(ours at {pair[0]!r} ~ the paper's res4a and {pair[-1]!r} ~ res5a: the last two of table 7)")
    print(_row("hint kind", ["paper res4a", "paper res5a", "ours", "ours", "gain", "gain"], width=12))
    base = _miou(sets[pair[-1]].plain, sets[pair[-1]], k)
    for kind, kinds in (("remove", ("remove",)), ("find or rmv", ("find", "remove")), ("find", ("find",))):
        vals = []
        for name in pair:
            data = sets[name]
            vals.append(
                _miou(guided_predictions(guides[name], Tail(model, name, size), data, _first(data, kinds)), data, k)
            )
        print(_row(kind, [*PAPER_TEXT_KIND[kind], *vals, *(v - base for v in vals)], width=12))
    data = sets[pair[-1]]
    print(
        f"(unguided mIoU {base:.2f}; scenes with a find query {sum(1 for s in _first(data, ('find',)) if s)}, "
        f"with a remove query {sum(1 for s in _first(data, ('remove',)) if s)}, of {scenes})"
    )


def _table9(tg, tail, data, scenes, layer0, quick, k) -> None:
    """Number of hints 0..4, the sentences' parameters summed or read in sequence, and a control."""
    many = sum(1 for qs in data.queries if len(qs) >= 4)
    print(
        f"\nTable 9. Number of hints ({'shipped' if not quick else 'quick'} text guide at {layer0!r}; a scene "
        f"with fewer queries than asked gets all it has: {many} of {scenes} scenes have 4 or more), mIoU"
    )
    print(_row("# hints", ["0", "1", "2", "3", "4"], width=8))
    print(_row("paper", PAPER_TEXT_HINTS, width=8))
    for mode in ("sum", "sequence"):
        vals = [_miou(data.plain, data, k)]
        for n in range(1, 5):
            vals.append(_miou(guided_predictions(tg, tail, data, _first(data, ("find", "remove"), n), mode), data, k))
        print(_row(f"ours ({mode} of the sentences)", vals, width=8))
    # Control: the words must matter. Each scene gets another scene's query.
    shifted = _first(data, ("find", "remove"))
    shifted = shifted[1:] + shifted[:1]
    ctrl = _miou(guided_predictions(tg, tail, data, shifted), data, k)
    print(_row("control: 1 query of another scene", [_miou(data.plain, data, k), ctrl], width=8))


def _table10(model, tg, data, layer0, m, k) -> list[float]:
    """Click vs text on the same scenes (Guide API, as a user would); returns the text queries' times."""
    rows: dict[str, list[torch.Tensor]] = {"no hint": [], "1 click": [], "1 sentence": [], "1 sentence + 1 click": []}
    times: list[float] = []
    for i in range(m):
        image, truth = data.images[i], data.truth[i]
        sentence = _first(data, ("find", "remove"))[i]
        with Guide(model, image, layer0) as g:
            rows["no hint"].append(g.prediction())
            rows["1 click"].append(play(g, truth, questions=1, record=(1,)).predictions[1])
        with Guide(model, image, layer0) as g:
            if sentence:
                t0 = time.perf_counter()
                g.add_text(sentence[0], text_guide=tg)
                pred = g.prediction()
                times.append(time.perf_counter() - t0)
            else:
                pred = g.prediction()
            rows["1 sentence"].append(pred)
            rows["1 sentence + 1 click"].append(play(g, truth, questions=1, record=(1,)).predictions[1])
    truth = data.truth[:m]
    print(f"\nTable 10. One click (the 20-questions game's first question) vs one sentence, {m} scenes, mIoU")
    for name, preds in rows.items():
        print(_row(name, [miou(confusion(torch.stack(preds), truth, k))]))
    return times


def _table11(model, tg, data, layer0, more, times: list[float]) -> None:
    """Time of one text query, on ``more`` scenes (those table 10 did not use) besides ``times``."""
    for i in more:
        sentence = _first(data, ("find", "remove"))[i]
        if not sentence:
            continue
        with Guide(model, data.images[i], layer0) as g:
            t0 = time.perf_counter()
            g.add_text(sentence[0], text_guide=tg)
            g.prediction()
            times.append(time.perf_counter() - t0)
    ms = sorted(1000 * t for t in times)
    if ms:
        print(
            f"\nTable 11. Time of one text query (parse + GRU + guided prediction, Guide.add_text then "
            f"prediction), {len(ms)} queries, {torch.get_num_threads()} thread(s): median "
            f"{statistics.median(ms):.1f} ms, 90th percentile {ms[int(0.9 * (len(ms) - 1))]:.1f} ms, max {ms[-1]:.1f} ms"
        )
