"""GAIN's pieces: the soft mask, the differentiable attention, the losses, the trainer's identities."""

import functools
import threading

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from guidewidgets import zoo
from guidewidgets.gain import (
    GainConfig,
    GainTrainer,
    attention,
    gain_losses,
    masked_image,
    mining_loss,
    soft_mask,
)
from guidewidgets.zoo.models import ShapeClassifier
from tests.helpers import PlainNet, scene_tensors
from tests.helpers import until as _until

# No BatchNorm: samples independent everywhere (as in the DDP test).
TinyNet = functools.partial(PlainNet, ["a", "b", "c"])


@pytest.fixture(scope="module")
def scenes():
    x, labels, masks = scene_tensors(48, seed=5)
    return x, labels, masks.float()


def test_soft_mask_matches_formula():
    a = torch.rand(3, 7, 7)
    for sigma, omega in [(0.5, 10.0), (0.2, 3.0), (0.9, 0.0)]:
        want = 1 / (1 + torch.exp(-omega * (a - sigma)))
        torch.testing.assert_close(soft_mask(a, sigma, omega), want)
    x = torch.rand(3, 3, 7, 7)
    t = soft_mask(a)
    torch.testing.assert_close(masked_image(x, t), x * (1 - t[:, None]))


def test_attention_is_gradcam_normalised(scenes):
    x, y, _ = scenes
    model = zoo.load("shapes-classifier").eval()
    att = attention(model, x[:6], y[:6], "features", create_graph=False)
    assert att.maps.shape == (6, 96, 96)
    flat = att.maps.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(6))
    torch.testing.assert_close(flat.max(1).values, torch.ones(6))
    # Grad-CAM by hand for image 0: GAP + linear means the weights are fc.weight[c] / (h w).
    with torch.no_grad():
        f = model.features(model.normalize(x[:1]))
        cam = F.relu((model.fc.weight[y[0]][:, None, None] * f[0]).sum(0)) / 144
    torch.testing.assert_close(att.raw[0], cam, rtol=1e-4, atol=1e-6)
    assert not any(m._forward_hooks for m in model.modules())


def test_gradients_reach_the_weights_through_the_attention(scenes):
    x, y, _ = scenes
    torch.manual_seed(0)
    model = ShapeClassifier()
    att = attention(model, x[:4], y[:4], "features", create_graph=True)
    w = torch.rand_like(att.maps)
    (g,) = torch.autograd.grad((att.maps * w).sum(), model.features.block1[0].weight)
    assert g.abs().sum() > 0
    # and the path through the gradient weights w^c (the fc layer only enters through them)
    (gfc,) = torch.autograd.grad((attention(model, x[:4], y[:4], "features").maps * w).sum(), model.fc.weight)
    assert gfc.abs().sum() > 0
    assert not attention(model, x[:4], y[:4], "features", create_graph=False).maps.requires_grad


def test_multilabel_pairs_match_single_label(scenes):
    x, y, _ = scenes
    model = zoo.load("shapes-classifier").eval()
    hot = torch.zeros(4, 6)
    hot[torch.arange(4), y[:4]] = 1
    hot[0, (y[0] + 1) % 6] = 1  # a second class on image 0
    multi = attention(model, x[:4], hot, "features", create_graph=False)
    single = attention(model, x[:4], y[:4], "features", create_graph=False)
    assert len(multi.maps) == 5
    for p in range(5):
        i, c = int(multi.image[p]), int(multi.cls[p])
        if c == int(y[i]):
            torch.testing.assert_close(multi.maps[p], single.maps[i])
        else:
            alone = attention(model, x[i : i + 1], torch.tensor([c]), "features", create_graph=False)
            torch.testing.assert_close(multi.maps[p], alone.maps[0], rtol=1e-4, atol=1e-5)


def test_mining_loss_drops_when_the_mask_hides_the_object(scenes):
    x, y, objects = scenes
    model = zoo.load("shapes-classifier").eval()
    # the same number of pixels erased, once on the object, once on the background far from it
    shifted = torch.roll(objects, shifts=(48, 48), dims=(1, 2)) * (1 - objects)
    hidden = mining_loss(model, x, y, objects)
    elsewhere = mining_loss(model, x, y, shifted)
    nothing = mining_loss(model, x, y, torch.zeros_like(objects))
    assert hidden < 0.5 * elsewhere and hidden < 0.5 * nothing


def test_pixel_label_loss_is_mean_squared_error(scenes):
    x, y, objects = scenes
    torch.manual_seed(0)
    model = ShapeClassifier().eval()
    has = torch.tensor([True, False, True, False])
    out = gain_losses(model, x[:4], y[:4], "features", GainConfig(alpha=0.0), masks=objects[:4], has_mask=has)
    want = ((out.attention.maps[has] - objects[:4][has]) ** 2).mean()
    torch.testing.assert_close(out.e, want)
    torch.testing.assert_close(out.total, out.cl + 10.0 * want)


def _plain_weights(x, y, steps, batch, seed):
    torch.manual_seed(0)
    model = ShapeClassifier(num_classes=6)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    per_epoch = -(-len(x) // batch)
    for s in range(steps):
        epoch, k = divmod(s, per_epoch)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        i = order[k * batch : (k + 1) * batch]
        loss = F.cross_entropy(model(x[i]), y[i])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.state_dict()


def test_alpha_zero_without_masks_is_plain_training(scenes):
    x, y, _ = scenes
    torch.manual_seed(0)
    model = ShapeClassifier(num_classes=6)
    trainer = GainTrainer(model, "features", x, y, config=GainConfig(alpha=0.0), batch_size=16, seed=3, mine=True)
    trainer.fit(steps=4)
    assert trainer.history[-1]["losses"]["am"] > 0  # the attention was computed, with weight 0
    want = _plain_weights(x, y, steps=4, batch=16, seed=3)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, want[k], rtol=0, atol=1e-6, msg=k)


def test_trainer_deterministic_and_gain_moves_weights(scenes):
    x, y, objects = scenes

    def run(alpha):
        torch.manual_seed(0)
        m = ShapeClassifier(num_classes=6).eval()
        t = GainTrainer(
            m,
            "features",
            x,
            y,
            config=GainConfig(alpha=alpha),
            masks=objects,
            has_mask=torch.arange(48) < 4,
            batch_size=16,
            seed=1,
        )
        t.fit(steps=2)
        assert not m.training  # fit() gives the model back in the mode it got it
        return m.state_dict(), t.history

    a, ha = run(1.0)
    b, hb = run(1.0)
    c, _ = run(0.0)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ha == hb
    assert any(not torch.allclose(a[k].float(), c[k].float()) for k in a)
    assert ha[0]["losses"]["e"] > 0


def test_pause_resume_stop_and_probes(scenes):
    x, y, _ = scenes
    torch.manual_seed(0)
    events = []
    gate = threading.Event()

    def cb(ev):
        events.append(ev)
        if ev["kind"] == "step" and ev["step"] == 2:
            trainer.pause()
            gate.set()

    trainer = GainTrainer(
        TinyNet(), "features", x, y % 3, batch_size=8, epochs=50, probes=x[:3], probe_every=1, callbacks=[cb]
    )
    th = threading.Thread(target=trainer.fit)
    th.start()
    assert gate.wait(30)
    assert trainer.paused
    assert _until(lambda: trainer.waiting)
    steps = trainer.step_count
    th.join(timeout=0.5)
    assert th.is_alive() and trainer.step_count == steps  # paused: no progress
    trainer.resume()
    trainer.stop()
    th.join(timeout=30)
    assert not th.is_alive()
    assert events[-1] == {**events[-1], "kind": "end", "reason": "stopped"}
    probes = [e for e in events if e["kind"] == "probe"]
    assert probes and probes[0]["maps"].shape == (3, 96, 96) and probes[0]["masked"].shape == (3, 3, 96, 96)
    assert trainer.step_count < trainer.total_steps


def test_clear_errors(scenes):
    x, y, objects = scenes
    model = ShapeClassifier()
    with pytest.raises(ValueError, match="spatial"):
        attention(model, x[:2], y[:2], "pool")
    with pytest.raises(ValueError, match="shape"):
        gain_losses(model, x[:2], y[:2], "features", masks=objects[:2, :48])
    for bad in ({"alpha": -1.0}, {"omega": -2.0}, {"omega_e": -1.0}, {"sigma": 2.0}):
        with pytest.raises(ValueError, match=">=? 0|in \\[0, 1\\]"):
            GainConfig(**bad)
    with pytest.raises(ValueError, match="no training samples"):
        GainTrainer(model, "features", x[:4], torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="No layer"):
        GainTrainer(model, "featurez", x, y)
    # Refused when built (a widget's Start would otherwise fail later, in the background thread),
    # named as given, and the model is left as it was (mode, weights, BatchNorm statistics).
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for layer, shape in (("pool", r"\(1, 128, 1, 1\)"), ("fc", r"\(1, 6\)"), (model.fc, r"\(1, 6\)")):
        with pytest.raises(ValueError, match=f"outputs shape {shape}, not a spatial"):
            GainTrainer(model, layer, x, y)
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="layer 'fc' outputs"):  # a module is named by its place in the model
        attention(model, x[:2], y[:2], model.fc)
    with pytest.raises(ValueError, match="0..5"):
        attention(model, x[:2], torch.tensor([0, 9]), "features")


@pytest.mark.parametrize("mode", ["eval", "batch"])
def test_masked_pass_leaves_running_statistics_alone(scenes, mode):
    x, y, objects = scenes
    torch.manual_seed(0)
    model = ShapeClassifier().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mining_loss(model, x[:8], y[:8], objects[:8], masked_bn=mode)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert model.training and all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ValueError, match="masked_bn"):
        GainConfig(masked_bn="frozen")


# --- nothing silently wrong: refused when built, never NaN weights (issue 24) ------------------------


def _tiny_data(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.arange(n) % 3


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _refused(exc, match, model, *args, **kw):
    """GainTrainer(model, "features", *args, **kw) raises ``exc`` matching ``match``; the model is untouched."""
    before, mode = _state(model), model.training
    with pytest.raises(exc, match=match):
        GainTrainer(model, "features", *args, **kw)
    assert _same(before, _state(model)) and model.training == mode
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_non_finite_pixels_and_masks_are_refused_when_built():
    x, y = _tiny_data()
    model = TinyNet()
    for bad in (float("nan"), float("inf")):
        xb = x.clone()
        xb[5, 1, 3, 3] = bad
        _refused(ValueError, "NaN or infinite pixel.*image 5.*nan_to_num", model, xb, y)
    masks = torch.zeros(8, 16, 16)
    masks[2, 0, 0] = float("nan")
    _refused(ValueError, "masks contain NaN", model, x, y, masks=masks)
    _refused(ValueError, "NaN or infinite", model, x, y, probes=torch.full((1, 3, 16, 16), float("nan")))
    t = GainTrainer(model, "features", x, y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        t.probe(images=torch.full((1, 3, 16, 16), float("inf")))


def test_masks_in_0_255_are_refused_with_the_fix():
    x, y = _tiny_data()
    masks = (torch.rand(8, 16, 16) > 0.5).float() * 255  # what a PNG mask gives: L_e ~ 6.5e4 if taken as is
    _refused(
        ValueError,
        r"masks must be 0/1 or probabilities in \[0, 1\]; got values up to 255: divide by 255",
        TinyNet(),
        x,
        y,
        masks=masks,
    )
    _refused(ValueError, "values down to -1", TinyNet(), x, y, masks=-torch.ones(8, 16, 16))
    _refused(ValueError, "values up to inf", TinyNet(), x, y, masks=torch.full((8, 16, 16), float("inf")))
    # bool, 0/1 float and uint8 0/1 masks and soft probabilities are fine
    for ok in (masks > 0, masks / 255, (masks > 0).to(torch.uint8), torch.rand(8, 16, 16)):
        GainTrainer(TinyNet(), "features", x, y, masks=ok)


@pytest.mark.parametrize(
    "knobs",
    [
        {"alpha": float("nan")},  # used to switch mining off silently (nan > 0 is False)
        {"alpha": float("inf")},
        {"omega": float("inf")},
        {"omega": float("nan")},
        {"omega": 0.0},  # the mask would be 0.5 everywhere, whatever the attention
        {"omega_e": float("nan")},
        {"sigma": float("nan")},
        {"sigma": -0.1},
        {"sigma": float("inf")},
        {"omega_e": float("inf")},
        {"omega": -1.0},
    ],
)
def test_non_finite_or_out_of_range_knobs_are_refused(knobs):
    with pytest.raises(ValueError, match=f"{next(iter(knobs))} "):
        GainConfig(**knobs)
    cfg = GainConfig()
    for k, v in knobs.items():
        setattr(cfg, k, v)  # a config changed after it was made is checked again by the trainer
    x, y = _tiny_data()
    _refused(ValueError, next(iter(knobs)), TinyNet(), x, y, config=cfg)


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"batch_size": 2.5}, TypeError, "batch_size must be a whole number"),  # used to be truncated to 2
        ({"batch_size": True}, TypeError, "batch_size"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"epochs": 2.0}, TypeError, "epochs.*use 2"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"mask_batch": -1}, ValueError, "mask_batch"),
        ({"probe_every": 0}, ValueError, "probe_every"),
        ({"eval_every": 0}, ValueError, "eval_every"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"lr": float("nan")}, ValueError, "lr must be a finite number > 0"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"lr": -1e-3}, ValueError, "lr"),
        ({"lr": 1e38}, ValueError, "lr must be a finite number > 0 and <= 1"),  # AdamW itself overflowed
        ({"lr": "0.01"}, TypeError, "lr"),
        ({"weight_decay": float("inf")}, ValueError, "weight_decay"),
        ({"config": {"alpha": 1.0}}, TypeError, "GainConfig"),
        ({"mine": 1}, TypeError, "mine"),
        ({"callbacks": [print, 3]}, TypeError, "callbacks"),
        ({"device": "gpu"}, ValueError, "device must be"),
        ({"has_mask": torch.ones(8, dtype=torch.bool)}, ValueError, "pass masks"),
        ({"probe_labels": [0]}, ValueError, "pass probes"),
    ],
)
def test_bad_trainer_arguments_are_refused(kw, exc, match):
    x, y = _tiny_data()
    _refused(exc, match, TinyNet(), x, y, **kw)


def test_empty_set_and_mismatched_data_are_refused():
    x, y = _tiny_data()
    model = TinyNet()
    _refused(ValueError, "images is empty", model, x[:0], y[:0])  # used to be a ZeroDivisionError
    _refused(ValueError, "8 images but 7 labels", model, x, y[:7])
    _refused(TypeError, "labels.*list of class indices", model, x, ["a"] * 8)
    _refused(TypeError, "integer class indices", model, x, y.float())
    _refused(ValueError, r"0\.\.2", model, x, y + 1)
    _refused(TypeError, "uint8", model, (x * 255).long(), y)
    masks = torch.ones(8, 16, 16)
    _refused(ValueError, "marks no image", model, x, y, masks=masks, has_mask=torch.zeros(8, dtype=torch.bool))
    _refused(ValueError, "mask_batch=0", model, x, y, masks=masks, mask_batch=0)


def test_wrong_channels_probes_and_eval_sets_are_refused_when_built():
    x, y = _tiny_data()
    model = TinyNet().train()
    # used to fail inside conv2d at the first step (in a widget: in its background thread)
    _refused(ValueError, "first convolution takes 3 channels but images have 1", model, x[:, :1], y)
    _refused(ValueError, "takes 3 channels but probes have 4", model, x, y, probes=torch.rand(2, 4, 16, 16))
    _refused(ValueError, "probe_labels", model, x, y, probes=x[:2], probe_labels=[0, 1, 2])
    _refused(ValueError, r"probe_labels must lie in 0\.\.2", model, x, y, probes=x[:2], probe_labels=[0, 5])
    grey = {"test": (torch.rand(4, 1, 16, 16), torch.zeros(4, dtype=torch.long))}
    _refused(ValueError, "eval set 'test'.*3 channels", model, x, y, eval_sets=grey)
    hot = {"test": (x[:4], torch.eye(3)[y[:4]])}
    _refused(ValueError, "eval set 'test' needs \\(4,\\) class indices", model, x, y, eval_sets=hot)
    _refused(ValueError, "eval set 'test'.*empty", model, x, y, eval_sets={"test": (x[:0], y[:0])})
    _refused(TypeError, "eval set 'test' must be an \\(images, labels\\) pair", model, x, y, eval_sets={"test": x})


def test_labels_as_a_list_train_like_the_tensor():
    x, y = _tiny_data()
    weights = []
    for labels in (y, y.tolist(), tuple(int(v) for v in y)):
        torch.manual_seed(0)
        model = TinyNet()
        GainTrainer(model, "features", x, labels, batch_size=4, epochs=1, probes=x[:2], probe_labels=[0, 1]).fit()
        weights.append(model.state_dict())
    for w in weights[1:]:
        assert _same(weights[0], w)
    hot = torch.eye(3)[y]
    torch.manual_seed(0)
    a = TinyNet()
    GainTrainer(a, "features", x, hot.tolist(), batch_size=4).fit()
    torch.manual_seed(0)
    b = TinyNet()
    GainTrainer(b, "features", x, hot, batch_size=4).fit()
    assert _same(a.state_dict(), b.state_dict())


def test_fit_steps_and_threads_are_checked():
    x, y = _tiny_data()
    t = GainTrainer(TinyNet(), "features", x, y, batch_size=4)
    for bad, exc in ((2.5, TypeError), (0, ValueError), (True, TypeError)):
        with pytest.raises(exc, match="steps"):
            t.fit(steps=bad)
        with pytest.raises(exc, match="threads"):
            t.fit(steps=1, threads=bad)
    assert t.step_count == 0


def test_a_second_concurrent_fit_is_refused():
    x, y = _tiny_data(16)
    inside, release = threading.Event(), threading.Event()

    def hold(ev):
        if ev["kind"] == "step" and ev["step"] == 1:
            inside.set()
            release.wait(30)

    t = GainTrainer(TinyNet(), "features", x, y, batch_size=4, epochs=4, callbacks=[hold])
    th = threading.Thread(target=t.fit)
    th.start()
    try:
        assert inside.wait(30)
        with pytest.raises(RuntimeError, match="already training"):
            t.fit()
        with pytest.raises(RuntimeError, match="already training"):
            t.step()
    finally:
        release.set()
        th.join(30)
    assert t.step_count == t.total_steps == 16  # not 17: the refused calls ran no step
    t.fit(steps=1)  # free again once the first fit is over
    assert t.step_count == 17


class PoisonNet(nn.Module):
    """With BatchNorm (whose statistics the failing forward moves) and a switch that makes the logits NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 3)
        self.poison = None

    def forward(self, x):
        f = self.features(x)
        out = self.fc(f.mean(dim=(2, 3)))
        return out * self.poison if self.poison is not None else out


@pytest.mark.parametrize("poison, term", [(float("nan"), "L_cl"), (float("inf"), "L_cl")])
def test_a_diverging_step_stops_with_the_last_finite_weights(poison, term):
    x, y = _tiny_data()
    model = PoisonNet()
    snapshots = {}

    def cb(ev):
        if ev["kind"] == "step":
            snapshots[ev["step"]] = _state(model)
            if ev["step"] == 2:
                model.poison = poison

    t = GainTrainer(model, "features", x, y, batch_size=4, epochs=3, callbacks=[cb])
    with pytest.raises(ValueError, match=f"step 3: {term}.*not finite.*weights of step 2.*lr"):
        t.fit()
    assert t.step_count == 2 and len(t.history) == 2
    assert _same(_state(model), snapshots[2])  # weights and BatchNorm statistics of step 2, no NaN
    assert all(p.grad is None for p in model.parameters())
    model.poison = None
    t.fit()  # and it can go on from there
    assert t.step_count == t.total_steps
    assert all(torch.isfinite(v.float()).all() for v in model.state_dict().values())


@pytest.mark.parametrize("decay, term", [(1e30, "L_cl"), (1e40, "the weights \\(the update overflowed\\)")])
def test_a_huge_update_never_leaves_nan_weights(decay, term):
    x, y = _tiny_data()
    torch.manual_seed(0)
    model = TinyNet()
    t = GainTrainer(model, "features", x, y, batch_size=4, epochs=20, lr=1.0, weight_decay=decay)
    with pytest.raises(ValueError, match=f"diverged at step .: {term}.* is not finite.*weight_decay"):
        t.fit()
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
