"""Guide Me: the guiding block, hints, optimiser and questions (mechanics on small random models)."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from guidewidgets.guide import Guide, GuideState, GuidingBlock, HintTargets, play, rasterize_stroke, void_band
from guidewidgets.guide.hints import Hint


class TinySeg(nn.Module):
    """Plain encoder/decoder with BatchNorm, in-place ReLUs and a 3-D intermediate output."""

    def __init__(self, k: int = 4) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, 2, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 16, 3, 1, 1),
            nn.ReLU(inplace=True),
        )
        self.flat = nn.Flatten(2)  # (B, C, H*W): not a feature map a guide can use
        self.decoder = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(16, k, 1))
        self.classes = [f"class{i}" for i in range(k)]
        self.task = "segmentation"
        self.default_guide_layer = "encoder.5"

    def forward(self, x):
        x = (x - 0.5) / 0.25
        f = self.encoder(x)
        f = self.flat(f).view_as(f)
        return F.interpolate(self.decoder(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


class SkipSeg(nn.Module):
    """U-Net-like: the tail reads an early head feature map through a skip connection."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1), nn.ReLU(inplace=True))
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(inplace=True))
        self.mid = nn.Sequential(nn.Conv2d(16, 16, 3, 1, 1), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(16 + 8, k, 3, 1, 1)
        self.classes = ["a", "b", "c"]

    def forward(self, x):
        s = self.stem(x)
        m = self.mid(self.down(s))
        up = F.interpolate(m, size=s.shape[-2:], mode="nearest")
        return self.head(torch.cat([up, s], 1))


class NoEmptyBatch(nn.Module):
    """A head module that cannot run on an empty batch: the fast path must fall back."""

    def forward(self, x):
        return x.view(1, *x.shape[1:]) * 1.0


class FallbackSeg(TinySeg):
    def __init__(self):
        super().__init__()
        self.odd = NoEmptyBatch()

    def forward(self, x):
        f = self.encoder(self.odd((x - 0.5) / 0.25))
        return F.interpolate(self.decoder(f), size=x.shape[-2:], mode="bilinear", align_corners=False)


def _snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [p.requires_grad for p in model.parameters()],
        [m.training for m in model.modules()],
    )


def _assert_untouched(model: nn.Module, snap) -> None:
    state, flags, training = snap
    now = model.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[k], v) for k, v in state.items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert [m.training for m in model.modules()] == training
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinySeg().eval()


@pytest.fixture
def image():
    return torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(1))


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
    snap = _snapshot(model)
    model.eval()
    plain = model(image[None])
    model.train()
    with Guide(model, image) as g:
        g.add_hint(5, 5, 2)
        g.add_stroke([(10, 10), (20, 30)], 1, radius=2, negative=True)
        g.run(5)
        assert torch.equal(g.plain_logits(), plain)
        assert not g.block.is_zero()
    _assert_untouched(model, snap)


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
    _assert_untouched(tiny, _snapshot(tiny))


def test_errors_are_clear_and_leave_the_model_clean(tiny, image):
    snap = _snapshot(tiny)
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
    _assert_untouched(tiny, snap)


def test_error_inside_a_forward_leaves_no_hooks(tiny, image):
    snap = _snapshot(tiny)
    g = Guide(tiny, image)
    g.add_hint(1, 1, 1)
    with pytest.raises(ValueError, match="size it was created with"):
        tiny(torch.rand(1, 3, 64, 64))  # another image size while the block is attached
    g.close()
    _assert_untouched(tiny, snap)


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
    snap = _snapshot(model)
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
    _assert_untouched(model, snap)


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


@pytest.mark.parametrize(
    "option,value,error,match",
    [
        ("lr", float("nan"), ValueError, "lr must be a finite number > 0"),
        ("lr", float("inf"), ValueError, "lr must be a finite number > 0"),
        ("lr", 0, ValueError, "lr must be a finite number > 0"),
        ("lr", -0.1, ValueError, "lr must be a finite number > 0"),
        ("lr", True, TypeError, "lr must be"),
        ("lr", "0.1", TypeError, "lr must be"),
        ("keep", float("nan"), ValueError, "keep must be a finite number >= 0"),
        ("keep", -1.0, ValueError, "keep must be a finite number >= 0"),
        ("penalty", float("inf"), ValueError, "penalty must be a finite number >= 0"),
        ("penalty", float("nan"), ValueError, "penalty must be"),
        ("margin", float("nan"), ValueError, "margin must be a finite number >= 0"),
        ("margin", float("-inf"), ValueError, "margin must be"),
        ("bias_weight", -2.0, ValueError, "bias_weight must be"),
        ("steps", 2.5, TypeError, "steps must be an int"),
        ("steps", -1, ValueError, ">= 0"),
        ("spatial", "no", TypeError, "spatial must be True or False"),
        ("fast", 1, TypeError, "fast must be True or False"),
    ],
)
def test_bad_options_are_refused_with_a_sentence(tiny, image, option, value, error, match):
    snap = _snapshot(tiny)
    with pytest.raises(error, match=match):
        Guide(tiny, image, **{option: value})
    _assert_untouched(tiny, snap)


def test_valid_option_edges_still_work(tiny, image):
    with Guide(tiny, image, keep=0, penalty=0.0, margin=0, steps=np.int64(3), lr=np.float32(0.05)) as g:
        g.add_hint(3, 3, 1)
        assert g.run() <= 3 and g.max_steps == 3


def test_images_the_model_cannot_take_are_refused(tiny, image):
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        Guide(tiny, torch.rand(0, 40, 48))  # no channels
    with pytest.raises(ValueError, match="no pixels"):
        Guide(tiny, torch.rand(3, 0, 48))  # failed inside torch's min() before
    grey = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).eval()
    with pytest.raises(ValueError, match=r"first conv takes 1 channel.*mean\(0, keepdim=True\)"):
        Guide(grey, image)  # a conv error inside torch before
    with Guide(grey, image.mean(0, keepdim=True), layer="1") as g:  # the model's own channel count
        g.add_hint(1, 1, 2)
        g.run(2)
        assert torch.isfinite(g.logits()).all() and g.logits().shape == (1, 3, 40, 48)
    with pytest.raises(ValueError, match=r"drop the alpha channel"):
        Guide(tiny, torch.rand(4, 40, 48))


def test_a_model_with_nan_output_or_one_class_is_refused(image):
    nan = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 1)).eval()
    with torch.no_grad():
        nan[1].bias[0] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        Guide(nan, image, layer="0")
    one = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 1, 1)).eval()
    with pytest.raises(ValueError, match="K >= 2"):
        Guide(one, image, layer="0")


@pytest.mark.parametrize(
    "args,error,match",
    [
        ((2.5, 3, 1), TypeError, "y coordinate must be a whole number"),
        ((True, 3, 1), TypeError, "y coordinate must be a whole number"),
        (("3", 3, 1), TypeError, "y coordinate must be a whole number"),
        ((3, 4.0, 1), TypeError, "x coordinate must be a whole number"),
        ((3, torch.tensor(4.0), 1), TypeError, "x coordinate"),
        ((3, 3, 1.5), TypeError, r"class must be an int index \(0..3\) or a class name"),
        ((3, 3, True), TypeError, "class must be an int index"),
        ((3, 3, torch.tensor(1.0)), TypeError, "class must be an int index"),
        ((3, 3, None), TypeError, "class must be an int index"),
        ((3, 3, 1, "no"), TypeError, "negative must be True or False"),
    ],
)
def test_add_hint_refuses_non_integers_instead_of_truncating(tiny, image, args, error, match):
    with Guide(tiny, image) as g:
        with pytest.raises(error, match=match):
            g.add_hint(*args)
        assert g.hints == [] and g.targets.count == 0


def test_add_hint_takes_python_numpy_and_torch_integers_and_names(tiny, image):
    with Guide(tiny, image) as g:
        assert g.add_hint(np.int64(3), torch.tensor(4), np.int32(1)).points == ((3, 4),)
        assert g.add_hint(3, 4, "class2").cls == 2
        assert g.add_hint(torch.tensor(5, dtype=torch.int32), 6, np.uint8(3), negative=np.bool_(True)).negative
        assert all(isinstance(v, int) for h in g.hints for p in h.points for v in p)


@pytest.mark.parametrize(
    "points,kwargs,error,match",
    [
        ((3, 4), {}, ValueError, r"for one point \[\(3, 4\)\]"),  # a single pair (crashed with 'int' not iterable)
        ([(3.5, 4)], {}, TypeError, "stroke point's y coordinate must be a whole number"),
        ([(3, 4, 5)], {}, ValueError, r"\(y, x\) pairs"),
        ([], {}, ValueError, "at least one"),
        ("ab", {}, TypeError, r"\(y, x\) pairs"),
        (torch.tensor([3, 4]), {}, ValueError, r"\(y, x\) pairs"),
        ([(3, 4)], {"radius": 1.5}, TypeError, "radius must be a whole number"),
        ([(3, 4)], {"radius": True}, TypeError, "radius must be a whole number"),
        ([(3, 4)], {"radius": -1}, ValueError, "radius must be >= 0"),
    ],
)
def test_add_stroke_refuses_bad_points_and_radius(tiny, image, points, kwargs, error, match):
    with Guide(tiny, image) as g:
        with pytest.raises(error, match=match):
            g.add_stroke(points, 1, **kwargs)
        assert g.hints == []


def test_add_stroke_takes_arrays_of_integer_points(tiny, image):
    with Guide(tiny, image) as g:
        a = g.add_stroke(np.array([[3, 4], [3, 9]]), 1, radius=np.int64(0))
        b = g.add_stroke(torch.tensor([[3, 4], [3, 9]]), 1, radius=0)
        assert a.points == b.points == ((3, 4), (3, 9)) and torch.equal(a.pixels, b.pixels)


def test_ask_refuses_exclude_masks_of_another_shape_or_dtype(tiny, image):
    with Guide(tiny, image) as g:
        with pytest.raises(ValueError, match=r"\(40, 48\), got shape \(2, 40, 48\)"):
            g.ask(torch.zeros(2, 40, 48, dtype=torch.bool))  # a torch view error before
        with pytest.raises(TypeError, match="exclude == 1"):
            g.ask(torch.zeros(40, 48))  # silently cast to bool before
        with pytest.raises(TypeError, match="torch.from_numpy"):
            g.ask(np.zeros((40, 48), bool))
        with pytest.raises(TypeError, match="callback"):
            g.run(2, callback=3)  # type: ignore[arg-type]


def test_restore_refuses_a_snapshot_of_another_guide_without_changing_anything(tiny, image):
    with Guide(tiny, image) as g:
        g.add_hint(39, 47, 3)
        g.run(2)
        other_state = g.snapshot()
    with Guide(tiny, image[:, :37, :45]) as small:  # the same block shape, a smaller image
        assert small.block.shape == g.block.shape
        small.add_hint(1, 1, 1)
        small.run(2)
        before = small.snapshot()
        with pytest.raises(ValueError, match="another guide"):
            small.restore(other_state)  # an IndexError after changing the block, before
        half = GuideState({**other_state.params, "gamma_s": torch.zeros(3)}, (), ())
        with pytest.raises(ValueError, match="another guide"):
            small.restore(half)  # alpha and beta were already overwritten before
        with pytest.raises(TypeError, match="snapshot"):
            small.restore({"alpha": 1})  # type: ignore[arg-type]
        assert all(torch.equal(before.params[k], v) for k, v in small.params.items())
        assert small.hints == list(before.hints)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "lbfgs"])
def test_a_diverging_step_is_refused_and_the_block_put_back(tiny, image, optimizer):
    with pytest.raises(ValueError, match="lr=1e.38 is too large"):
        Guide(tiny, image, optimizer=optimizer, lr=1e38)  # a RuntimeError inside Adam's step before
    lr = {"sgd": 1e20, "adam": 1e37, "lbfgs": 1e30}[optimizer]
    with Guide(tiny, image, optimizer=optimizer, lr=lr, margin=1e30) as g:  # NaN logits before
        g.add_hint(3, 3, (int(g.prediction()[3, 3]) + 1) % 4)
        g.add_hint(30, 30, (int(g.prediction()[30, 30]) + 1) % 4, negative=True)
        with pytest.raises(ValueError, match="smaller lr"):
            g.run(20)
        assert all(torch.isfinite(v).all() for v in g.params.values())
        assert torch.isfinite(g.logits()).all()
        assert torch.isfinite(tiny(image[None])).all()  # other forwards see the finite block too
