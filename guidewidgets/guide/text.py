"""Guide Me with words: a sentence -> GRU -> the guiding block's (alpha, beta, gamma_s, gamma_b).

The paper's text guide (Rupprecht et al., CVPR 2018, "Learning to Guide with Text"): the words of
a query are embedded, a GRU reads them, and a linear map from its final state predicts the
guiding parameters of a frozen segmenter, so the segmenter changes its prediction from words in
one forward pass, with no optimisation at inference.

Word embeddings: the paper uses GloVe vectors; none are reachable offline, and the template
vocabulary is small and closed, so the embeddings are trained with the guide (from random
initialisation, as every other weight of the text guide).

``TextGuide`` is small (about 30k parameters) and ships trained for the embedded ShapeScenes
segmenter (``load_text_guide()``); ``python -m guidewidgets.guide.train_text`` re-trains it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_sequence

from ..zoo.weights_io import load_state, read_blob
from .queries import GRID, Query, cell_names, template_words

__all__ = ["Tokenizer", "TextGuide", "load_text_guide", "SHIPPED", "JOIN"]

#: Word that joins several sentences when the GRU reads them in sequence (``mode="sequence"``).
JOIN = "and"
#: Shipped text guides: model name -> file in guidewidgets/guide/weights.
SHIPPED = {"shapes-segmenter": "text-shapes-segmenter.pt"}
_SYNONYMS = {"center": "centre", "middle": "centre", "an": "a"}


class Tokenizer:
    """Words of the query templates <-> indices, with a parser that names what is wrong.

    Index 0 is padding; words are lower-cased and punctuation is dropped. ``"center"`` and
    ``"middle"`` read as ``"centre"``.
    """

    def __init__(self, classes: Sequence[str], grid: int = GRID, ignore: Sequence[int] = (0,)) -> None:
        self.classes = list(classes)
        self.grid = int(grid)
        self.ignore = tuple(int(i) for i in ignore)
        self.named = [c for i, c in enumerate(self.classes) if i not in self.ignore]
        self.words = ["<pad>", *template_words(self.named, self.grid), JOIN, "not", "visible"]
        self.words = list(dict.fromkeys(self.words))
        self.index = {w: i for i, w in enumerate(self.words)}
        self.cells = cell_names(self.grid)
        cls = "|".join(re.escape(c) for c in sorted(self.named, key=len, reverse=True))
        loc = "|".join(re.escape(c) for c in sorted(self.cells, key=len, reverse=True))
        self._patterns = [
            ("find", re.compile(rf"^there is an? (?P<cls>{cls}) in (?:this image|the (?P<loc>{loc}))$")),
            ("remove", re.compile(rf"^there is no (?P<cls>{cls}) in this image$")),
            ("remove", re.compile(rf"^the (?P<cls>{cls}) is not visible in this image$")),
            ("remove", re.compile(rf"^the (?P<cls>{cls}) in the (?P<loc>{loc}) is wrong$")),
        ]

    def __len__(self) -> int:
        return len(self.words)

    @staticmethod
    def split(sentence: str) -> list[str]:
        """Lower-case words without punctuation."""
        if not isinstance(sentence, str):
            raise TypeError(f"a text hint is a str sentence, got {type(sentence).__name__}")
        return re.findall(r"[a-z]+", sentence.lower())

    def _norm(self, words: list[str]) -> list[str]:
        return [_SYNONYMS.get(w, w) if _SYNONYMS.get(w, w) in self.index else w for w in words]

    def examples(self) -> list[str]:
        """One sentence of each template, for error messages and the widget's suggestions."""
        c = self.named[0] if self.named else "object"
        return [
            f"there is a {c} in the {self.cells[0]}",
            f"there is no {c} in this image",
            f"the {c} in the {self.cells[-1]} is wrong",
        ]

    def parse(self, sentence: str) -> Query:
        """The query a sentence states (kind, class, cell); ValueError naming the fix otherwise."""
        words = self._norm(self.split(sentence))
        if not words:
            raise ValueError(f"the sentence {sentence!r} holds no words; type a hint such as {self.examples()[0]!r}")
        unknown = [w for w in words if w not in self.index]
        if unknown:
            w = unknown[0]
            slot = words.index(w)
            after = words[slot - 1] if slot else ""
            if after in ("a", "no") or (after == "the" and slot + 1 < len(words) and words[slot + 1] in ("in", "is")):
                raise ValueError(
                    f"{w!r} is not a class of this model; the classes a hint can name are: "
                    f"{', '.join(self.named)}" + _close(w, self.named)
                )
            if after == "the" or (slot >= 2 and words[slot - 2] == "the"):
                raise ValueError(
                    f"{w!r} is not a location of the template; the locations are: "
                    f"{', '.join(self.cells)} (or 'in this image')" + _close(w, self.cells + self.words[1:])
                )
            raise ValueError(
                f"unknown word {w!r}" + _close(w, self.words[1:]) + f"; the known words are: {' '.join(self.words[1:])}"
            )
        text = " ".join(words)
        for kind, pattern in self._patterns:
            m = pattern.match(text)
            if m:
                cls = self.classes.index(m.group("cls"))
                loc = m.groupdict().get("loc")
                cell = self.cells.index(loc) if loc else None
                return Query(kind, cls, cell, text)
        raise ValueError(
            f"{sentence!r} does not follow a hint template; use one of: "
            + "; ".join(repr(e) for e in self.examples())
            + f" (locations: {', '.join(self.cells)})"
        )

    def encode(self, sentence: str) -> list[int]:
        """Word indices of a template sentence (checked with :meth:`parse` first)."""
        q = self.parse(sentence)
        return [self.index[w] for w in q.text.split()]

    def encode_many(self, sentences: Sequence[str]) -> list[int]:
        """Several sentences joined by ``"and"``, for the GRU to read in one sequence."""
        if not sentences:
            raise ValueError("give at least one sentence")
        ids: list[int] = []
        for i, s in enumerate(sentences):
            if i:
                ids.append(self.index[JOIN])
            ids.extend(self.encode(s))
        return ids


def _close(word: str, options: Sequence[str]) -> str:
    near = difflib.get_close_matches(word, list(options), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(n) for n in near)}?)" if near else ""


class TextGuide(nn.Module):
    """Embedding -> GRU -> linear map to the guiding parameters of one (C, H, W) feature map.

    The final linear map starts at zero, so an untrained text guide predicts the zero block:
    exactly the identity (the plain prediction), whatever the words.
    """

    def __init__(
        self,
        classes: Sequence[str],
        shape: tuple[int, int, int],
        layer: str,
        *,
        embed: int = 24,
        hidden: int = 64,
        grid: int = GRID,
        model_name: str = "",
    ) -> None:
        super().__init__()
        c, h, w = (int(v) for v in shape)
        self.config = {
            "classes": list(classes),
            "shape": [c, h, w],
            "layer": str(layer),
            "embed": int(embed),
            "hidden": int(hidden),
            "grid": int(grid),
            "model_name": str(model_name),
        }
        self.tokenizer = Tokenizer(classes, grid)
        self.grid = int(grid)
        self.layer = str(layer)
        self.shape = (c, h, w)
        self.embedding = nn.Embedding(len(self.tokenizer), embed, padding_idx=0)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.to_params = nn.Linear(hidden, h + w + 2 * c)
        nn.init.zeros_(self.to_params.weight)
        nn.init.zeros_(self.to_params.bias)

    def forward(self, token_lists: Sequence[Sequence[int]]) -> torch.Tensor:
        """(B, H + W + 2C) parameters for B token lists (each one sequence for the GRU)."""
        if not token_lists or any(len(t) == 0 for t in token_lists):
            raise ValueError("every token list must hold at least one word")
        device = self.to_params.weight.device
        seqs = [self.embedding(torch.as_tensor(list(t), dtype=torch.long, device=device)) for t in token_lists]
        _, state = self.gru(pack_sequence(seqs, enforce_sorted=False))
        return self.to_params(state[-1])

    def split(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, H + W + 2C) -> alpha (B, H), beta (B, W), gamma_s (B, C), gamma_b (B, C)."""
        c, h, w = self.shape
        alpha, beta, gamma_s, gamma_b = torch.split(flat, [h, w, c, c], dim=-1)
        return {"alpha": alpha, "beta": beta, "gamma_s": gamma_s, "gamma_b": gamma_b}

    def encode(self, sentences: Sequence[str], mode: str = "sum") -> list[list[int]]:
        """Token lists for :meth:`forward`: one per sentence (``"sum"``) or one joined (``"sequence"``)."""
        if mode == "sum":
            return [self.tokenizer.encode(s) for s in sentences]
        if mode == "sequence":
            return [self.tokenizer.encode_many(sentences)]
        raise ValueError(f"mode must be 'sum' (add each sentence's parameters) or 'sequence', got {mode!r}")

    @torch.no_grad()
    def params(self, sentences: str | Sequence[str], mode: str = "sum") -> dict[str, torch.Tensor]:
        """The guiding parameters several sentences predict together (unbatched, detached).

        ``mode="sum"``: each sentence through the GRU alone, their parameters added;
        ``mode="sequence"``: the GRU reads the sentences joined by ``"and"``.
        """
        if isinstance(sentences, str):
            sentences = [sentences]
        if not sentences:
            raise ValueError("give at least one sentence")
        flat = self(self.encode(sentences, mode)).sum(0)
        return self.split(flat)

    def save(self, path: str | Path) -> None:
        """Write config and weights (loadable with ``torch.load(weights_only=True)``)."""
        torch.save({"config": self.config, "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path) -> TextGuide:
        """A text guide saved with :meth:`save` (clear errors for a missing, torn or foreign file)."""
        what, regen = "a text guide", "train one with `python -m guidewidgets.guide.train_text --out FILE`"
        blob = read_blob(path, what, regen, keys=("config", "state_dict"))
        cfg = dict(blob["config"])
        guide = cls(
            cfg["classes"],
            tuple(cfg["shape"]),  # type: ignore[arg-type]
            cfg["layer"],
            embed=cfg["embed"],
            hidden=cfg["hidden"],
            grid=cfg["grid"],
            model_name=cfg["model_name"],
        )
        load_state(guide, blob["state_dict"], path, what, regen)
        return guide.eval()


def load_text_guide(name: str = "shapes-segmenter") -> TextGuide:
    """The shipped text guide for a zoo model (read from the package, never downloaded)."""
    if name not in SHIPPED:
        raise ValueError(
            f"no text guide ships for {name!r} (shipped: {', '.join(SHIPPED)}); train one with "
            "`python -m guidewidgets.guide.train_text --model NAME --out FILE` and pass "
            "TextGuide.load(FILE)"
        )
    ref = resources.files("guidewidgets.guide") / "weights" / SHIPPED[name]
    with resources.as_file(ref) as path:
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"the shipped text guide {SHIPPED[name]} is missing from the installed package; "
                "reinstall guidewidgets or re-train it with `python -m guidewidgets.guide.train_text`"
            )
        return TextGuide.load(path)
