"""Show-attend-tell captioning: captions from scene metadata, attention that sums to 1 per step,
deterministic decoding and training, clear errors, the shipped model looking at what it names,
and CaptionWidget driven from Python."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from guidewidgets.attend import VOCAB, CaptionSession, caption_scenes, describe, load_captioner
from guidewidgets.attend import captioner as cap
from guidewidgets.attend import train_captioner as tc
from guidewidgets.zoo import BACKGROUNDS, CLASSES


@pytest.fixture(scope="module")
def model():
    return load_captioner()


@pytest.fixture(scope="module")
def held_out():
    scenes = caption_scenes(40, seed=cap.HELD_OUT_SEED)
    return scenes, torch.stack([scenes[i]["image"] for i in range(len(scenes))])


def test_captions_follow_the_scene():
    scenes = caption_scenes(64, seed=5)
    for i in range(len(scenes)):
        item = scenes[i]
        d = describe(item)
        words, regions = d["words"], d["regions"]
        assert len(words) == len(regions) and words[-2] == "on"
        assert words[-1] == BACKGROUNDS[item["background"]] and regions[-1] == ("background", None)
        nouns = [w for w in words if w in CLASSES]
        assert sorted(nouns) == sorted(CLASSES[int(c)] for c in item["box_labels"])
        # objects are named left to right, and each class word's region is an object of that class
        named = [regions[k][1] for k, w in enumerate(words) if w in CLASSES]
        centres = [float(item["boxes"][o, 0] + item["boxes"][o, 2]) for o in named]
        assert centres == sorted(centres)
        assert all(
            CLASSES[int(item["box_labels"][o])] == words[k]
            for k, o in zip([k for k, w in enumerate(words) if w in CLASSES], named)
        )
        assert VOCAB.decode(VOCAB.encode(words, 16)) == words


def test_vocabulary_refuses_unknown_words():
    with pytest.raises(ValueError, match="not in the vocabulary"):
        VOCAB.encode(["a", "hexagon"])


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_attention_sums_to_one_per_step(model, held_out, mode):
    _, images = held_out
    for r in model.decode(images[:16], mode=mode, seed=3):
        n = len(r["words"])
        assert n > 0 and r["attention"].shape == (n, cap.GRID, cap.GRID) == r["p"].shape
        torch.testing.assert_close(r["p"].sum((1, 2)), torch.ones(n))
        torch.testing.assert_close(r["attention"].sum((1, 2)), torch.ones(n))
        assert (r["p"] >= 0).all()
        if mode == "hard":  # one cell read, and it is the one recorded
            assert ((r["attention"] == 0) | (r["attention"] == 1)).all()
            assert r["attention"].flatten(1).argmax(1).tolist() == r["cells"].tolist()
        else:
            torch.testing.assert_close(r["attention"], r["p"])


def test_teacher_forced_attention_sums_to_one(model, held_out):
    _, images = held_out
    tokens = torch.tensor([VOCAB.encode(["a", "large", "star", "on", "grass"], 8)] * 4)
    logits, att = model(images[:4], tokens)
    assert logits.shape == (4, 8, len(VOCAB)) and att.shape == (4, 8, cap.GRID * cap.GRID)
    torch.testing.assert_close(att.sum(-1), torch.ones(4, 8))


def test_decoding_is_deterministic(model, held_out):
    _, images = held_out
    a, b = model.decode(images[:8]), model.decode(images[:8])
    assert [r["words"] for r in a] == [r["words"] for r in b]
    assert all(torch.equal(x["attention"], y["attention"]) for x, y in zip(a, b))
    # one image alone gets the caption it gets in a batch
    single = model.decode(images[5])[0]
    assert single["words"] == a[5]["words"]
    torch.testing.assert_close(single["attention"], a[5]["attention"])
    h1, h2, h3 = (model.decode(images[:8], mode="hard", seed=s) for s in (7, 7, 8))
    assert [r["cells"].tolist() for r in h1] == [r["cells"].tolist() for r in h2]
    assert [r["cells"].tolist() for r in h1] != [r["cells"].tolist() for r in h3]


def test_wrong_images_are_refused_with_the_fix(model):
    with pytest.raises(ValueError, match=r"expects 96 x 96 images.*got 128 x 128.*F\.interpolate"):
        model.decode(torch.rand(1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"\(B, 3, 96, 96\)"):
        model.decode(torch.rand(2, 1, 96, 96))
    with pytest.raises(TypeError, match="float"):
        model.decode(torch.zeros(1, 3, 96, 96, dtype=torch.uint8))
    with pytest.raises(ValueError, match="mode must be"):
        model.decode(torch.rand(1, 3, 96, 96), mode="sharp")
    with pytest.raises(ValueError, match="96 x 96"):
        CaptionSession(model).set_image(torch.rand(3, 64, 64))


def test_shipped_model_looks_at_what_it_names(model, held_out):
    assert cap.weights_path().stat().st_size < 2_000_000
    scenes, _ = held_out
    r = tc.evaluate(model, scenes, modes=("soft",))["soft"]
    # well above chance: a uniform map would put object_area of its mass on the object
    assert r["objects_scored"] >= 20
    assert r["object_mass"] > 5 * r["object_area"]
    assert r["word"] > 0.6 and 0.0 <= r["exact"] <= 1.0


def test_session_mass_matches_the_cell_fractions(model, held_out):
    scenes, _ = held_out
    s = CaptionSession(model, scenes)
    for i in range(10):
        s.pick(i)
        for k in range(len(s.words)):
            mass = s.mass_inside(k)
            region = s.named_region(k)
            assert (mass is None) == (region is None)
            if region is not None:
                frac = F.adaptive_avg_pool2d(region.float()[None, None], cap.GRID)[0, 0]
                assert mass == pytest.approx(float((s.result["p"][k] * frac).sum()), abs=1e-5)
    with pytest.raises(ValueError, match="word index"):
        s.word_map(99)


def test_recipe_is_deterministic(tmp_path):
    runs = [tc.train(train=64, test=8, epochs=1, batch=32, log=lambda _: None) for _ in range(2)]
    (m1, r1), (m2, r2) = runs
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    assert (r1["soft"]["exact"], r1["soft"]["word"]) == (r2["soft"]["exact"], r2["soft"]["word"])
    # saved and loaded back, it captions as before
    path = tmp_path / "c.pt"
    cap.save_captioner(m1, path, {"recipe": r1["recipe"]})
    x = caption_scenes(2, seed=3)[0]["image"]
    assert load_captioner(path).decode(x)[0]["words"] == m1.decode(x)[0]["words"]
    with pytest.raises(ValueError, match="unknown recipe entries"):
        tc.train(lr_max=1.0)


def test_bad_weights_files_say_how_to_regenerate(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_captioner"):
        load_captioner(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="train_captioner"):
        load_captioner(bad)
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a guidewidgets weights file for the captioner"):
        load_captioner(tmp_path / "other.pt")


# ---- the widget -------------------------------------------------------------------------------------


@pytest.fixture
def widget(model, held_out):
    pytest.importorskip("ipywidgets")
    from guidewidgets.widgets.caption_widget import CaptionWidget

    w = CaptionWidget(CaptionSession(model, held_out[0], index=1))
    yield w
    w.close()


def test_widget_shows_the_map_of_the_picked_word(widget):
    w = widget
    words = w.session.words
    assert [label for label, _ in w.w_words.options] == words and w.word == 0
    noun = next(k for k, t in enumerate(words) if t in CLASSES)
    w.w_words.index = noun  # a click on the word's button
    assert w.word == noun and words[noun] in w.heading()
    overlay = w.view.frames["overlay"]
    assert overlay is not None and overlay.shape == (96, 96, 4)
    # the overlay is this word's map: opaque where p is high
    m = w.current_map()
    torch.testing.assert_close(torch.from_numpy(m), w.session.word_map(noun, which="p"))
    hi, lo = divmod(int(m.argmax()), 96), divmod(int(m.argmin()), 96)
    assert overlay[hi][3] > overlay[lo][3]
    first = overlay.copy()
    w.step_word(1)
    assert w.word == noun + 1 and w.w_words.index == noun + 1
    assert not (w.view.frames["overlay"] == first).all()
    # a click on the image picks the word that looked there most
    w.view.on_mouse_down(hi[1] * w.view.scale + 1, hi[0] * w.view.scale + 1)
    assert (
        w.session.result["p"][w.word, hi[0] // 8, hi[1] // 8] == w.session.result["p"][:, hi[0] // 8, hi[1] // 8].max()
    )
    assert w.export_image().shape[0] > 96


def test_widget_soft_hard_and_scenes(widget):
    w = widget
    soft = w.session.result["attention"].clone()
    w.w_mode.value = "hard"
    assert w.mode == "hard" and w.session.mode == "hard" and not w.w_resample.disabled
    assert "hard attention" in w.heading()
    assert ((w.session.result["attention"] == 0) | (w.session.result["attention"] == 1)).all()
    assert not torch.equal(soft[:1], w.session.result["attention"][:1])
    seed = w.seed
    w.resample()
    assert w.seed == seed + 1
    w.next_image()
    assert w.index == 2 and w.session.index == 2 and w.word == 0
    w.index = 10_000
    assert w.index == 2 and w.status.startswith("Error") and "from 0 to 39" in w.status
    w.mode = "sharp"
    assert w.mode == "hard" and "soft' or 'hard" in w.status
    w.select_word(99)
    assert "word index" in w.status
    assert w.key_down("n") and w.index == 3


# ---- hard attention trained with REINFORCE ---------------------------------------------------------


def test_hard_sample_cuts_the_words_gradient_off_the_attention(model, held_out):
    """The lecture's point: with a sampled cell, the words' loss gives the attention scorer no
    gradient (dz/dp = 0); only the REINFORCE term (log p of the sample) reaches it."""
    _, images = held_out
    m = load_captioner()
    feats = m.backbone(images[:4])
    tokens = torch.tensor([VOCAB.encode(["a", "large", "star", "on", "grass"], 6)] * 4)
    logits, p, logp = m.forward_hard(feats, tokens, torch.Generator().manual_seed(0))
    assert p.shape == (4, 6, cap.GRID**2) and logp.shape == (4, 6) and (logp <= 0).all()
    F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward(retain_graph=True)
    assert m.att_v.weight.grad is None or not m.att_v.weight.grad.any()
    assert m.out.weight.grad is not None and m.out.weight.grad.any()
    logp.sum().backward()
    assert m.att_v.weight.grad is not None and m.att_v.weight.grad.any()


def test_reinforce_recipe_is_deterministic():
    runs = [tc.train_hard(train=64, test=8, epochs=1, batch=32, log=lambda _: None) for _ in range(2)]
    (m1, r1), (m2, r2) = runs
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    assert (r1["hard"]["exact"], r1["hard"]["word"]) == (r2["hard"]["exact"], r2["hard"]["word"])
    assert any(not torch.equal(s1[k], v) for k, v in load_captioner().state_dict().items())
    with pytest.raises(ValueError, match="unknown recipe entries"):
        tc.train_hard(lr_max=1.0)


def test_shipped_hard_model_looks_at_what_it_names(held_out):
    if not cap.weights_path(hard=True).is_file():
        pytest.skip("no hard-attention captioner shipped")
    assert cap.weights_path(hard=True).stat().st_size < 2_000_000
    hard = load_captioner(hard=True)
    assert hard.meta["attention"] == "hard"
    r = tc.evaluate(hard, held_out[0], modes=("hard",))["hard"]
    assert r["objects_scored"] >= 20 and r["object_mass"] > 5 * r["object_area"]
    session = CaptionSession(index=1, mode="hard")
    assert session.hard_trained and session.hard_model is not session.model
