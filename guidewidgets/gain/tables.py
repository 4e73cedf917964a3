"""The reproduction's tables: the paper's Table 4 beside ours, the mean and spread over training
seeds, the paired per-seed differences, and the stored full-size measurement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import torch

from .design import DESIGNS, Design

__all__ = [
    "PAPER",
    "PAPER_LABELS",
    "MEASURED_COMMANDS",
    "FORM_COMMANDS",
    "MEASURED",
    "format_tables",
    "format_seed_means",
    "paired",
    "format_paired",
    "format_measured",
    "seed_tables",
]

#: The paper's Table 4 (percent): Grad-CAM, GAIN, GAIN_ext with 9 / 23 / 78 pixel labels.
PAPER: dict[str, list[float]] = {
    "VOC val (unbiased)": [83, 90, 93, 93, 94],
    "boat without water": [42, 48, 64, 74, 84],
    "water without boat": [30, 62, 68, 76, 84],
    "overall": [36, 55, 66, 75, 84],
}
PAPER_LABELS = (9, 23, 78)

#: The table's rows (the keys of :func:`score`) and their labels: four test sets, then the attention.
_ROWS = (
    ("unbiased", "unbiased accuracy"),
    ("class_without_background", "{cls} without {ctx}"),
    ("background_without_class", "{ctx} without {cls}"),
    ("overall", "overall"),
    ("pointing", "pointing game, all"),
    ("iou", "mask IoU (A > 0.5), all"),
    ("pointing_circle", "pointing game, {cls}s"),
    ("iou_circle", "mask IoU, {cls}s"),
)


def _rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    d = result.get("design", DESIGNS["circle"])
    return [(key, label.format(cls=d.cls, ctx=d.context)) for key, label in _ROWS]


def format_tables(result: dict[str, Any]) -> str:
    """The paper's Table 4 beside ours, and the attention-quality table (percent)."""
    cols = list(result["columns"])
    ours = result["columns"]
    w = 24
    lines = [
        "Biased boat (paper, Table 4; PASCAL VOC, VGG)",
        f"{'':{w}}" + "".join(f"{h:>11}" for h in ["Grad-CAM", "GAIN", *[f"ext {n}" for n in PAPER_LABELS]]),
    ]
    for row, vals in PAPER.items():
        lines.append(f"{row:{w}}" + "".join(f"{v:>10.0f}%" for v in vals))
    lines += [
        "",
        f"Biased {_rows(result)[1][1].split()[0]} (ours; ShapeScenes, setting {result['setting']!r}, "
        f"test seed {result['test_seed']}, training seed {result.get('seed', 0)})",
        f"{'':{w}}" + "".join(f"{c.replace(' (plain)', ''):>17}" for c in cols),
    ]
    rows = _rows(result)
    for key, label in rows[:4]:
        lines.append(f"{label:{w}}" + "".join(f"{100 * ours[c][key]:>16.1f}%" for c in cols))
    lines += [
        "",
        "Attention of the true class on held-out unbiased scenes (paper: mIoU GAIN 55.3, GAIN_ext 60.5)",
        f"{'':{w}}" + "".join(f"{c.replace(' (plain)', ''):>17}" for c in cols),
    ]
    for key, label in rows[4:]:
        lines.append(f"{label:{w}}" + "".join(f"{100 * ours[c][key]:>16.1f}%" for c in cols))
    lines += [
        "",
        "training time per column (s): " + ", ".join(f"{c} {s:.0f}" for c, s in result["seconds"].items()),
        f"total: {result['total_seconds']:.0f} s",
    ]
    return "\n".join(lines)


def format_seed_means(results: Sequence[dict[str, Any]]) -> str:
    """Mean ± standard deviation (percent) of each row over runs that differ in the training seed only."""
    if len(results) < 2:
        raise ValueError("give the results of at least two training seeds")
    cols = list(results[0]["columns"])
    if any(list(r["columns"]) != cols or r["test_seed"] != results[0]["test_seed"] for r in results):
        raise ValueError("the runs must share the setting and the test seed (only the training seed may differ)")
    seeds = ", ".join(str(r.get("seed", "?")) for r in results)
    w = 24
    lines = [
        f"Mean ± standard deviation over training seeds {seeds} (setting {results[0]['setting']!r}, "
        f"test seed {results[0]['test_seed']}; percent)",
        f"{'':{w}}" + "".join(f"{c.replace(' (plain)', ''):>17}" for c in cols),
    ]
    for key, label in _rows(results[0]):
        cells = []
        for c in cols:
            v = torch.tensor([100 * r["columns"][c][key] for r in results])
            cells.append(f"{float(v.mean()):.1f} ± {float(v.std()):.1f}")
        lines.append(f"{label:{w}}" + "".join(f"{cell:>17}" for cell in cells))
    return "\n".join(lines)


#: Rows of the paired comparison: the four test sets and the attention over all classes.
_PAIRED = ("overall", "class_without_background", "background_without_class", "unbiased", "pointing", "iou")


def paired(results: Sequence[dict[str, Any]], a: str, b: str) -> dict[str, dict[str, Any]]:
    """Per training seed, column ``a`` minus column ``b`` (percentage points) on each row.

    Args:
        results: runs that differ in the training seed only. a, b: column names.

    Returns:
        ``{row: {"diffs": [...], "mean", "sd", "wins"}}`` (``wins``: seeds where a > b).
    """
    out = {}
    for key in _PAIRED:
        d = torch.tensor([100 * (r["columns"][a][key] - r["columns"][b][key]) for r in results], dtype=torch.float64)
        sd = float(d.std()) if len(d) > 1 else 0.0
        out[key] = {"diffs": d.tolist(), "mean": float(d.mean()), "sd": sd, "wins": int((d > 0).sum())}
    return out


def format_paired(results: Sequence[dict[str, Any]]) -> str:
    """The paired comparison, per training seed: GAIN - plain, each GAIN_ext - plain, each GAIN_ext -
    GAIN, and each GAIN_ext - the one with fewer pixel labels; mean ± sd of the difference and the
    number of seeds where it is positive."""
    cols = list(results[0]["columns"])
    plain, gain, ext = cols[0], cols[1], cols[2:]
    pairs = [(gain, plain)] + [(e, plain) for e in ext] + [(e, gain) for e in ext] + list(zip(ext[1:], ext[:-1]))
    labels = dict(_rows(results[0]))
    n = len(results)
    lines = [f"Paired differences over {n} training seeds (percentage points, mean ± sd; seeds where > 0)"]
    lines.append(f"{'':26}" + "".join(f"{labels[k][:22]:>24}" for k in _PAIRED))
    for a, b in pairs:
        p = paired(results, a, b)
        name = f"{a.replace(' PL', '')} - {b.replace(' (plain)', '').replace(' PL', '')}"
        cells = [f"{p[k]['mean']:+.1f} ± {p[k]['sd']:.1f} ({p[k]['wins']}/{n})" for k in _PAIRED]
        lines.append(f"{name:26}" + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


#: The commands that made :func:`measured.premise_full` (held-out seed 9100, one thread each).
MEASURED_COMMANDS = (
    "python -m guidewidgets.gain.reproduce --design premise --seeds 0 1 2 --save seeds012.json",
    "python -m guidewidgets.gain.reproduce --design premise --seeds 3 4 --segment --save seeds34.json",
    "python -m guidewidgets.gain.reproduce --tables seeds012.json seeds34.json",
)


#: The commands that made :func:`measured.premise_form_full` (the same conditions).
FORM_COMMANDS = (
    "python -m guidewidgets.gain.reproduce --design premise-form --seeds 0 1 2 --trunk-cache trunks --models models "
    "--save form012.json",
    "python -m guidewidgets.gain.reproduce --design premise-form --seeds 3 4 --trunk-cache trunks --models models "
    "--save form34.json",
    "python -m guidewidgets.gain.segment models/seed-3 --train 600 --epochs 32 --into form34.json",
    "python -m guidewidgets.gain.segment models/seed-4 --train 600 --epochs 32 --truth all --into form34.json",
    *(
        f"python -m guidewidgets.gain.segment models/seed-{s} --train 600 --epochs 32 --truth none --into form012.json"
        for s in (0, 1, 2)
    ),
    "python -m guidewidgets.gain.reproduce --tables form012.json form34.json",
)
#: Each stored measurement's commands, by design.
MEASURED = {"premise": MEASURED_COMMANDS, "premise-form": FORM_COMMANDS}


def format_measured(design: str = "premise-form") -> str:
    """A stored full-size multi-seed measurement (:mod:`guidewidgets.gain.measured`), as its
    commands print it: mean ± sd per column, the paired differences, the segmentation table.

    Args:
        design: "premise-form" (the default design's) or "premise" (the first premise design's).

    Returns:
        The commands, then the tables.
    """
    from .measured import _read

    stored = _read(design)
    runs = [loaded(r) for r in stored]
    segs = [r["segmentation"] for r in stored if r.get("segmentation")]
    head = [
        f"Full size, design {design!r}, held-out seed 9100, stored result of:",
        *[f"  {c}" for c in MEASURED[design]],
    ]
    return "\n".join(head) + "\n" + seed_tables(runs, segs)


def seed_tables(results: list[dict[str, Any]], segs: list[dict[str, dict[str, float]]]) -> str:
    """Mean ± sd, the paired differences and the segmentation table over several training seeds."""
    out = []
    if len(results) > 1:
        out += ["", format_seed_means(results), "", format_paired(results)]
    if segs and len(results) > 1:
        with_seg = [r["seed"] for r in results if r.get("segmentation")]
        seg_seeds = with_seg or ([r["seed"] for r in results] if len(segs) == len(results) else None)
        from .segment import format_segmentation

        out += ["", format_segmentation(segs, seg_seeds)]
    return "\n".join(out)


def saved(result: dict[str, Any], seg: dict[str, dict[str, float]] | None) -> dict[str, Any]:
    keep = ("setting", "seed", "test_seed", "masked_bn", "pretrain", "columns", "seconds", "total_seconds")
    return {**{k: result[k] for k in keep}, "design": asdict(result["design"]), "segmentation": seg}


def loaded(saved: dict[str, Any]) -> dict[str, Any]:
    design = dict(saved["design"])
    if isinstance(design["colours"], list):  # JSON has no tuples
        design["colours"] = tuple(design["colours"])
    return {**saved, "design": Design(**design)}
