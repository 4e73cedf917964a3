"""ExplainWidget and its image view driven from Python: every control, the canvas mouse handlers,
compare mode, background work and the errors a model can raise.

No browser here (see tests/browser for that): the tests call the handlers ipycanvas would call and
read the frames the image view keeps (``view.frames``: image resolution; ``view.sent``: what went
into the canvas). Small stand-in models (tests/widget_fixtures.py) keep it fast and zoo-independent.
"""

from __future__ import annotations

import html
import io
import threading

import numpy as np
import pytest
import torch
from torch import nn

ipywidgets = pytest.importorskip("ipywidgets")
pytest.importorskip("ipycanvas")

from guidewidgets import explain, render  # noqa: E402
from guidewidgets.widgets import ExplainWidget, ImageView, inputs  # noqa: E402
from tests.widget_fixtures import TinyCNN, TinySeg, encode_png, expected_overlay  # noqa: E402

pytest_plugins = ["tests.widget_fixtures"]  # its fixtures: clf, images, ew


# ---- image view -------------------------------------------------------------------------------


def test_view_sends_nothing_before_a_client_then_replays():
    v = ImageView(24, 32, display_size=384)
    assert v.scale == 12 and (v.canvas.width, v.canvas.height) == (384, 288)
    assert (v.canvas.layout.width, v.canvas.layout.height) == ("384px", "288px")
    frame = render.colorize(np.random.rand(24, 32))
    v.set_layer("image", frame)
    assert v.sent["image"] is None and v.sent_count == 0  # no browser yet: nothing is lost
    v._on_client_ready()
    assert np.array_equal(v.sent["image"], render.upscale(frame, 12))
    assert v.sent["overlay"] is None
    n = v.sent_count
    v._on_client_ready()  # a second view (page reload) gets everything again
    assert v.sent_count == n + 1
    seg = render.segmentation_rgba(np.eye(24, 32, dtype=np.int64))
    v.set_layer("overlay", seg)  # after ready: sent at once
    assert np.array_equal(v.sent["overlay"][::12, ::12], seg)
    v.set_layer("overlay", None)
    assert v.sent["overlay"] is None
    with pytest.raises(ValueError, match="resize"):
        v.set_layer("image", np.zeros((5, 5, 4), np.uint8))
    with pytest.raises(ValueError, match="layers are"):
        v.set_layer("foo", None)


def test_view_resize():
    v = ImageView(8, 8, scale=3)
    v._on_client_ready()
    v.set_layer("image", np.zeros((8, 8, 4), np.uint8))
    v.resize(10, 6)
    assert (v.canvas.width, v.canvas.height, v.canvas.layout.width) == (18, 30, "18px")
    assert v.frames["image"] is None and v.sent["image"] is None
    v.set_layer("image", np.zeros((10, 6, 4), np.uint8))
    assert v.sent["image"].shape == (30, 18, 4)


def test_view_puts_rgba_so_the_wire_format_is_lossless(monkeypatch):
    from ipycanvas import utils

    v = ImageView(8, 8, scale=2)
    v._on_client_ready()
    seen = []
    layer = v.canvas[1]
    orig = layer.put_image_data
    monkeypatch.setattr(layer, "put_image_data", lambda a, x=0, y=0: (seen.append(a), orig(a, x, y)))
    v.set_layer("overlay", render.colorize(np.random.rand(8, 8)))
    assert seen and seen[0].shape == (16, 16, 4)
    assert utils.binary_image(seen[0])[:4] == b"\x89PNG"


def test_view_mouse_maps_to_image_pixels():
    v = ImageView(10, 20, scale=4)
    got = []
    v.on("down", lambda y, x: got.append(("down", y, x)))
    v.on("drag", lambda y, x: got.append(("drag", y, x)))
    v.on("up", lambda y, x: got.append(("up", y, x)))
    v.value_fn = lambda y, x: f"v={y * 100 + x}"
    v.on_mouse_move(9.0, 5.0)  # hover only
    assert got == [] and "v=102" in v.value_label.value and v.cursor == (1, 2, 0)
    v.on_mouse_down(79.9, 39.9)
    v.on_mouse_move(41.0, 3.0)
    v.on_mouse_up(41.0, 3.0)
    assert got == [("down", 9, 19), ("drag", 0, 10), ("up", 0, 10)]
    assert v.to_image(80, 0) is None and v.to_image(-1, 0) is None
    v.on_mouse_down(500, 500)  # outside: ignored
    assert not v.pressed
    v.on_mouse_down(4, 4)
    v.on_mouse_out(-3, 4)  # leaving ends the drag
    assert not v.pressed and got[-1][0] == "up"
    v.value_fn = lambda y, x: 1 / 0
    v.on_mouse_move(4, 4)  # a broken readout does not break the handler
    assert "ZeroDivisionError" in v.value_label.value


# ---- ExplainWidget ----------------------------------------------------------------------------


def test_explain_initial_state(ew, clf, images):
    assert ew.size == 32 and len(ew.images) == 3
    with torch.no_grad():
        p = torch.softmax(clf(images[:1]), 1)[0]
    assert ew.target == int(p.argmax())
    labels = [lbl for lbl, _ in ew.w_target.options]
    assert len(labels) == 4 and labels[0].startswith(clf.classes[int(p.argmax())])
    assert f"{float(p.max()):.1%}" in labels[0]
    classes = [m for m in explain.methods() if explain.method_info(m).target_kind == "class"]
    assert list(ew.infos) == classes  # neuron methods live in the FeatureWidget
    assert ew.w_family.value == "cam" and ew.w_method.value == "grad-cam"
    assert [v for _, v in ew.w_method.options] == [m for m in classes if explain.method_info(m).family == "cam"]
    assert np.array_equal(ew.view.frames["image"], render.to_rgba(images[0]))
    assert np.array_equal(ew.frame, expected_overlay(ew, "grad-cam"))
    assert ew.view.frames["overlay"] is ew.frame
    assert ew.layer == "" and ew.w_layer.options[0] == ("default: features.2 (32 x 32)", "")
    values = [v for _, v in ew.w_layer.options]
    assert len(values) == len(set(values)) and "features.0" in values  # each feature map once
    assert all("(32 x 32)" in label for label, v in ew.w_layer.options if v)  # grid sizes shown


def test_explain_every_method_from_the_toggle(ew):
    for name in ew.infos:  # whatever is registered for a class, the widget shows it or says why not
        ew.w_family.value = explain.method_info(name).family  # the clicks: the family, then the method
        ew.w_method.value = name
        ew.wait(30)
        info = explain.method_info(name)
        assert ew.method == name and ew.w_layer.disabled == (not info.uses_layer)
        assert html.escape(info.summary) in ew.w_summary.value
        try:
            expected = expected_overlay(ew, name)
        except (ValueError, TypeError) as err:  # a method that does not apply to this model
            assert ew.status.startswith(f"Error: {info.title} failed") and str(err)[:40] in ew.status
            assert ew.view.frames["overlay"] is None
            continue
        assert ew.status == "", (name, ew.status)
        assert ew.frame.shape == (32, 32, 4) and ew.frame.dtype == np.uint8
        if name not in ("smoothgrad", "smooth-grad-cam++", "rise"):  # random methods: own draws
            assert np.array_equal(ew.frame, expected), name


def test_method_toggle_changes_overlay_pixels_and_client_gets_them(ew):
    ew.view._on_client_ready()
    a = ew.view.sent["overlay"].copy()
    ew.method = "saliency"
    b = ew.view.sent["overlay"]
    assert b.shape == (384, 384, 4) and not np.array_equal(a, b)
    assert np.array_equal(b[::12, ::12], ew.frame)


def test_explain_hover_readout(ew):
    ew.view.on_mouse_move(5 * 12 + 3, 7 * 12 + 3)
    text = ew.view.value_label.value
    m = ew.current["map"]
    assert "(y=7, x=5)" in text and "Grad-CAM" in text and f"{m[7, 5]:.3g}" in text
    rgb = tuple(int(c) for c in render.to_rgba(ew.images[0])[7, 5, :3])
    assert f"RGB {rgb}" in text


def test_cache_makes_toggling_back_free(ew, monkeypatch):
    calls = []
    real = explain.explain
    monkeypatch.setattr(explain.registry, "explain", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    ew.method = "saliency"
    ew.method = "grad-cam"
    ew.method = "saliency"
    assert calls == ["saliency"]
    assert ew.cached("grad-cam") and ew.cached("saliency")
    ew.opacity = 0.2
    ew.colormap = "viridis"
    assert calls == ["saliency"]  # style changes never run the model
    assert (ew.frame[..., 3] == round(0.2 * 255)).all()
    assert np.array_equal(ew.frame, expected_overlay(ew, "saliency"))


def test_style_controls_and_bad_values(ew):
    ew.w_cmap.value = "gray"
    assert (ew.frame[..., 0] == ew.frame[..., 1]).all()
    ew.w_opacity.value = 0.8
    assert ew.opacity == 0.8 and (ew.frame[..., 3] == 204).all()
    ew.colormap = "not-a-map"
    assert ew.colormap == "gray" and ew.status.startswith("Error") and "colormap" in ew.status
    ew.method = "Grad_CAM"  # forgiving spelling
    assert ew.method == "grad-cam"
    ew.method = "gradcam-9000"
    assert ew.method == "grad-cam" and "Unknown explanation method" in ew.status
    ew.opacity = 3.0
    assert ew.opacity == 1.0


def test_layer_and_target_controls(ew, clf):
    before = ew.frame.copy()
    ew.w_layer.value = "features.0"
    assert ew.layer == "features.0" and not np.array_equal(ew.frame, before)
    assert np.array_equal(ew.frame, expected_overlay(ew, "grad-cam"))
    ew.layer = "featurez.2"
    assert ew.layer == "features.0" and "features.2" in ew.status  # close match named
    other = next(v for _, v in ew.w_target.options if v != ew.target)
    ew.w_target.value = other
    assert ew.target == other
    assert np.array_equal(ew.frame, expected_overlay(ew, "grad-cam"))
    ew.target = 99
    assert ew.target == other and "outside 0..3" in ew.status


def test_image_selection_and_inputs(ew, images):
    ew.w_image.value = 2
    assert ew.image_index == 2
    assert np.array_equal(ew.view.frames["image"], render.to_rgba(images[2]))
    assert ew.target == int(ew.probabilities(2).argmax())
    ew.image_index = 7
    assert ew.image_index == 2 and "no image 7" in ew.status
    i = ew.add_image(np.full((40, 60, 3), 200, np.uint8), "grey")
    assert ew.image_index == i and ew.images[i].shape == (3, 32, 32)  # centre crop + resize
    assert ew.names[i] == "grey" and (i,) and ("grey", i) in ew.w_image.options


def test_as_image_layouts():
    ref = torch.rand(3, 5, 6)
    u8 = (ref.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    for variant in (ref[None], u8, u8.astype(np.float32), u8.astype(np.int64), ref.permute(1, 2, 0).numpy()):
        assert torch.allclose(inputs.as_image(variant), ref, atol=1 / 255), type(variant)
    assert inputs.as_image(np.zeros((5, 6))).shape == (3, 5, 6)
    assert inputs.as_image(torch.zeros(1, 5, 6)).shape == (3, 5, 6)
    with pytest.raises(ValueError, match="3 colour channels"):
        inputs.as_image(torch.zeros(7, 5, 6))
    assert inputs.fit(torch.rand(3, 40, 60), 20).shape == (3, 20, 20)


def test_dataset_and_list_inputs(clf):
    data = [{"image": torch.rand(3, 16, 16), "label": 1}, (torch.rand(3, 16, 16), 2), np.random.rand(16, 16)]
    w = ExplainWidget(clf, data)
    assert len(w.images) == 3 and w.size == 16 and w.frame is not None
    w.close()
    uploads = ({"name": "cat.png", "content": memoryview(encode_png("RGB", (16, 16)))},)  # a FileUpload's value
    w = ExplainWidget(clf, uploads)
    assert w.names == ["cat.png"] and w.images[0].shape == (3, 16, 16)
    w.close()


def test_compare_mode(ew):
    ew.compare_methods = ["grad-cam", "saliency", "cam"]
    ew.w_compare.value = True
    assert ew.compare and ew.w_grid.layout.display is None and ew.w_panel.layout.display == "none"
    tiles = ew.w_grid.children
    assert len(tiles) == 3 and ew.compare_captions == ew.w_grid.captions
    for box, m, caption in zip(tiles, ["grad-cam", "saliency", "cam"], ew.compare_captions):
        assert caption.startswith(explain.method_info(m).title + " (")  # each tile carries its own caption
        assert caption in box.children[1].value and box.children[0].value[:4] == b"\x89PNG"
    base = render.to_rgba(ew.images[0])
    tile = render.overlay(base, expected_overlay(ew, "saliency"), alpha=1.0)
    from PIL import Image

    shown = np.asarray(Image.open(io.BytesIO(tiles[1].children[0].value)))
    zoom = shown.shape[0] // 32
    assert np.array_equal(shown[::zoom, ::zoom], tile)
    ew.compare_methods = ["grad-cam", "nope"]
    assert ew.compare_methods == ["grad-cam"] and "nope" in ew.status
    assert ew.w_checks["grad-cam"].value and not ew.w_checks["saliency"].value
    ew.compare = False
    assert ew.w_panel.layout.display is None


def test_compare_checkboxes_any_count_and_shared_scale(ew):
    fast = [m for m in explain.methods() if not explain.method_info(m).slow][:8]
    ew.compare = True
    for m in fast:  # what clicking the checkboxes does
        ew.w_checks[m].value = True
    assert set(fast) <= set(ew.compare_methods)
    titles = [c.rsplit(" (", 1)[0] for c in ew.compare_captions]
    assert titles == [explain.method_info(m).title for m in ew.compare_methods]
    for box, caption in zip(ew.w_grid.children, ew.compare_captions):
        assert caption in box.children[1].value
    ew.compare_methods = ["grad-cam", "cam"]
    own = [np.asarray(t.children[0].value) for t in ew.w_grid.children]
    ew.shared_scale = True
    assert ew.shared_scale and "one colour scale" in ew.w_heading.value
    assert len(ew.w_grid.children) == 2 and own is not None


def test_compare_shows_what_works_and_names_what_failed(images):
    class MaxPooled(TinyCNN):  # no global-average-pool head: CAM must refuse, the rest works
        def forward(self, x):
            return self.fc(self.features(x).amax((2, 3)))

    w = ExplainWidget(MaxPooled().eval(), images)
    w.compare_methods = ["cam", "saliency"]
    w.compare = True
    assert w.compare_captions[0].startswith("Saliency") and len(w.compare_captions) == 1  # one tile
    assert w.status.startswith("Error") and "CAM failed" in w.status and "grad-cam" in w.status.lower()
    w.compare = False
    w.method = "cam"
    assert w.view.frames["overlay"] is None and "CAM failed" in w.status
    w.method = "saliency"
    assert w.status == "" and w.view.frames["overlay"] is not None
    w.close()


def test_raw_gradient_image(ew):
    ew.method = "guided-backprop"
    ew.w_raw.value = True
    raw = explain.explain(ew.model, ew.images[0][None], "guided-backprop", target=ew.target, raw=True)
    expect = render.gradient_image(raw[0])
    expect[..., 3] = round(ew.opacity * 255)
    assert np.array_equal(ew.frame, expect)


class _Gate:
    """A slow 'method' the test controls: blocks until released, reporting progress."""

    def __init__(self, real):
        self.real, self.started, self.release, self.cancelled = real, threading.Event(), threading.Event(), False

    def __call__(self, model, x, method, target=None, layer=None, progress=None, **kw):
        if method == "occlusion":
            self.started.set()
            for i in range(200):
                if self.release.wait(0.01):
                    break
                try:
                    progress and progress(min(0.99, i / 100))
                except Exception:
                    self.cancelled = True
                    raise
            progress and progress(1.0)
        return self.real(model, x, method, target=target, layer=layer, **kw)


def test_the_family_row_shows_one_familys_buttons_and_follows_the_method(ew):
    """A family click shows its buttons without changing the map; a method set from Python or a
    number key brings its family's row; neuron methods are refused with where to find them."""
    by_family: dict[str, list[str]] = {}
    for m, v in ew.infos.items():
        by_family.setdefault(v.family, []).append(m)
    assert [v for _, v in ew.w_family.options] == list(by_family)
    for family, names in by_family.items():
        ew.w_family.value = family
        assert [v for _, v in ew.w_method.options] == names
        assert ew.method == "grad-cam"  # looking at a family is not choosing a method
        assert ew.w_method.value == ("grad-cam" if family == "cam" else None)
    ew.w_family.value = "gradient"
    ew.w_method.value = by_family["gradient"][0]  # what a click does
    assert ew.method == by_family["gradient"][0] and ew.w_family.value == "gradient"
    ew.method = "occlusion"
    assert ew.w_family.value == "perturbation" and ew.w_method.value == "occlusion"
    ew.key_down("1", False, False, False)  # key 1: the first method, in the CAM family
    assert ew.method == next(iter(ew.infos)) and ew.w_family.value == "cam"
    ew.method = "neuron-gradient"
    assert ew.method == next(iter(ew.infos)) and "FeatureWidget" in ew.status
    with pytest.raises(ValueError, match="FeatureWidget"):
        ExplainWidget(ew.model, ew.images[:1], method="neuron-gradient")


def test_slow_method_runs_in_background_and_controls_stay_live(ew, monkeypatch):
    gate = _Gate(explain.explain)
    monkeypatch.setattr(explain.registry, "explain", gate)
    ew.method = "occlusion"  # returns at once
    assert gate.started.wait(5)
    assert ew.busy and ew.w_progress.layout.visibility == "visible" and "background" in ew.status
    ew.opacity = 0.3  # other controls work meanwhile
    assert ew.opacity == 0.3 and ew.method == "occlusion"
    gate.release.set()
    assert ew.wait(10)
    assert not ew.busy and ew.status == ""
    assert ew.w_progress.layout.visibility == "hidden" and ew.w_progress.value == 0.0  # gone, and reset
    assert np.array_equal(ew.frame, expected_overlay(ew, "occlusion"))
    ew.method = "grad-cam"
    ew.method = "occlusion"  # cached: no thread
    assert not ew.busy


def test_the_progress_bar_shows_only_while_work_runs_and_starts_at_zero(ew, monkeypatch):
    seen: list[tuple[str, float]] = []  # (visibility, value) after every change of either
    bar = ew.w_progress
    bar.observe(lambda _: seen.append((bar.layout.visibility, bar.value)), "value")
    bar.layout.observe(lambda _: seen.append((bar.layout.visibility, bar.value)), "visibility")
    gate = _Gate(explain.explain)
    monkeypatch.setattr(explain.registry, "explain", gate)
    for step in range(2):  # two slow jobs in a row: the second must not start at 100 %
        if step == 0:
            ew.method = "occlusion"
        else:
            ew.target = 0 if ew.target else 1
        assert gate.started.wait(5)
        gate.release.set()
        assert ew.wait(10)
        gate.started.clear()
        gate.release.clear()
    shown = [v for vis, v in seen if vis == "visible"]
    firsts = [
        seen[i][1] for i in range(len(seen)) if seen[i][0] == "visible" and (i == 0 or seen[i - 1][0] != "visible")
    ]
    assert len(firsts) == 2 and firsts == [0.0, 0.0], seen  # each job's bar appears at 0
    assert max(shown) > 0.5  # and moves while its job runs
    assert seen[-1] == ("hidden", 0.0)  # hidden when done, and reset


def test_new_request_cancels_a_running_slow_method(ew, monkeypatch):
    gate = _Gate(explain.explain)
    monkeypatch.setattr(explain.registry, "explain", gate)
    ew.method = "occlusion"
    assert gate.started.wait(5)
    ew.method = "saliency"  # needs the model: cancels occlusion at its next progress report
    assert ew.wait(10) and gate.cancelled
    assert ew.method == "saliency" and np.array_equal(ew.frame, expected_overlay(ew, "saliency"))
    assert not ew.cached("occlusion") and not ew.busy


def test_model_errors_show_in_status_and_widget_recovers(ew, monkeypatch):
    real = explain.explain

    def broken(model, x, method, **kw):
        if method == "deconvnet":
            raise RuntimeError("CUDA out of memory (pretend)")
        return real(model, x, method, **kw)

    monkeypatch.setattr(explain.registry, "explain", broken)
    ew.method = "deconvnet"
    assert ew.status.startswith("Error") and "out of memory" in ew.status
    assert ew.view.frames["overlay"] is None
    ew.method = "saliency"
    assert ew.status == "" and ew.frame is not None
    ew.method = "deconvnet"
    ew.method = "grad-cam"  # cached: the error must not stick to a good map
    assert ew.status == "" and ew.view.frames["overlay"] is ew.frame


def test_model_failing_on_an_image(clf, images):
    class Picky(TinyCNN):
        def forward(self, x):
            if x.mean() > 0.9:
                raise ValueError("too bright")
            return super().forward(x)

    m = Picky().eval()
    m.load_state_dict(clf.state_dict())
    w = ExplainWidget(m, [images[0], torch.ones(3, 32, 32)])
    w.image_index = 1
    assert "too bright" in w.status and w.view.frames["overlay"] is None
    w.image_index = 0
    assert w.frame is not None
    w.close()


def test_segmenter_in_explain_widget_explains_class_logit_sums():
    model = TinySeg().eval()
    x = torch.rand(1, 3, 16, 16)
    w = ExplainWidget(model, x)
    assert w.segmentation and w.status == ""
    with torch.no_grad():
        pred = model(x).argmax(1)[0]
    area = torch.bincount(pred.flatten(), minlength=3).float() / pred.numel()
    assert np.allclose(w.probabilities(), area.numpy())
    assert all("of pixels" in label for label, _ in w.w_target.options)
    expect = explain.explain(model, x, "grad-cam", target=w.target)
    assert np.array_equal(w.frame, render.heatmap_rgba(expect[0], w.colormap, opacity=w.opacity))
    w.close()


def test_model_with_strange_output_says_why():
    class Vector(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x.mean((2, 3)))[0]  # (K,) instead of (B, K)

    w = ExplainWidget(Vector(), torch.rand(1, 3, 8, 8))
    assert "(B, K)" in w.status and w.status.startswith("Error")
    w.close()
