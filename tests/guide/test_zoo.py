"""Guide Me on the embedded segmenter and held-out ShapeScenes: hints flip pixels, questions help."""

from __future__ import annotations

import statistics

import pytest
import torch

from guidewidgets import zoo
from guidewidgets.guide import Guide, confusion, miou, play, single_hint_flip, void_band
from guidewidgets.guide.reproduce import EVAL_SEED, TUNING_SEEDS


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Why: a guide step is a handful of tiny ops; on a busy 2-core CI box two threads per op
    # cost several times more than they save. Restored afterwards for the other test files.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    return zoo.load("shapes-segmenter")


@pytest.fixture(scope="module")
def scenes():
    data = zoo.ShapeScenes(48, seed=EVAL_SEED, task="segmentation")  # held out: not tuned on
    return [data[i] for i in range(len(data))]


def test_seeds_are_held_out():
    from guidewidgets.zoo import train

    assert EVAL_SEED not in TUNING_SEEDS and EVAL_SEED != train.TEST_SEED
    assert not 0 <= EVAL_SEED - train.TRAIN_SEED < 1000  # training seeds are TRAIN_SEED + epoch


def test_one_hint_flips_a_wrong_pixel_without_flooding(model, scenes):
    gen = torch.Generator().manual_seed(0)
    results = []
    snap = {k: v.clone() for k, v in model.state_dict().items()}
    for item in scenes:
        with Guide(model, item["image"]) as g:
            assert g.fast_path, g.fast_path_note
            r = single_hint_flip(g, item["mask"], gen)
        if r is not None:
            results.append(r)
    assert len(results) >= 6
    assert sum(r.flipped for r in results) / len(results) >= 0.75
    assert statistics.mean(r.changed for r in results) < 0.10  # not the whole image
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in snap.items())
    assert all(p.grad is None for p in model.parameters())


def test_questions_raise_miou(model, scenes):
    # mIoU pools a few rare classes, so it needs many scenes: the first 24 held-out scenes alone
    # gain +11.3 strict, the first 48 +18.6. Strict (every pixel counts) on all 48; PASCAL VOC's
    # protocol (a 1-px void band each side of every outline, ignored by mIoU and never asked), as
    # the paper's numbers are, on the first 24 against strict on the same 24.
    k = len(model.classes)
    record = (0, 5, 20)
    conf = {p: {q: torch.zeros(k, k, dtype=torch.long) for q in record} for p in ("strict", "strict24", "voc24")}
    for i, item in enumerate(scenes):
        runs = [("strict", item["mask"])] + ([("voc24", void_band(item["mask"], 1))] if i < 24 else [])
        for protocol, truth in runs:
            with Guide(model, item["image"]) as g:
                res = play(g, truth, questions=20, record=record)
                assert len(g.hints) == 20
                assert len({h.points for h in g.hints}) == 20  # never the same pixel twice
                assert all(int(truth[p]) != 255 for h in g.hints for p in h.points)  # void is never asked
            for q in record:
                conf[protocol][q] += confusion(res.predictions[q], truth, k)
                if protocol == "strict" and i < 24:
                    conf["strict24"][q] += confusion(res.predictions[q], truth, k)
    m0, m5, m20 = (miou(conf["strict"][q]) for q in record)
    v0, v5, v20 = (miou(conf["voc24"][q]) for q in record)
    assert m0 < m5 < m20, (m0, m5, m20)
    assert v0 < v5 < v20, (v0, v5, v20)
    # The paper gains 18.4 points on PASCAL VOC. Measured here: +18.6 strict (48 scenes), +16.3 VOC
    # (24, where strict gains +11.3); 400 scenes: `python -m guidewidgets.guide.reproduce`. The
    # bounds leave room for BLAS differences and scene noise, not for a regression to the
    # outline-sliver segmenter (+6 strict).
    assert m20 - m0 >= 14.0, (m0, m20)
    assert v20 - v0 >= 14.0, (v0, v20)
    s0, s20 = miou(conf["strict24"][0]), miou(conf["strict24"][20])
    assert v20 - v0 > s20 - s0  # the void band hides outline errors the questions cannot fix


def test_guide_layers_of_the_embedded_segmenter(model, scenes):
    img = scenes[0]["image"]
    for layer in ("encoder.block3", "encoder", "bottleneck", "decoder.up1"):
        with Guide(model, img, layer=layer) as g:
            assert g.fast_path, (layer, g.fast_path_note)
            assert torch.equal(g.logits(), model(img[None]))
            y, x = g.ask()
            g.add_hint(y, x, int(scenes[0]["mask"][y, x]))
            g.run()
            assert g.satisfied() or g.losses[-1] < g.losses[0]
    with pytest.raises(ValueError, match="segmentation output"):
        Guide(zoo.load("shapes-classifier"), img)  # (1, K) logits: hints are pixels


def test_reproduction_tables_do_not_depend_on_the_process_pool(model, scenes):
    import multiprocessing

    from guidewidgets.guide.reproduce import game_table

    few = scenes[:10]  # two chunks of the pool's work (8 scenes each)
    alone = game_table(model, few, model.default_guide_layer, questions=(0, 3), answers="mixed")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        shared = game_table(model, few, model.default_guide_layer, questions=(0, 3), answers="mixed", pool=pool)
    assert all(torch.equal(alone[q], shared[q]) for q in (0, 3))
    assert not torch.equal(alone[0], alone[3])  # the questions changed something
