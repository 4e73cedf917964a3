"""Guide Me's text tables on held-out ShapeScenes (``python -m guidewidgets.guide.reproduce --text``).

Table 7: guiding location (one text guide trained per layer, the same recipe for each), table 8:
hint complexity at two locations, table 9: number of hints 0..4 (sum of the sentences'
parameters, and the GRU reading them in sequence), table 10: one click vs one sentence, table 11:
the time of one text query. Queries come from the query generator (the largest mistake first),
on the held-out scenes' plain predictions against their ground truth.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from .questions import confusion, miou, play
from .session import Guide
from .text import TextGuide, load_text_guide
from .train_text import TRAIN_SEED, SceneSet, Tail, TrainConfig, guided_predictions, scene_set, train

__all__ = ["text_tables", "PAPER_TEXT_LOCATION", "PAPER_TEXT_KIND", "PAPER_TEXT_HINTS"]

#: The paper's text-guide tables (its network's ResNet blocks res3a .. res5c, PASCAL VOC, mIoU).
PAPER_TEXT_LOCATION = (("res3a", 32.21), ("res4a", 33.56), ("res5a", 35.97), ("res5c", 36.50))
PAPER_TEXT_KIND = {"remove": (31.53, 32.56), "find or rmv": (32.22, 33.73), "find": (33.56, 35.97)}
PAPER_TEXT_HINTS = (30.53, 34.04, 35.01, 34.24, 31.44)


def _row(label: str, values: Sequence[float | str], width: int = 9, fmt: str = "{:.2f}") -> str:
    cells = [v if isinstance(v, str) else fmt.format(v) for v in values]
    return f"{label:<34}" + "".join(f"{c:>{width}}" for c in cells)


def _miou(pred: torch.Tensor, data: SceneSet, k: int) -> float:
    return miou(confusion(pred, data.truth, k))


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
    """Print tables 7-11 on ``scenes`` held-out scenes of ``seed`` (``few`` of them for 10)."""
    from .reproduce import location_layers

    k = len(model.classes)  # type: ignore[arg-type]
    size = (96, 96)
    layer0 = str(model.default_guide_layer)
    cfg = TrainConfig.tiny() if quick else TrainConfig(scenes=800, steps=600)
    print(
        f"\nText guide (Guide Me, 'Learning to Guide with Text'): GRU over the query's words -> (alpha, beta, "
        f"gamma_s, gamma_b); queries from the generator (3 x 3 grid, largest mistake first) on {scenes} "
        f"held-out scenes (seed {seed}); text guides trained on seed {TRAIN_SEED}"
    )

    # 7. Location: the same recipe at each layer.
    x = torch.rand(1, 3, *size)
    layers = list(layers) if layers is not None else location_layers(model, x, layer0, count=4)
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

    # 8. Hint complexity at two locations.
    pair = layers[-2:]
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

    # 9. Number of hints, with the shipped text guide.
    tg = load_text_guide() if not quick else guides[layer0]
    tail = Tail(model, layer0, size)
    data = sets.get(layer0) or scene_set(model, tail, scenes, seed)
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

    # 10. Click vs text on the same scenes (Guide API, as a user would).
    m = min(few, scenes)
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

    # 11. Time of one text query.
    for i in range(m, min(scenes, m + 100)):  # more timings, on scenes table 10 did not use
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
