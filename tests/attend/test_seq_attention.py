"""The toy Bahdanau translator (attend.seq_attention) and Grad-CAM of a caption word (attend.word_cam)."""

from __future__ import annotations

import pytest
import torch

from guidewidgets.attend import VOCAB, CaptionSession
from guidewidgets.attend import seq_attention as sa
from guidewidgets.attend.word_cam import WordScores, word_grad_cam
from tests.helpers import hook_count


@pytest.fixture(scope="module")
def reverser() -> sa.Seq2SeqAttention:
    return sa.train_reverser(seed=0, steps=150)


def test_the_task_is_reversal():
    src, tgt = sa.ReverseTask(5).batch(4, torch.Generator().manual_seed(0))
    assert torch.equal(tgt, src.flip(1)) and src.shape == (4, 5)


def test_alignment_rows_are_distributions_and_shapes_follow_the_input():
    model = sa.Seq2SeqAttention(hidden=8, embed=4)
    out, align = model.translate(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    assert out.shape == (2, 3) and align.shape == (2, 3, 3)
    assert torch.allclose(align.sum(-1), torch.ones(2, 3), atol=1e-6) and bool((align >= 0).all())
    assert model.training, "translate() must restore the training flag"


def test_teacher_forcing_reads_the_given_target():
    model = sa.Seq2SeqAttention(hidden=8, embed=4).eval()
    src = torch.tensor([[1, 2, 3]])
    a, _ = model(src, torch.tensor([[0, 0, 0]]))
    b, _ = model(src, torch.tensor([[0, 9, 9]]))
    assert torch.equal(a[:, :2], b[:, :2]) and not torch.equal(a[:, 2], b[:, 2])  # step t sees target t - 1


def test_training_is_deterministic_and_learns_the_anti_diagonal(reverser):
    again = sa.train_reverser(seed=0, steps=150)
    assert all(torch.equal(p, q) for p, q in zip(reverser.state_dict().values(), again.state_dict().values()))
    src, _ = sa.ReverseTask().batch(64, torch.Generator().manual_seed(3))
    _, align = reverser.translate(src)
    assert sa.anti_diagonal_mass(align) > 2 / 6  # uniform attention would give 1 / 6
    assert sa.sequence_accuracy(reverser, n=64) > 0.5


def test_anti_diagonal_mass_extremes():
    assert sa.anti_diagonal_mass(torch.eye(4).flip(1)) == 1.0
    assert sa.anti_diagonal_mass(torch.full((4, 4), 0.25)) == pytest.approx(0.25)


def test_train_reverser_refuses_bad_sizes():
    with pytest.raises(ValueError, match="length"):
        sa.train_reverser(length=0)


@pytest.fixture(scope="module")
def session() -> CaptionSession:
    return CaptionSession(index=0)


def test_word_scores_equal_the_captioner_logits(session):
    tokens = torch.tensor(VOCAB.encode(session.words))
    model = session.model.eval()
    with torch.no_grad():
        logits, _ = model(session.image[None], tokens[None])
        for k in range(len(session.words)):
            assert torch.allclose(WordScores(model, tokens, k)(session.image[None]), logits[:, k], atol=1e-5)


def test_word_grad_cam_is_a_nonnegative_map_and_leaves_no_hooks(session):
    tokens = torch.tensor(VOCAB.encode(session.words))
    k = session.words.index("square")
    before = hook_count(session.model)
    m = word_grad_cam(session.model, session.image, tokens, k)
    assert m.shape == (96, 96) and bool((m >= 0).all()) and float(m.max()) > 0
    assert hook_count(session.model) == before
    region = session.named_region(k)
    assert float((m * region).sum() / m.sum()) > float(region.float().mean())  # more mass on the square


def test_word_scores_refuses_a_word_outside_the_caption(session):
    with pytest.raises(ValueError, match="k must index"):
        WordScores(session.model, torch.tensor([3, 4]), 5)
