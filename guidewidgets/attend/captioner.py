"""Show, attend and tell on ShapeScenes: a CNN encoder over a 12 x 12 feature grid, a GRU decoder
with soft attention, greedy decoding that returns each word's attention map, and hard attention.

Soft attention (what the decoder is trained with): at every step the decoder scores the ``L = 144``
grid vectors ``a_i`` against its state, ``p = softmax(scores)``, and reads ``z = sum_i p_i a_i``;
``dz/dp`` exists, so plain gradient descent trains it. Hard attention samples ONE location
``i ~ p`` and reads ``z = a_i``; the sample has no gradient, so training it needs REINFORCE
(:meth:`Captioner.forward_hard`, ``train_captioner --hard``). ``decode(mode="hard")`` samples on any
captioner: on the softly trained one it shows what the sample costs a decoder that learned from
averages; on the REINFORCE-trained one, hard attention as trained.

The encoder is the shipped segmenter's (``zoo.load("shapes-segmenter")``: normalisation and its
five conv blocks, 96 px -> 12 x 12 x 64), frozen, as Show, Attend and Tell used a pretrained VGG;
a trainable 3 x 3 convolution over those features plus two coordinate channels (so "left" and
"right" can be told apart) gives the grid vectors.

:class:`CaptionSession` is what the widget shows: a scene, its caption, each word's map.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..zoo.models import ShapeSegmenter
from ..zoo.weights_io import load_state, read_blob
from .captions import VOCAB, Vocabulary, caption_scenes, describe

__all__ = [
    "IMAGE_SIZE",
    "GRID",
    "FORMAT",
    "HELD_OUT_SEED",
    "Captioner",
    "check_images",
    "weights_path",
    "load_captioner",
    "save_captioner",
    "CaptionSession",
]

#: Side of the images the captioner reads, and of its attention grid.
IMAGE_SIZE = 96
GRID = 12
FORMAT = "guidewidgets.attend.captioner/1"
#: Seed of the held-out scenes (training never uses it).
HELD_OUT_SEED = 51_001
WEIGHTS = Path(__file__).resolve().parent / "weights" / "captioner.pt"
HARD_WEIGHTS = WEIGHTS.with_name("captioner-hard.pt")
_REGEN = "regenerate it with `python -m guidewidgets.attend.train_captioner` (add --hard for the hard-attention one) or reinstall guidewidgets"


def weights_path(hard: bool = False) -> Path:
    """Where the packaged captioner weights live (``hard``: the REINFORCE-trained one)."""
    return HARD_WEIGHTS if hard else WEIGHTS


def check_images(images: Any) -> torch.Tensor:
    """``images`` as a (B, 3, 96, 96) float tensor (a single (3, 96, 96) image gets a batch dim)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, 3, 96, 96) in [0, 1], got {type(images).__name__}")
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) or (3, H, W), got {tuple(images.shape)}")
    if tuple(images.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        h, w = images.shape[-2:]
        raise ValueError(
            f"the captioner expects {IMAGE_SIZE} x {IMAGE_SIZE} images (its attention grid is {GRID} x {GRID} "
            f"cells of 8 px), got {h} x {w}; resize with F.interpolate(x, size=({IMAGE_SIZE}, {IMAGE_SIZE}))"
        )
    if not images.is_floating_point():
        raise TypeError(f"images must be float in [0, 1], got {images.dtype}; use x.float() / 255 for uint8 images")
    return images


class Captioner(nn.Module):
    """Frozen CNN encoder -> grid of ``L = 144`` vectors; GRU decoder with soft attention.

    ``forward(images, tokens)`` is the teacher-forced pass used in training (logits and the
    attention of every step); :meth:`decode` generates captions.
    """

    coords: torch.Tensor
    meta: dict[str, Any]

    def __init__(
        self,
        vocab: Vocabulary = VOCAB,
        dim: int = 64,
        hidden: int = 128,
        embed: int = 32,
        att: int = 64,
        init_mean: bool = False,
    ) -> None:
        super().__init__()
        self.vocab = vocab
        self.config = {"dim": dim, "hidden": hidden, "embed": embed, "att": att, "init_mean": init_mean}
        seg = ShapeSegmenter()
        self.backbone = nn.Sequential(seg.normalize, seg.encoder)
        self.backbone.requires_grad_(False)
        self.project = nn.Sequential(nn.Conv2d(64 + 2, dim, 3, padding=1), nn.ReLU())
        self.init_h = nn.Linear(dim, hidden)
        self.att_a = nn.Linear(dim, att)
        self.att_h = nn.Linear(hidden, att)
        self.att_v = nn.Linear(att, 1)
        self.embed = nn.Embedding(len(vocab), embed)
        self.gru = nn.GRUCell(embed + dim, hidden)
        self.drop = nn.Dropout(0.2)
        self.out = nn.Linear(hidden + dim + embed, len(vocab))
        self.meta = {}
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, GRID), torch.linspace(-1, 1, GRID), indexing="ij")
        self.register_buffer("coords", torch.stack([xs, ys])[None], persistent=False)

    def train(self, mode: bool = True) -> Captioner:
        super().train(mode)
        self.backbone.eval()  # Why: frozen; its BatchNorm statistics must not drift in training
        return self

    # ---- pieces ----------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Grid vectors ``a`` (B, L, dim) of (B, 3, 96, 96) images."""
        x = check_images(images)
        with torch.no_grad():
            f = self.backbone(x)
        return self.encode_features(f)

    def encode_features(self, features: torch.Tensor) -> torch.Tensor:
        """Grid vectors from precomputed backbone features (B, 64, 12, 12) (training uses this)."""
        c = self.coords.expand(features.shape[0], -1, -1, -1)
        a = self.project(torch.cat([features, c], 1))
        return a.flatten(2).transpose(1, 2)

    def init_state(self, a: torch.Tensor) -> torch.Tensor:
        """The decoder's first state: zeros by default. Why: Show, Attend and Tell starts from the
        mean grid vector, but then the first words can be read off that summary without looking
        anywhere; from zeros every word has to come through the attention."""
        if self.config["init_mean"]:
            return torch.tanh(self.init_h(a.mean(1)))
        return a.new_zeros(a.shape[0], self.init_h.out_features)

    def attention(self, a: torch.Tensor, h: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
        """p (B, L): softmax over the grid of ``v^T tanh(W_a a_i + W_h h)``."""
        keys = self.att_a(a) if keys is None else keys
        return torch.softmax(self.att_v(torch.tanh(keys + self.att_h(h)[:, None])).squeeze(-1), dim=1)

    def step(
        self,
        a: torch.Tensor,
        prev: torch.Tensor,
        h: torch.Tensor,
        *,
        mode: str = "soft",
        generator: torch.Generator | None = None,
        keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder step: (logits, new state, p, weights actually used to read ``z``).

        ``mode="soft"``: ``z = sum_i p_i a_i`` (weights = p). ``"hard"``: one location sampled from
        p, ``z = a_i`` (weights one-hot). ``"argmax"``: the most likely location.
        """
        p = self.attention(a, h, keys)
        if mode == "soft":
            w = p
        elif mode in ("hard", "argmax"):
            idx = torch.multinomial(p, 1, generator=generator) if mode == "hard" else p.argmax(1, keepdim=True)
            w = torch.zeros_like(p).scatter_(1, idx, 1.0)
        else:
            raise ValueError(f"mode must be 'soft', 'hard' or 'argmax', got {mode!r}")
        z = torch.bmm(w[:, None], a).squeeze(1)
        e = self.embed(prev)
        h = self.gru(torch.cat([e, z], 1), h)
        logits = self.out(self.drop(torch.cat([h, z, e], 1)))
        return logits, h, p, w

    # ---- training pass ----------------------------------------------------------------------------
    def forward_features(self, features: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing from backbone features: logits (B, T, V) and attention (B, T, L)."""
        a = self.encode_features(features)
        keys = self.att_a(a)
        h = self.init_state(a)
        prev = torch.full((a.shape[0],), self.vocab.start, dtype=torch.long, device=a.device)
        logits, atts = [], []
        for t in range(tokens.shape[1]):
            lg, h, p, _ = self.step(a, prev, h, keys=keys)
            logits.append(lg)
            atts.append(p)
            prev = tokens[:, t]
        return torch.stack(logits, 1), torch.stack(atts, 1)

    def forward_hard(
        self, features: torch.Tensor, tokens: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher forcing with hard attention (REINFORCE training): logits (B, T, V), p (B, T, L)
        and the log-probability (B, T) of each sampled location, which carries the gradient the
        sample itself cannot."""
        a = self.encode_features(features)
        keys = self.att_a(a)
        h = self.init_state(a)
        prev = torch.full((a.shape[0],), self.vocab.start, dtype=torch.long, device=a.device)
        logits, ps, logp = [], [], []
        for t in range(tokens.shape[1]):
            p = self.attention(a, h, keys)
            idx = torch.multinomial(p.detach(), 1, generator=generator)
            logp.append(torch.log(p.gather(1, idx).squeeze(1) + 1e-12))
            z = a.gather(1, idx[:, :, None].expand(-1, 1, a.shape[2])).squeeze(1)
            e = self.embed(prev)
            h = self.gru(torch.cat([e, z], 1), h)
            logits.append(self.out(self.drop(torch.cat([h, z, e], 1))))
            ps.append(p)
            prev = tokens[:, t]
        return torch.stack(logits, 1), torch.stack(ps, 1), torch.stack(logp, 1)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = check_images(images)
        with torch.no_grad():
            f = self.backbone(x)
        return self.forward_features(f, tokens)

    # ---- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(
        self, images: torch.Tensor, *, mode: str = "soft", seed: int = 0, max_len: int = 16
    ) -> list[dict[str, Any]]:
        """Greedy captions of (B, 3, 96, 96) images (or one (3, 96, 96) image).

        Per image: ``words``; ``attention`` (steps, 12, 12), the weights each word was read with
        (soft: p, sums to 1; hard: one-hot at the sampled cell); ``p`` (steps, 12, 12), the
        attention distribution; ``cells`` (steps,) the flat index of the most weighted cell.
        ``steps`` is the number of words (the ``<end>`` step is left out). ``seed`` seeds the hard
        samples, so a hard caption is reproducible.
        """
        if mode not in ("soft", "hard", "argmax"):
            raise ValueError(f"mode must be 'soft', 'hard' or 'argmax', got {mode!r}")
        x = check_images(images)
        was = self.training
        self.eval()
        try:
            g = torch.Generator().manual_seed(int(seed))
            a = self.encode(x)
            keys = self.att_a(a)
            h = self.init_state(a)
            B = a.shape[0]
            prev = torch.full((B,), self.vocab.start, dtype=torch.long)
            done = torch.zeros(B, dtype=torch.bool)
            tokens, ps, ws = [], [], []
            for _ in range(max_len):
                logits, h, p, w = self.step(a, prev, h, mode=mode, generator=g, keys=keys)
                prev = logits.argmax(1)
                prev = torch.where(done, torch.full_like(prev, self.vocab.end), prev)
                tokens.append(prev)
                ps.append(p)
                ws.append(w)
                done |= prev == self.vocab.end
                if bool(done.all()):
                    break
        finally:
            self.train(was)
        tok = torch.stack(tokens, 1)
        P = torch.stack(ps, 1).view(B, -1, GRID, GRID)
        Wt = torch.stack(ws, 1).view(B, -1, GRID, GRID)
        out = []
        for b in range(B):
            words = self.vocab.decode(tok[b].tolist())
            n = len(words)
            out.append(
                {
                    "words": words,
                    "attention": Wt[b, :n].clone(),
                    "p": P[b, :n].clone(),
                    "cells": Wt[b, :n].flatten(1).argmax(1),
                    "mode": mode,
                }
            )
        return out


# ---- weights ---------------------------------------------------------------------------------------


def save_captioner(model: Captioner, path: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Write ``model`` (weights, vocabulary, sizes) with ``meta`` (recipe, metrics)."""
    blob = {
        "format": FORMAT,
        "vocab": list(model.vocab.words[3:]),
        "config": dict(model.config),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(blob, path)


def load_captioner(path: str | os.PathLike[str] | None = None, *, hard: bool = False) -> Captioner:
    """The trained captioner (eval mode) from ``path`` or the packaged file (``hard``: the one
    fine-tuned with hard attention and REINFORCE)."""
    p = Path(path) if path is not None else weights_path(hard)
    what = "the captioner"
    blob = read_blob(
        p, what, _REGEN, keys=("state_dict", "vocab", "config"), accept=lambda b: b.get("format") == FORMAT
    )
    model = Captioner(Vocabulary(blob["vocab"]), **blob["config"])
    load_state(model, blob["state_dict"], p, what, _REGEN)
    model.meta = dict(blob.get("meta", {}))
    return model.eval()


# ---- session -----------------------------------------------------------------------------------------


class CaptionSession:
    """A scene, its generated caption and each word's attention map (what ``CaptionWidget`` shows).

    Args:
        model: the soft-attention :class:`Captioner` (default: the packaged one).
        scenes: ShapeScenes to pick from (default: 64 held-out caption scenes, seed 51001).
        index: the first scene shown; mode: ``"soft"`` or ``"hard"``; seed: the hard samples' seed.
        hard_model: the captioner used in hard mode. Default: the packaged REINFORCE-trained one
            when ``model`` is the packaged one too (and that file exists), else ``model`` itself
            (hard sampling on a softly trained decoder).
    """

    def __init__(
        self,
        model: Captioner | None = None,
        scenes: Any = None,
        index: int = 0,
        mode: str = "soft",
        seed: int = 0,
        hard_model: Captioner | None = None,
    ) -> None:
        if mode not in ("soft", "hard"):
            raise ValueError(f"mode must be 'soft' or 'hard', got {mode!r}")
        packaged = model is None
        self.model = model if model is not None else load_captioner()
        if hard_model is None:
            hard_model = load_captioner(hard=True) if packaged and HARD_WEIGHTS.is_file() else self.model
        self.hard_model = hard_model
        self.scenes = scenes if scenes is not None else caption_scenes(64, seed=HELD_OUT_SEED)
        self.mode, self.seed = mode, int(seed)
        self.index = -1
        self.item: dict[str, Any] = {}
        self.truth: dict[str, Any] | None = None
        self.result: dict[str, Any] = {}
        self.pick(index)

    @property
    def hard_trained(self) -> bool:
        """True when hard mode uses a decoder trained with hard attention (REINFORCE)."""
        return self.hard_model is not self.model and self.hard_model.meta.get("attention") == "hard"

    @property
    def image(self) -> torch.Tensor:
        """The current image (3, 96, 96) in [0, 1]."""
        return self.item["image"]

    @property
    def words(self) -> list[str]:
        return list(self.result["words"])

    def pick(self, index: int) -> dict[str, Any]:
        """Show scene ``index`` of :attr:`scenes`; returns the new caption result."""
        n = len(self.scenes)
        if not isinstance(index, int) or not 0 <= index < n:
            raise ValueError(f"scene index must be an int from 0 to {n - 1}, got {index!r}")
        self.index = index
        self.item = self.scenes[index]
        self.truth = describe(self.item)
        return self.caption()

    def next(self) -> dict[str, Any]:
        """The next scene (wrapping around)."""
        return self.pick((self.index + 1) % len(self.scenes))

    def set_image(self, image: torch.Tensor) -> dict[str, Any]:
        """Caption an image of your own (3, 96, 96) in [0, 1]; no reference caption then."""
        x = check_images(image)
        if x.shape[0] != 1:
            raise ValueError(f"set_image takes one image, got a batch of {x.shape[0]}")
        self.index = -1
        self.item = {"image": x[0]}
        self.truth = None
        return self.caption()

    def set_mode(self, mode: str, seed: int | None = None) -> dict[str, Any]:
        """Soft or hard attention (``seed``: another hard sample)."""
        if mode not in ("soft", "hard"):
            raise ValueError(f"mode must be 'soft' or 'hard', got {mode!r}")
        self.mode = mode
        if seed is not None:
            self.seed = int(seed)
        return self.caption()

    def caption(self) -> dict[str, Any]:
        """Caption the current image with the current mode (kept in :attr:`result`)."""
        model = self.hard_model if self.mode == "hard" else self.model
        self.result = model.decode(self.image, mode=self.mode, seed=self.seed)[0]
        return self.result

    def word_map(self, k: int, *, which: str = "attention", size: int | None = None) -> torch.Tensor:
        """Word ``k``'s map upsampled to the image (H, W); ``which="p"`` for the distribution
        (in hard mode ``"attention"`` is the sampled cell). Values are per-cell weights, so the
        12 x 12 map sums to 1; upsampling spreads each cell over its 8 x 8 pixels (nearest)."""
        n = len(self.result["words"])
        if not 0 <= k < n:
            raise ValueError(f"word index must be from 0 to {n - 1} (the caption has {n} words), got {k}")
        m = self.result[which][k]
        side = size or int(self.image.shape[-1])
        return F.interpolate(m[None, None], size=(side, side), mode="nearest")[0, 0]

    def named_region(self, k: int) -> torch.Tensor | None:
        """Pixels the reference caption's word ``k`` names (bool (H, W)), when the generated word
        equals the reference word at that position; else None."""
        if self.truth is None or k >= len(self.truth["words"]) or k >= len(self.result["words"]):
            return None
        if self.result["words"][k] != self.truth["words"][k]:
            return None
        region = self.truth["regions"][k]
        if region is None:
            return None
        kind, obj = region
        if kind == "background":
            return self.item["instances"] == 0
        return self.item["instances"] == int(obj) + 1

    def mass_inside(self, k: int) -> float | None:
        """Attention mass (p) of word ``k`` inside the region it names (None if it names none)."""
        region = self.named_region(k)
        if region is None:
            return None
        return float((self.word_map(k, which="p") / 64.0 * region).sum())
