"""Guide Me with words: the query generator, the tokenizer, the text guide, training and add_text."""

from __future__ import annotations

import pytest
import torch

from guidewidgets import zoo
from guidewidgets.guide import Guide
from guidewidgets.guide.queries import cell_names, generate_queries, region_mask, render_query, sample_queries
from guidewidgets.guide.questions import confusion, miou
from guidewidgets.guide.text import SHIPPED, TextGuide, Tokenizer, load_text_guide
from guidewidgets.guide.train_text import (
    Tail,
    TrainConfig,
    guided_predictions,
    scene_set,
    train,
)

CLASSES = ["background", "circle", "ellipse", "square", "triangle", "star", "cross"]


@pytest.fixture(scope="module")
def segmenter():
    return zoo.load("shapes-segmenter")


# --- the query generator ------------------------------------------------------------------------


def test_region_masks_tile_the_image():
    masks = torch.stack([region_mask(c, 40, 50) for c in range(9)])
    assert bool((masks.sum(0) == 1).all())
    assert bool(masks[0, 0, 0]) and bool(masks[8, 39, 49]) and bool(masks[4, 20, 25])
    assert cell_names() == [
        "top left",
        "top",
        "top right",
        "left",
        "centre",
        "right",
        "bottom left",
        "bottom",
        "bottom right",
    ]


def test_a_missed_class_gives_a_find_in_its_cell():
    truth = torch.zeros(60, 60, dtype=torch.long)
    truth[2:15, 3:16] = 1  # a circle in the top left
    pred = torch.zeros_like(truth)
    qs = generate_queries(pred, truth, CLASSES)
    assert [(q.kind, q.cls, q.cell, q.text) for q in qs] == [("find", 1, 0, "there is a circle in the top left")]
    assert qs[0].pixels == 13 * 13


def test_a_spurious_class_gives_a_remove():
    truth = torch.zeros(60, 60, dtype=torch.long)
    pred = torch.zeros_like(truth)
    pred[45:58, 45:58] = 5  # a star the truth lacks anywhere: an image-wide remove
    qs = generate_queries(pred, truth, CLASSES)
    assert [(q.kind, q.cls, q.cell, q.text) for q in qs] == [("remove", 5, None, "there is no star in this image")]
    truth[2:15, 2:15] = 5  # now a true star elsewhere: the wrong one is named by its cell
    pred[2:15, 2:15] = 5
    qs = generate_queries(pred, truth, CLASSES)
    assert [(q.kind, q.cls, q.cell, q.text) for q in qs] == [("remove", 5, 8, "the star in the bottom right is wrong")]


def test_correct_predictions_void_and_background_give_no_query():
    truth = torch.zeros(60, 60, dtype=torch.long)
    truth[20:40, 20:40] = 3
    assert generate_queries(truth.clone(), truth, CLASSES) == []
    pred = torch.zeros_like(truth)  # the square is missed ...
    voided = truth.masked_fill(truth == 3, 255)  # ... but its pixels are void: nothing to say
    assert generate_queries(pred, voided, CLASSES) == []
    # Small slips under min_pixels are not worth a sentence.
    pred = truth.clone()
    pred[0:3, 0:3] = 2
    assert generate_queries(pred, truth, CLASSES) == []


def test_queries_are_ordered_and_sampling_is_deterministic():
    truth = torch.zeros(60, 60, dtype=torch.long)
    truth[2:15, 3:16] = 1
    truth[40:58, 40:58] = 4
    pred = torch.zeros_like(truth)
    pred[25:35, 25:35] = 6
    qs = generate_queries(pred, truth, CLASSES)
    assert [q.pixels for q in qs] == sorted((q.pixels for q in qs), reverse=True)
    assert {q.kind for q in qs} == {"find", "remove"}
    a = sample_queries(qs, 2, torch.Generator().manual_seed(7))
    b = sample_queries(qs, 2, torch.Generator().manual_seed(7))
    assert a == b and len(a) == 2
    assert sample_queries(qs, 5, kinds=("find",)) == [q for q in qs if q.kind == "find"]


def test_every_generated_sentence_parses_back_to_its_query():
    tok = Tokenizer(CLASSES)
    for cls in range(1, 7):
        for cell in [None, *range(9)]:
            for kind in ("find", "remove"):
                text = render_query(kind, CLASSES[cls], cell)
                q = tok.parse(text)
                assert (q.kind, q.cls, q.cell) == (kind, cls, cell)
    assert tok.parse("There is an Ellipse in the CENTER.").cell == 4
    assert tok.parse("the sky is not visible in this image".replace("sky", "cross")).kind == "remove"


# --- the tokenizer's errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sentence", "message"),
    [
        ("", "holds no words"),
        ("   ?! ", "holds no words"),
        ("there is a dog in the top left", r"'dog' is not a class of this model; .*circle, ellipse"),
        ("there is no circel in this image", r"did you mean 'circle'"),
        ("there is a circle in the upper left", r"'upper' is not a location of the template; .*top left"),
        ("there is a circle please", r"unknown word 'please'.*known words"),
        ("circle there is a", "does not follow a hint template"),
    ],
)
def test_tokenizer_errors_name_the_fix(sentence, message):
    with pytest.raises(ValueError, match=message):
        Tokenizer(CLASSES).parse(sentence)


def test_tokenizer_type_error():
    with pytest.raises(TypeError, match="str"):
        Tokenizer(CLASSES).parse(3)  # type: ignore[arg-type]


# --- the text guide -----------------------------------------------------------------------------


def test_an_untrained_text_guide_is_the_identity(segmenter):
    image = zoo.ShapeScenes(1, seed=3, task="segmentation")[0]["image"]
    with Guide(segmenter, image) as g:
        tg = TextGuide(g.classes, g.block.shape, g.layer)
        g.add_text("there is no circle in this image", text_guide=tg)
        g.add_text("there is a star in the top left", text_guide=tg, mode="sequence")
        assert g.block.is_zero()
        assert torch.equal(g.logits(), g.plain_logits())
        g.reset()
        g.add_text("there is no circle in this image")  # no guide given: the shipped one, not the last
        assert not g.block.is_zero()


def test_training_is_deterministic_at_a_seed(segmenter):
    cfg = TrainConfig.tiny()
    tail = Tail(segmenter, "bottleneck", (96, 96))
    data = scene_set(segmenter, tail, cfg.scenes, 21001)
    a = train(segmenter, cfg, scenes=data)
    b = train(segmenter, cfg, scenes=data)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = train(segmenter, TrainConfig(**{**cfg.__dict__, "seed": 1}), scenes=data)
    assert not torch.equal(a.to_params.weight, c.to_params.weight)
    assert not any(p.requires_grad is False for p in a.parameters())
    assert all(p.grad is None for p in segmenter.parameters())
    assert not a.to_params.weight.eq(0).all()  # it learned something
    # The focus region is part of the recipe: weighing the class everywhere trains another guide.
    d = train(segmenter, TrainConfig(**{**cfg.__dict__, "focus_region": "class"}), scenes=data)
    assert not torch.equal(a.to_params.weight, d.to_params.weight)
    with pytest.raises(ValueError, match="focus_region must be 'class' or 'cell'"):
        train(segmenter, TrainConfig(**{**cfg.__dict__, "focus_region": "object"}), scenes=data)


def test_the_shipped_text_guide_is_small_and_loads_offline():
    from importlib import resources

    path = resources.files("guidewidgets.guide") / "weights" / SHIPPED["shapes-segmenter"]
    assert path.is_file() and path.stat().st_size < 2 * 1024 * 1024  # type: ignore[attr-defined]
    tg = load_text_guide()
    assert tg.layer == "bottleneck" and tuple(tg.shape) == (32, 12, 12)
    with pytest.raises(ValueError, match="no text guide ships"):
        load_text_guide("resnet18")


def test_add_text_matches_the_batched_tail_and_combines_with_clicks(segmenter):
    tg = load_text_guide()
    tail = Tail(segmenter, "bottleneck", (96, 96))
    data = scene_set(segmenter, tail, 8, 12001)
    i = next(i for i, qs in enumerate(data.queries) if len(qs) >= 2)
    texts = [q.text for q in data.queries[i][:2]]
    sentences = [[] for _ in range(8)]
    sentences[i] = texts
    batched = guided_predictions(tg, tail, data, sentences)
    with Guide(segmenter, data.images[i]) as g:
        for t in texts:
            g.add_text(t)
        assert g.texts == texts
        assert torch.equal(g.prediction(), batched[i])
        text_params = {k: v.clone() for k, v in g.params.items()}
        state = g.snapshot()
        # A click starts from the words' parameters, and the penalty is measured from them.
        pred = g.prediction()
        wrong = (pred != data.truth[i]).nonzero()
        y, x = (int(v) for v in (wrong[0] if len(wrong) else (0, 0)))
        g.add_hint(y, x, int(data.truth[i][y, x]))
        assert all(torch.equal(g.params[k], text_params[k]) for k in text_params)
        assert float(g.block.penalty(10.0, g._text_params).detach()) < 1e-9
        g.run()
        assert g.satisfied()
        g.restore(state)
        assert torch.equal(g.prediction(), batched[i]) and g.texts == texts
        g.reset()
        assert g.texts == [] and torch.equal(g.logits(), g.plain_logits())
        g.add_text(texts[0], mode="sequence")
        g.add_text(texts[1], mode="sequence")
        seq = tg.params(texts, "sequence")
        assert torch.allclose(g.params["gamma_b"], seq["gamma_b"])


def test_add_text_errors(segmenter):
    image = zoo.ShapeScenes(1, seed=3, task="segmentation")[0]["image"]
    with Guide(segmenter, image) as g:
        with pytest.raises(ValueError, match="not a class of this model"):
            g.add_text("there is a dog in this image")
        with pytest.raises(ValueError, match="no words"):
            g.add_text("")
        with pytest.raises(ValueError, match="sum"):
            g.add_text("there is a circle in this image", mode="mean")
        assert g.texts == [] and g.block.is_zero()
    with Guide(segmenter, image, layer="encoder.block4") as g:
        with pytest.raises(ValueError, match="layer='bottleneck'"):
            g.add_text("there is a circle in this image")
    with Guide(segmenter, image, spatial=False) as g:
        with pytest.raises(ValueError, match="spatial=True"):
            g.add_text("there is a circle in this image")


def test_one_text_hint_raises_miou_on_held_out_scenes(segmenter):
    """Held-out seed 12001 (never trained or tuned on), 120 scenes, the largest mistake's query.

    Measured with the shipped guide on 400 such scenes: find +8.5, remove +10.5 mIoU (64.6
    unguided). The paper's find > remove does not hold here, and the data says why: fixing each
    query's pixels perfectly (the oracle below) gains +12.9 for find and +14.8 for remove, so our
    remove queries name more of the mIoU that is lost. What must hold is that each kind gains,
    and recovers a good share of what a perfect fix of the named pixels would.
    """
    tg = load_text_guide()
    tail = Tail(segmenter, "bottleneck", (96, 96))
    data = scene_set(segmenter, tail, 120, 12001)
    k = len(CLASSES)
    plain = miou(confusion(data.plain, data.truth, k))
    for kind in ("find", "remove"):
        firsts = [[q for q in qs if q.kind == kind][:1] for qs in data.queries]
        assert sum(1 for s in firsts if s) >= 20
        pred = guided_predictions(tg, tail, data, [[q.text for q in s] for s in firsts])
        gain = miou(confusion(pred, data.truth, k)) - plain
        oracle = data.plain.clone()
        for i, s in enumerate(firsts):
            for q in s:
                r = region_mask(q.cell, 96, 96)
                sel = r & (data.truth[i] == q.cls) if kind == "find" else r & (oracle[i] == q.cls)
                oracle[i][sel] = data.truth[i][sel]
        best = miou(confusion(oracle, data.truth, k)) - plain
        assert gain > 1.0, (kind, gain)
        assert gain > 0.35 * best, (kind, gain, best)
