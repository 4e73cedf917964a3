"""Guide Me: the guiding block, hints, optimiser and questions (mechanics on small random models)."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from guidewidgets.guide import Guide, GuidingBlock, HintTargets, play, rasterize_stroke, void_band
from guidewidgets.guide.hints import Hint
from tests.guide_models import FallbackSeg, SkipSeg, TinySeg, assert_untouched, image_fixture, snapshot, tiny_fixture  # noqa: F401  (pytest fixtures)

# --- the block ----------------------------------------------------------------------------------


def test_block_at_zero_is_exactly_the_identity():
    a = torch.randn(1, 5, 6, 7)
    a[0, 0, 0, 0] = -0.0
    block = GuidingBlock(5, 6, 7)
    with torch.no_grad():
        assert block(a) is a  # no arithmetic at all without gradients
    with torch.enable_grad():
        out = block(a)  # the formula itself: (1 + 0) * a + 0 is exact in float32
    assert torch.equal(out, a)
    chan = GuidingBlock(5, 6, 7, spatial=False)
    assert [p.shape for p in chan.parameters()] == [torch.Size([5]), torch.Size([5])]
    with torch.enable_grad():
        assert torch.equal(chan(a), a)


def test_block_formula():
    a = torch.randn(1, 2, 3, 4)
    b = GuidingBlock(2, 3, 4)
    with torch.no_grad():
        for p in (b.alpha, b.beta, b.gamma_s, b.gamma_b):
            p.copy_(torch.randn(p.shape))
    out = b(a)
    c, h, w = 1, 2, 3
    expect = (1 + b.alpha[h] + b.beta[w] + b.gamma_s[c]) * a[0, c, h, w] + b.gamma_b[c]
    assert torch.allclose(out[0, c, h, w], expect)
    with pytest.raises(ValueError, match="same image size|size it"):
        b(torch.randn(1, 2, 5, 4))


def test_guided_equals_plain_bit_for_bit(tiny, image):
    plain = tiny(image[None])
    with Guide(tiny, image) as g:
        assert g.fast_path
        assert torch.equal(g.logits(), plain)
        assert torch.equal(g.plain_logits(), plain)
        assert torch.equal(tiny(image[None]), plain)  # the attached block at zero
        assert torch.equal(g.prediction(), plain.argmax(1)[0])
        g.add_hint(3, 4, 1)
        g.step()
        g.reset()
        assert torch.equal(g.logits(), plain)
        assert len(g.hints) == 1 and g.losses == []


# --- the model is never changed -----------------------------------------------------------------


def test_session_leaves_model_untouched_even_in_train_mode(image):
    torch.manual_seed(0)
    model = TinySeg().train()  # BatchNorm statistics must not move during guiding
    model.encoder[0].weight.requires_grad_(False)  # mixed flags must come back as they were
    snap = snapshot(model)
    model.eval()
    plain = model(image[None])
    model.train()
    with Guide(model, image) as g:
        g.add_hint(5, 5, 2)
        g.add_stroke([(10, 10), (20, 30)], 1, radius=2, negative=True)
        g.run(5)
        assert torch.equal(g.plain_logits(), plain)
        assert not g.block.is_zero()
    assert_untouched(model, snap)


def test_removing_the_guide_restores_the_plain_model(tiny, image):
    plain = tiny(image[None])
    g = Guide(tiny, image)
    g.add_hint(2, 2, 3)
    g.run(5)
    assert not torch.equal(tiny(image[None]), plain)  # while attached, the model is guided
    g.close()
    g.close()  # twice is fine
    assert torch.equal(tiny(image[None]), plain)
    with pytest.raises(RuntimeError, match="closed"):
        g.step()
    g2 = Guide(tiny, image)  # dropped without close(): garbage collection removes the hooks
    g2.add_hint(2, 2, 3)
    g2.run(3)
    del g2
    gc.collect()
    assert torch.equal(tiny(image[None]), plain)
    assert_untouched(tiny, snapshot(tiny))


def test_errors_are_clear_and_leave_the_model_clean(tiny, image):
    snap = snapshot(tiny)
    with pytest.raises(ValueError, match="encoder.5"):
        Guide(tiny, image, layer="encoder.55")
    with pytest.raises(ValueError, match=r"not a \(B, C, H, W\)"):
        Guide(tiny, image, layer="flat")
    with pytest.raises(TypeError, match="float"):
        Guide(tiny, (image * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        Guide(tiny, image.permute(1, 2, 0))
    with pytest.raises(TypeError, match="torch.Tensor"):
        Guide(tiny, image.numpy())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Guide(tiny, image * 4 - 2)
    with Guide(tiny, image) as g:
        with pytest.raises(ValueError, match="outside"):
            g.add_hint(40, 0, 1)
        with pytest.raises(ValueError, match="outside"):
            g.add_hint(0, -1, 1)
        with pytest.raises(ValueError, match="outside"):
            g.add_stroke([(1, 1), (1, 99)], 1)
        with pytest.raises(ValueError, match="outside the model's 4 classes"):
            g.add_hint(1, 1, 4)
        with pytest.raises(ValueError, match="unknown class"):
            g.add_hint(1, 1, "dog")
        assert g.hints == []
        g.add_hint(1, 1, "class2")
        assert g.hints[0].cls == 2
    assert_untouched(tiny, snap)


def test_error_inside_a_forward_leaves_no_hooks(tiny, image):
    snap = snapshot(tiny)
    g = Guide(tiny, image)
    g.add_hint(1, 1, 1)
    with pytest.raises(ValueError, match="size it was created with"):
        tiny(torch.rand(1, 3, 64, 64))  # another image size while the block is attached
    g.close()
    assert_untouched(tiny, snap)


# --- the head is computed once ------------------------------------------------------------------


def test_fast_path_matches_full_forwards_with_skip_connections():
    torch.manual_seed(0)
    model = SkipSeg().eval()
    img = torch.rand(3, 32, 32)
    with Guide(model, img, layer="mid") as g:
        assert g.fast_path, g.fast_path_note
        g.add_hint(3, 3, 2)
        g.add_hint(20, 20, 0)
        g.run(10)
        fast = g._forward(grad=False, fast=True)
        full = g._forward(grad=False, fast=False)
        assert torch.allclose(fast, full, atol=1e-5)
        assert torch.equal(model(img[None]), full)  # the attached block on a plain call agrees


def test_fast_path_falls_back_when_replay_fails(image):
    torch.manual_seed(0)
    model = FallbackSeg().eval()
    with Guide(model, image) as g:
        assert not g.fast_path and "failed" in g.fast_path_note
        g.add_hint(5, 5, 1)
        g.run(5)
        assert len(g.losses) >= 1
    with Guide(model, image, fast=False) as g:
        assert not g.fast_path


# --- hints, loss, optimiser ---------------------------------------------------------------------


def test_hint_targets_are_the_papers_sparse_target_and_mask():
    px = lambda *p: torch.tensor(p, dtype=torch.long)  # noqa: E731
    hints = [
        Hint(points=((1, 2),), cls=3, pixels=px([1, 2])),
        Hint(points=((4, 4),), cls=1, negative=True, pixels=px([4, 4])),
        Hint(points=((1, 2),), cls=3, negative=True, pixels=px([1, 2])),  # contradicts the first
    ]
    t = HintTargets(hints, 5, 6, 7)
    assert t.y_hat.shape == (6, 7) and t.m_hat.shape == (6, 7) and t.n_hat.shape == (5, 6, 7)
    assert not t.m_hat.any() and t.y_hat[1, 2] == -1  # the later "not 3" wins
    assert t.n_hat[1, 4, 4] and t.n_hat[3, 1, 2] and t.n_hat.sum() == 2
    assert t.hinted.sum() == 2 and t.count == 2
    t2 = HintTargets(hints[:1], 5, 6, 7)
    assert t2.m_hat.sum() == 1 and t2.y_hat[1, 2] == 3


def test_stroke_rasterisation():
    m = rasterize_stroke([(2, 2), (2, 10)], 0, 12, 12)
    assert m[2, 2:11].all() and m.sum() == 9
    m1 = rasterize_stroke([(5, 5)], 1, 12, 12)
    assert m1.sum() == 9 and m1[4:7, 4:7].all()


def test_optimiser_fits_hints_and_warm_starts(tiny, image):
    with Guide(tiny, image, margin=0) as g:  # stop as soon as the argmax agrees
        pred = g.prediction()
        y, x = 10, 12
        target = (int(pred[y, x]) + 1) % 4
        g.add_hint(y, x, target)
        losses = [g.step() for _ in range(5)]
        assert losses[-1] < losses[0] and g.losses == losses
        before = {k: v.clone() for k, v in g.params.items()}
        g.add_hint(30, 40, int(g.prediction()[30, 40]))
        assert all(torch.equal(before[k], v) for k, v in g.params.items())  # warm start
        steps = g.run(200)
        assert g.satisfied() and steps < 200
        assert g.run() == 0  # already satisfied: no step


def test_margin_keeps_optimising_past_the_flip(tiny, image):
    def lead_after_run(margin):
        with Guide(tiny, image, margin=margin) as g:
            target = (int(g.prediction()[10, 12]) + 1) % 4
            g.add_hint(10, 12, target)
            steps = g.run(300)
            z = g.logits()[0, :, 10, 12]
            return steps, float(z[target] - torch.cat([z[:target], z[target + 1 :]]).max())

    s0, lead0 = lead_after_run(0.0)
    s1, lead1 = lead_after_run(0.2)
    assert 0 < lead0 < 0.2 and s0 < s1 < 300  # margin 0 stops right at the flip
    assert lead1 > 0.2


def test_negative_hint_removes_the_class(tiny, image):
    with Guide(tiny, image) as g:
        y, x = 20, 20
        c = int(g.prediction()[y, x])
        g.add_hint(y, x, c, negative=True)
        g.run(200)
        assert g.satisfied() and int(g.prediction()[y, x]) != c


def test_channel_only_block_and_lbfgs(tiny, image):
    with Guide(tiny, image, spatial=False, optimizer="lbfgs") as g:
        c = (int(g.prediction()[8, 8]) + 1) % 4
        g.add_hint(8, 8, c)
        steps = g.run(100)
        assert steps <= 40  # f-BRS's L-BFGS budget
        assert g.losses[-1] < g.losses[0]
        assert not g.params["alpha"].any() and not g.params["beta"].any()
    with pytest.raises(ValueError, match="adam"):
        Guide(tiny, image, optimizer="rmsprop")


def test_run_calls_back_and_step_without_hints(tiny, image):
    with Guide(tiny, image) as g:
        assert g.run() == 0
        seen = []
        g.add_hint(1, 1, (int(g.prediction()[1, 1]) + 2) % 4)
        n = g.run(3, callback=lambda i, loss: seen.append((i, loss)))
        assert [i for i, _ in seen] == list(range(n)) and n >= 1


# --- questions ----------------------------------------------------------------------------------


def test_ask_picks_the_smallest_margin_and_never_a_hinted_pixel(tiny, image):
    with Guide(tiny, image) as g:
        p = g.logits().softmax(1)[0]
        top2 = p.topk(2, dim=0).values
        margin = top2[0] - top2[1]
        y, x = g.ask()
        assert margin[y, x] == margin.min()
        asked = set()
        for _ in range(5):
            y, x = g.ask()
            assert (y, x) not in asked
            asked.add((y, x))
            m = g.margins().masked_fill(g.targets.hinted, float("inf"))
            assert m[y, x] == m.min()
            g.add_hint(y, x, int(g.prediction()[y, x]), negative=len(asked) % 2 == 0)
            g.run(3)


def test_ask_skips_excluded_pixels_and_keeps_the_margin_order(tiny, image):
    with Guide(tiny, image) as g:
        margin = g.margins()
        first = g.ask()
        exclude = torch.zeros(g.height, g.width, dtype=torch.bool)
        exclude[first] = True
        y, x = g.ask(exclude)
        assert (y, x) != first
        assert margin[y, x] == margin.masked_fill(exclude, float("inf")).min()
        with pytest.raises(ValueError, match="exclude must be an"):
            g.ask(torch.zeros(3, 3, dtype=torch.bool))


def test_void_band_marks_outlines_only():
    mask = torch.zeros(12, 14, dtype=torch.long)
    mask[3:8, 4:10] = 2
    mask[5:8, 8:12] = 3  # a second object overlapping the first
    assert torch.equal(void_band(mask, 0), mask)
    for w in (1, 2):
        v = void_band(mask, w)
        band = v == 255
        # A pixel is void exactly when a pixel of another label lies within w (Chebyshev distance).
        for yy in range(12):
            for xx in range(14):
                win = mask[max(0, yy - w) : yy + w + 1, max(0, xx - w) : xx + w + 1]
                assert bool(band[yy, xx]) == bool((win != mask[yy, xx]).any())
        assert torch.equal(v[~band], mask[~band])  # labels elsewhere untouched
    assert not (void_band(torch.ones(5, 5, dtype=torch.long), 2) == 255).any()  # image border is no outline
    with pytest.raises(ValueError, match="already holds void"):
        void_band(void_band(mask, 1), 1)
    with pytest.raises(ValueError, match="width"):
        void_band(mask, -1)


def test_game_never_asks_a_void_pixel(tiny, image):
    truth = torch.zeros(40, 48, dtype=torch.long)
    truth[10:30, 12:36] = 1
    truth = void_band(truth, 2)
    with Guide(tiny, image) as g:
        play(g, truth, questions=6, record=(0, 6), steps=3)
        assert len(g.hints) == 6
        assert all(int(truth[y, x]) != 255 for h in g.hints for (y, x) in h.points)


def test_ask_when_everything_is_hinted():
    torch.manual_seed(0)
    model = SkipSeg().eval()
    with Guide(model, torch.rand(3, 4, 4), layer="mid") as g:
        g.add_stroke([(0, 0), (3, 0), (3, 3), (0, 3), (0, 0)], 1, radius=3)
        with pytest.raises(RuntimeError, match="every pixel"):
            g.ask()


# --- torchvision models ---------------------------------------------------------------------------


class _Out(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m(x)["out"]


@pytest.mark.parametrize("name,layer", [("lraspp", "m.backbone.12"), ("fcn", "backbone.layer3")])
def test_torchvision_segmenters_random_weights(name, layer):
    tvs = pytest.importorskip("torchvision.models.segmentation")
    torch.manual_seed(0)
    if name == "lraspp":
        model = _Out(tvs.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5)).eval()
    else:  # a dict output is accepted as is
        model = tvs.fcn_resnet50(weights=None, weights_backbone=None, num_classes=5, aux_loss=False).eval()
    img = torch.rand(3, 64, 64)
    snap = snapshot(model)
    with torch.no_grad():
        out = model(img[None])
        plain = out["out"] if isinstance(out, dict) else out
    with Guide(model, img, layer=layer) as g:
        assert g.fast_path, g.fast_path_note
        assert torch.equal(g.logits(), plain)
        g.add_hint(10, 10, (int(plain[0, :, 10, 10].argmax()) + 1) % 5)
        g.run(3)
        assert len(g.losses) >= 1
        if not g.block.is_zero():
            full = g._forward(grad=False, fast=False)
            assert torch.allclose(g.logits(), full, atol=1e-4)
    with pytest.raises(ValueError, match="Did you mean"):
        Guide(model, img, layer=layer + "x")
    assert_untouched(model, snap)


def test_layer_given_as_a_module_and_default_layer_fallback(tiny, image):
    with Guide(tiny, image, layer=tiny.encoder[3]) as g:
        assert g.layer == "encoder.3"
    with pytest.raises(ValueError, match="not a sub-module"):
        Guide(tiny, image, layer=nn.Conv2d(3, 3, 1))
    torch.manual_seed(0)
    model = SkipSeg().eval()  # no default_guide_layer: the spatially smallest, widest map
    with Guide(model, torch.rand(3, 32, 32)) as g:
        assert g.layer == "mid"


# --- issue 24: refuse rather than coerce ----------------------------------------------------------
