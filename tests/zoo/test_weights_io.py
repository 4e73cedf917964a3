"""Every loader of a shipped network says what is wrong with a bad file and how to make it again."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from guidewidgets import zoo
from guidewidgets.attend import captioner, stn
from guidewidgets.features import pv
from guidewidgets.guide import text

# (loader taking a path, the shipped file it reads, a phrase of its regenerate hint)
LOADERS: dict[str, tuple[Callable[[Path], object], Path, str]] = {
    "zoo": (lambda p: zoo.load("shapes-classifier", weights=p), zoo.weights_path("shapes-classifier"), "zoo.train"),
    "stn": (lambda p: stn.load("stn", weights=p), stn.weights_path("stn"), "attend.train_stn"),
    "captioner": (captioner.load_captioner, captioner.weights_path(False), "attend.train_captioner"),
    "text guide": (
        text.TextGuide.load,
        Path(text.__file__).parent / "weights" / text.SHIPPED["shapes-segmenter"],
        "train_text",
    ),
    "pv decoder": (pv.load_decoder, pv.DECODER_PATH, "features.pv"),
}


@pytest.mark.parametrize("name", list(LOADERS))
def test_bad_weights_files_name_the_problem_and_the_fix(name, tmp_path):
    load, shipped, hint = LOADERS[name]
    load(shipped)  # the shipped file itself loads

    with pytest.raises(FileNotFoundError, match=hint):
        load(tmp_path / "nothing.pt")

    torn = tmp_path / "torn.pt"
    torn.write_bytes(shipped.read_bytes()[: shipped.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"corrupted.*{hint}"):
        load(torn)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(ValueError, match=f"not a guidewidgets weights file.*{hint}"):
        load(foreign)

    # The right kind of file whose tensors belong to another version: one weight dropped.
    blob = torch.load(shipped, weights_only=True)
    state = dict(blob["state_dict"])
    state.pop(next(iter(state)))
    blob["state_dict"] = state
    stale = tmp_path / "stale.pt"
    torch.save(blob, stale)
    with pytest.raises(ValueError, match=f"do not fit.*{hint}"):
        load(stale)
