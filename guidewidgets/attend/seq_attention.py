"""Bahdanau attention on a toy translation: reverse a short digit sequence.

The attention-and-segmentation lecture shows "Neural Machine Translation by Jointly Learning to
Align and Translate" (Bahdanau et al., ICLR 2015): the decoder reads a soft-weighted sum of the
encoder states, and the weights, one row per output word, form an alignment matrix. Reversing is
the smallest task with a known alignment (output t reads input T - 1 - t), so the learned matrix
can be checked against the anti-diagonal. Training takes seconds on a CPU.

>>> from guidewidgets.attend import seq_attention as sa
>>> model = sa.train_reverser(seed=0)
>>> out, align = model.translate(torch.tensor([[3, 1, 4, 1, 5]]))   # align (1, 5, 5)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Seq2SeqAttention", "ReverseTask", "train_reverser", "sequence_accuracy", "anti_diagonal_mass"]

DIGITS = 10
START = DIGITS  # the decoder's first input token


@dataclass(frozen=True)
class ReverseTask:
    """Random digit sequences of ``length`` and their reversal (the "translation")."""

    length: int = 6

    def batch(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, target) int64 tensors of shape (n, length)."""
        src = torch.randint(0, DIGITS, (n, self.length), generator=generator)
        return src, src.flip(1)


class Seq2SeqAttention(nn.Module):
    """GRU encoder (bidirectional), GRU decoder with additive attention ``v^T tanh(W s + U h_j)``."""

    def __init__(self, hidden: int = 48, embed: int = 16) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(DIGITS, embed)
        self.tgt_embed = nn.Embedding(DIGITS + 1, embed)
        self.encoder = nn.GRU(embed, hidden, batch_first=True, bidirectional=True)
        self.keys = nn.Linear(2 * hidden, hidden)
        self.query = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, 1, bias=False)
        self.cell = nn.GRUCell(embed + 2 * hidden, hidden)
        self.out = nn.Linear(hidden + 2 * hidden, DIGITS)

    def _step(self, prev: torch.Tensor, s: torch.Tensor, h: torch.Tensor, keys: torch.Tensor):
        a = torch.softmax(self.v(torch.tanh(keys + self.query(s)[:, None])).squeeze(-1), dim=1)
        context = torch.bmm(a[:, None], h).squeeze(1)  # the soft read: sum_j a_j h_j
        s = self.cell(torch.cat([self.tgt_embed(prev), context], 1), s)
        return self.out(torch.cat([s, context], 1)), s, a

    def forward(self, src: torch.Tensor, tgt: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, 10) and alignment (B, T, S); teacher-forced when ``tgt`` is given, greedy otherwise."""
        h, _ = self.encoder(self.src_embed(src))
        keys = self.keys(h)
        s = h.new_zeros(src.shape[0], self.query.in_features)
        prev = torch.full((src.shape[0],), START, dtype=torch.long, device=src.device)
        logits, aligns = [], []
        for t in range(src.shape[1]):
            lg, s, a = self._step(prev, s, h, keys)
            logits.append(lg)
            aligns.append(a)
            prev = tgt[:, t] if tgt is not None else lg.argmax(1)
        return torch.stack(logits, 1), torch.stack(aligns, 1)

    @torch.no_grad()
    def translate(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy output digits (B, T) and the alignment matrix (B, T, S) of each sequence."""
        was = self.training
        self.eval()
        try:
            logits, align = self(src)
        finally:
            self.train(was)
        return logits.argmax(-1), align


def train_reverser(
    seed: int = 0, steps: int = 400, length: int = 6, batch: int = 64, hidden: int = 48
) -> Seq2SeqAttention:
    """A :class:`Seq2SeqAttention` trained to reverse digit sequences (Adam, teacher forcing).

    Args:
        seed: seeds the weights and the data, so the same call gives the same model.
        steps: optimiser steps (400 take a few seconds on one CPU core).
        length: sequence length.
        batch: sequences per step.
        hidden: GRU width.

    Returns:
        The trained model in eval mode.
    """
    if steps < 0 or length < 1 or batch < 1:
        raise ValueError(f"need steps >= 0, length >= 1, batch >= 1; got {steps}, {length}, {batch}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = Seq2SeqAttention(hidden=hidden)
    task = ReverseTask(length)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        src, tgt = task.batch(batch, gen)
        logits, _ = model(src, tgt)
        loss = loss_fn(logits.reshape(-1, DIGITS), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def sequence_accuracy(model: Seq2SeqAttention, n: int = 256, length: int = 6, seed: int = 1) -> float:
    """Fraction of ``n`` fresh sequences the model reverses without a single wrong digit."""
    src, tgt = ReverseTask(length).batch(n, torch.Generator().manual_seed(seed))
    out, _ = model.translate(src)
    return float((out == tgt).all(1).float().mean())


def anti_diagonal_mass(align: torch.Tensor) -> float:
    """Mean attention weight on the reversal's true alignment (output t reads input S - 1 - t).

    Args:
        align: (T, S) or (B, T, S) alignment matrices (rows sum to 1).

    Returns:
        1.0 for a perfect alignment, 1 / S for uniform attention.
    """
    a = align if align.dim() == 3 else align[None]
    return float(a.flip(2).diagonal(dim1=1, dim2=2).mean())
