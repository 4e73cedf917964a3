"""Widgets driven from Python: every control, the canvas mouse handlers, and the pixels sent.

No browser here (see tests/browser for that): the tests call the handlers ipycanvas would call and
read the frames the image view keeps (``view.frames``: image resolution; ``view.sent``: what went
into the canvas). Small stand-in models keep the file fast and independent of the zoo's weights.
"""

from __future__ import annotations

import datetime
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
from guidewidgets.widgets import (  # noqa: E402
    ExplainWidget,
    GuideWidget,
    ImageView,
    inputs,
    theme,
)
from guidewidgets.widgets.guide_widget import HINT_ALPHA  # noqa: E402


class TinyCNN(nn.Module):
    """A GAP-linear classifier (CAM works) with an inplace ReLU."""

    classes = ["red", "green", "blue", "grey"]
    task = "classification"
    default_explain_layer = "features.2"

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


class TinySeg(nn.Module):
    classes = ["background", "disc", "bar"]
    task = "segmentation"
    default_guide_layer = "enc.2"
    default_explain_layer = "enc.2"

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU()
        )
        self.head = nn.Conv2d(16, 3, 1)

    def forward(self, x):
        y = self.head(self.enc(x))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


@pytest.fixture
def clf():
    torch.manual_seed(0)
    return TinyCNN().eval()


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 3, 32, 32, generator=g)


@pytest.fixture
def ew(clf, images):
    w = ExplainWidget(clf, images, options={"occlusion": {"window": 8, "stride": 4}, "rise": {"masks": 64}})
    yield w
    w.wait(10)
    w.close()


def _png_bytes(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _expected_overlay(w: ExplainWidget, method: str) -> np.ndarray:
    info = explain.method_info(method)
    kw = dict(w.session.options.get(method, {}))
    m = explain.explain(w.model, w.images[w.image_index][None], method, target=w.target, layer=w.layer or None, **kw)
    return render.heatmap_rgba(m[0], w.colormap, signed=info.signed, opacity=w.opacity)


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
    assert [v for _, v in ew.w_method.options] == explain.methods()
    assert np.array_equal(ew.view.frames["image"], render.to_rgba(images[0]))
    assert np.array_equal(ew.frame, _expected_overlay(ew, "grad-cam"))
    assert ew.view.frames["overlay"] is ew.frame
    assert ew.layer == "" and ew.w_layer.options[0] == ("default: features.2 (32 x 32)", "")
    values = [v for _, v in ew.w_layer.options]
    assert len(values) == len(set(values)) and "features.0" in values  # each feature map once
    assert all("(32 x 32)" in label for label, v in ew.w_layer.options if v)  # grid sizes shown


def test_explain_every_method_from_the_toggle(ew):
    for name in explain.methods():  # whatever is registered, the widget shows it or says why not
        ew.w_method.value = name  # what a click does
        ew.wait(30)
        info = explain.method_info(name)
        assert ew.method == name and ew.w_layer.disabled == (not info.uses_layer)
        assert html.escape(info.summary) in ew.w_summary.value
        try:
            expected = _expected_overlay(ew, name)
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
    monkeypatch.setattr(explain, "explain", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    ew.method = "saliency"
    ew.method = "grad-cam"
    ew.method = "saliency"
    assert calls == ["saliency"]
    assert ew.cached("grad-cam") and ew.cached("saliency")
    ew.opacity = 0.2
    ew.colormap = "viridis"
    assert calls == ["saliency"]  # style changes never run the model
    assert (ew.frame[..., 3] == round(0.2 * 255)).all()
    assert np.array_equal(ew.frame, _expected_overlay(ew, "saliency"))


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
    assert np.array_equal(ew.frame, _expected_overlay(ew, "grad-cam"))
    ew.layer = "featurez.2"
    assert ew.layer == "features.0" and "features.2" in ew.status  # close match named
    other = next(v for _, v in ew.w_target.options if v != ew.target)
    ew.w_target.value = other
    assert ew.target == other
    assert np.array_equal(ew.frame, _expected_overlay(ew, "grad-cam"))
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
    uploads = ({"name": "cat.png", "content": memoryview(_encode("RGB", (16, 16)))},)  # a FileUpload's value
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
    tile = render.overlay(base, _expected_overlay(ew, "saliency"), alpha=1.0)
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


def test_slow_method_runs_in_background_and_controls_stay_live(ew, monkeypatch):
    gate = _Gate(explain.explain)
    monkeypatch.setattr(explain, "explain", gate)
    ew.method = "occlusion"  # returns at once
    assert gate.started.wait(5)
    assert ew.busy and ew.w_progress.layout.visibility == "visible" and "background" in ew.status
    ew.opacity = 0.3  # other controls work meanwhile
    assert ew.opacity == 0.3 and ew.method == "occlusion"
    gate.release.set()
    assert ew.wait(10)
    assert not ew.busy and ew.status == ""
    assert ew.w_progress.layout.visibility == "hidden" and ew.w_progress.value == 0.0  # gone, and reset
    assert np.array_equal(ew.frame, _expected_overlay(ew, "occlusion"))
    ew.method = "grad-cam"
    ew.method = "occlusion"  # cached: no thread
    assert not ew.busy


def test_the_progress_bar_shows_only_while_work_runs_and_starts_at_zero(ew, monkeypatch):
    seen: list[tuple[str, float]] = []  # (visibility, value) after every change of either
    bar = ew.w_progress
    bar.observe(lambda _: seen.append((bar.layout.visibility, bar.value)), "value")
    bar.layout.observe(lambda _: seen.append((bar.layout.visibility, bar.value)), "visibility")
    gate = _Gate(explain.explain)
    monkeypatch.setattr(explain, "explain", gate)
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
    monkeypatch.setattr(explain, "explain", gate)
    ew.method = "occlusion"
    assert gate.started.wait(5)
    ew.method = "saliency"  # needs the model: cancels occlusion at its next progress report
    assert ew.wait(10) and gate.cancelled
    assert ew.method == "saliency" and np.array_equal(ew.frame, _expected_overlay(ew, "saliency"))
    assert not ew.cached("occlusion") and not ew.busy


def test_model_errors_show_in_status_and_widget_recovers(ew, monkeypatch):
    real = explain.explain

    def broken(model, x, method, **kw):
        if method == "deconvnet":
            raise RuntimeError("CUDA out of memory (pretend)")
        return real(model, x, method, **kw)

    monkeypatch.setattr(explain, "explain", broken)
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


def _encode(mode: str, size=(20, 30)) -> bytes:
    from PIL import Image

    arr = np.random.default_rng(0).integers(
        0, 255, size + ((len(mode),) if mode in ("RGB", "RGBA") else ()), dtype=np.uint8
    )
    buf = io.BytesIO()
    Image.fromarray(arr, mode=None).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def test_uploads_good_and_bad(ew, monkeypatch):
    n = len(ew.images)
    ew._on_upload({"new": ({"name": "photo.png", "content": memoryview(_encode("RGB")), "size": 1},)})
    assert len(ew.images) == n + 1 and ew.image_index == n and "Loaded 'photo.png'" in ew.status
    assert ew.frame is not None and ew.images[n].shape == (3, 32, 32)
    assert ew.load_upload(_encode("L"), "gray.png") == n + 1 and "grayscale" in ew.status
    assert ew.load_upload(_encode("RGBA"), "alpha.png") == n + 2 and "white" in ew.status
    assert ew.load_upload(b"%PDF-1.4 not an image", "paper.pdf") is None
    assert ew.status.startswith("Upload refused") and "not an image" in ew.status
    assert ew.load_upload(b"", "empty.png") is None and "empty" in ew.status
    monkeypatch.setattr(inputs, "MAX_UPLOAD_PIXELS", 100)
    assert ew.load_upload(_encode("RGB"), "huge.png") is None and "megapixels" in ew.status
    monkeypatch.setattr(inputs, "MAX_UPLOAD_BYTES", 10)
    assert ew.load_upload(_encode("RGB"), "big.png") is None and "MB" in ew.status
    assert len(ew.images) == n + 3  # the widget still works after the refusals
    ew.method = "saliency"
    assert ew.frame is not None


def test_upload_control_roundtrip(ew):
    ew.w_upload.value = (
        {
            "name": "a.png",
            "type": "image/png",
            "size": 10,
            "content": memoryview(_encode("RGB")),
            "last_modified": datetime.datetime.now(datetime.timezone.utc),
        },
    )
    assert ew.names[-1] == "a.png" and ew.image_index == len(ew.images) - 1


def test_export_png_titled_at_display_resolution(ew, tmp_path):
    from PIL import Image

    path = ew.export(str(tmp_path / "out.png"))
    back = np.asarray(Image.open(path))
    big = render.upscale(ew.composite(), ew.view.scale)
    assert back.shape[0] > big.shape[0] and back.shape[1] > big.shape[1]  # heading above, colour bar beside
    top = render.text_rgba(ew.heading(), back.shape[1]).shape[0]  # the heading strip
    assert np.array_equal(back[top : top + big.shape[0], : big.shape[1]], big)
    assert 'download="out.png"' in ew.w_export_out.value and "Saved" in ew.w_export_out.value
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(ew.to_png()))), back)
    ew.compare = True
    assert ew.composite() is ew.compare_frame
    bad = ew.export(str(tmp_path / "missing-dir" / "x.png"))
    assert bad == "" and "export failed" in ew.status


def test_export_button_is_a_download_not_a_file(ew, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ew.w_export.click()
    assert list(tmp_path.iterdir()) == []  # nothing written into the notebook's folder
    assert 'download="image_0_grad-cam.png"' in ew.w_export_out.value and "base64," in ew.w_export_out.value
    assert ew.exported == "image_0_grad-cam.png"


def test_model_is_left_unchanged(clf, images):
    state = {k: v.clone() for k, v in clf.state_dict().items()}
    clf.features[0].train()  # mixed flags must come back exactly as they were
    flags = [m.training for m in clf.modules()]
    w = ExplainWidget(clf, images)
    for m in ("grad-cam", "guided-backprop", "occlusion"):
        w.method = m
        w.wait(10)
    w.close()
    assert all(torch.equal(v, clf.state_dict()[k]) for k, v in state.items())
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in clf.modules())
    assert all(p.grad is None for p in clf.parameters())
    assert [m.training for m in clf.modules()] == flags


def test_heading_colour_bar_and_summary_say_what_is_shown(clf, images):
    w = ExplainWidget(clf, {"red one": (images[0], 0), "blue one": (images[1], 2)})
    p = w.probabilities()[w.target]
    head = w.w_heading.value
    assert f"Grad-CAM for {clf.classes[w.target]}" in head and f"p = {p:.0%}" in head
    assert "true label red" in head and "red one" in head and w.names == ["red one", "blue one"]
    bar, (lo, hi), meaning = w.colorbar()
    m = w.current["map"]
    assert f"{m.max():.3g}" in hi and f"{m.min():.3g}" in lo and f"evidence for {clf.classes[w.target]}" in meaning
    assert bar.shape[1] == 14 and not np.array_equal(bar[2], bar[-3])  # a real gradient of colours
    assert w.w_bar_box.layout.visibility == "visible" and w.w_bar_box.bar.value[:4] == b"\x89PNG"
    w.method = "occlusion" if not explain.method_info("saliency").signed else "saliency"
    w.wait(30)
    signed = [m for m in explain.methods() if explain.method_info(m).signed and not explain.method_info(m).slow]
    if signed:
        w.method = signed[0]
        (lo, hi), meaning = w.colorbar()[1:]
        assert lo.startswith("-") and hi.startswith("+") and "against" in meaning
        m = w.current["map"]
        zero = render.heatmap_rgba(np.zeros((1, 1)), w.colormap, signed=True, opacity=1.0)
        assert zero[0, 0, 3] == 0  # zero evidence: fully transparent, the photo shows through
        big = np.unravel_index(np.abs(m).argmax(), m.shape)
        assert w.frame[big][3] > 0
    w.close()


def test_fading_colormap_keeps_the_photo_visible_where_evidence_is_low(ew):
    assert ew.colormap.endswith(render.FADE)
    m = ew.current["map"]
    lo, hi = np.unravel_index(m.argmin(), m.shape), np.unravel_index(m.argmax(), m.shape)
    assert ew.frame[lo][3] == 0 and ew.frame[hi][3] == round(ew.opacity * 255)
    ew.colormap = "jet"  # the plain choice: one opacity everywhere
    assert (ew.frame[..., 3] == round(ew.opacity * 255)).all()


def test_all_classes_reachable_and_findable(clf, images):
    w = ExplainWidget(clf, images, top_k=2)
    values = [v for _, v in w.w_target.options]
    assert sorted(values) == list(range(4)) and values[:2] == list(np.argsort(-w.probabilities())[:2])
    last = values[-1]
    w.w_target.value = last
    assert w.target == last
    w.w_find.value = "grey"
    assert w.target == 3 and "grey" in w.w_heading.value
    w.close()


def test_original_beside_and_keyboard_shortcuts(ew):
    assert ew.show_original and ew.w_orig_img.value[:4] == b"\x89PNG"
    ew.w_original.value = False
    assert ew.w_orig_img.layout.display == "none"
    assert ew.key_down("2") and ew.method == explain.methods()[1]
    assert ew.key_down("ArrowRight") and ew.image_index == 1
    assert ew.key_down("ArrowLeft") and ew.image_index == 0
    assert ew.key_down("ArrowLeft") and ew.image_index == 2  # wraps
    assert ew.key_down("c") and ew.compare
    assert not ew.key_down("q")
    assert "next image" in ew.w_help.value and "<kbd>1-9</kbd> method" in ew.w_help.value


def _live_widgets() -> set:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return set(ipywidgets.Widget.widgets)


def test_failed_constructor_leaves_nothing_registered(clf):
    before = _live_widgets()
    with pytest.raises(ValueError, match="no images given"):
        ExplainWidget(clf, torch.zeros(0, 3, 8, 8))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ExplainWidget("resnet", torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="Unknown explanation method"):
        ExplainWidget(clf, torch.rand(1, 3, 8, 8), method="no-such-method")
    with pytest.raises(ValueError):
        GuideWidget(TinySeg().eval(), torch.rand(3, 16, 16), np.zeros((5, 5)))
    assert _live_widgets() == before  # half-built widgets used to stay and break Widget.close_all()


def test_float_images_in_0_255_are_rescaled_and_said(clf, images):
    w = ExplainWidget(clf, [images[0] * 255, images[1]])
    assert torch.allclose(w.images[0], images[0], atol=1e-6)
    assert "0..255 rescaled" in w.status and "image 0" in w.status
    w.close()


class GreyCNN(TinyCNN):
    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.features[0] = nn.Conv2d(channels, 8, 3, padding=1)


@pytest.mark.parametrize("channels", [1, 4])
def test_grey_and_rgba_models_get_their_channel_count(channels):
    model = GreyCNN(channels).eval()
    w = ExplainWidget(model, torch.rand(2, 3, 16, 16))
    # no error (a random net's Grad-CAM may be flat: then the status says so instead of a blank map)
    assert not w.status.startswith("Error") and w.frame is not None
    assert w.session.model_input(0).shape == (1, channels, 16, 16)
    if channels == 1:
        x = w.session.model_input(0)
        assert torch.allclose(x[0, 0], 0.299 * w.images[0][0] + 0.587 * w.images[0][1] + 0.114 * w.images[0][2])
    w.close()


def test_layer_not_in_the_menu_is_added_or_refused_whole(ew):
    before = (ew.layer, ew.frame.copy(), list(ew.w_layer.options))
    ew.layer = "fc"  # a real module, but no spatial map: listed, and the status says so
    assert ew.layer == "fc" and ("fc" in [v for _, v in ew.w_layer.options]) and "fc" in ew.status
    assert ew.w_layer.value == "fc"
    ew.layer = "no.such.layer"
    assert ew.layer == "fc" and ew.w_layer.value == "fc" and ew.status.startswith("Error")
    ew.layer = ""
    assert ew.layer == "" and len(before[2]) + 1 == len(ew.w_layer.options)


def test_explainer_session_without_widgets(clf, images):
    from guidewidgets.explain import Explainer

    s = Explainer(clf, [("a", images[0], 1), ("b", images[1])], cache_size=2)
    assert s.names == ["a", "b"] and s.labels == [1, None]
    k = s.key(0, "grad-cam", 2)
    res = s.compute(k)
    assert s.get(k) is res and k in s
    s.compute(s.key(0, "saliency", 2))
    s.compute(s.key(1, "saliency", 2))
    assert k not in s  # bounded: least recently used dropped
    job = s.submit([s.key(0, "occlusion", 1)])
    assert job.wait(30) and not job.errors and job.progress == 1.0
    labels = [label for label, _ in s.layer_options(0)]
    assert len(labels) == len(set(labels)) and all(" x " in label for label in labels)
    assert "true label" in s.heading(s.key(0, "saliency", 1))


# ---- GuideWidget ------------------------------------------------------------------------------


@pytest.fixture
def gw():
    torch.manual_seed(0)
    model = TinySeg().eval()
    g = torch.Generator().manual_seed(3)
    image = torch.rand(3, 32, 32, generator=g)
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[4:12, 4:12] = 1
    mask[20:24, :] = 2
    w = GuideWidget(model, image, mask)
    assert w.brush_class is None  # no brush preselected: the first click asks for one
    w.brush_class = 1
    yield w
    w.close()


def test_guide_initial_frames(gw):
    plain = gw.guide.plain_logits().argmax(1)[0]
    assert np.array_equal(gw.view.frames["overlay"], render.segmentation_rgba(plain, gw.palette, alpha=gw.opacity))
    assert (gw.view.frames["hints"] == 0).all()
    assert gw.view.scale == 12 and gw.w_class.options[1] == ("1: disc", 1)
    assert "disc" in gw.w_legend.value and gw.loss_chart.lines.x.size == 0
    assert gw.brush_class == 1 and gw.step_count == 0


def test_click_paints_a_hint_and_run_satisfies_it(gw):
    gw.brush_radius = 0
    y, x = 7, 20
    target = 2 if gw._prediction[y, x] != 2 else 1
    gw.w_class.value = target
    gw.view._on_client_ready()
    gw.view.on_mouse_down(x * 12 + 5, y * 12 + 5)  # canvas coordinates, as the browser sends them
    gw.view.on_mouse_up(x * 12 + 5, y * 12 + 5)
    assert gw.hint_count == 1 and gw.guide.hints[0].points == ((y, x),) and gw.guide.hints[0].cls == target
    hint_px = (*gw.palette[target, :3], HINT_ALPHA)
    assert tuple(gw.view.frames["hints"][y, x]) == hint_px
    assert tuple(gw.view.sent["hints"][y * 12 + 6, x * 12 + 6]) == hint_px
    assert (gw.view.frames["hints"][..., 3] == HINT_ALPHA).sum() == 1  # exactly one pixel painted
    assert (gw.view.frames["hints"][..., 3] == 255).sum() == 4  # and its white outline
    before = gw.view.sent["overlay"].copy()
    gw.w_run.click()
    assert gw.step_count > 0 and gw.guide.satisfied()
    assert gw._prediction[y, x] == target
    expect = render.segmentation_rgba(gw.guide.prediction(), gw.palette, alpha=gw.opacity)
    assert np.array_equal(gw.view.frames["overlay"], expect)
    assert not np.array_equal(before[y * 12, x * 12], gw.view.sent["overlay"][y * 12, x * 12])
    assert gw.changed == int((render.to_numpy(gw.guide.plain_logits().argmax(1)[0]) != gw._prediction).sum())
    assert "satisfied" in gw.status


def test_run_redraws_live_every_few_steps(gw, monkeypatch):
    frames = []
    real = gw.view.set_layer
    monkeypatch.setattr(gw.view, "set_layer", lambda name, f: (frames.append(name), real(name, f)))
    gw.live_every = 2
    gw.add_stroke([(3, 3)], cls=2, radius=0)
    gw.add_stroke([(3, 5)], cls=1, radius=0)  # two classes side by side: takes a few steps
    gw.run_steps = 6
    before = gw._prediction.copy()
    gw.run()
    n = gw.step_count
    assert n >= 2 and frames.count("overlay") == n // 2 + 1
    assert gw.changed == int((gw._prediction != before).sum())


def test_drag_makes_a_continuous_stroke(gw):
    gw.brush_radius = 1
    gw.view.on_mouse_down(2 * 12, 2 * 12)
    gw.view.on_mouse_move(2 * 12, 3 * 12)
    assert gw.hint_count == 0 and gw.view.frames["hints"][3, 2, 3] == HINT_ALPHA  # provisional stroke shown
    gw.view.on_mouse_move(20 * 12, 3 * 12)  # a jump of 18 px
    gw.view.on_mouse_up(20 * 12, 3 * 12)
    h = gw.guide.hints[0]
    assert h.radius == 1 and len(h.points) >= 19
    covered = {tuple(p) for p in render.to_numpy(h.pixels).tolist()}
    assert all((3, x) in covered for x in range(2, 21))
    painted = gw.view.frames["hints"][..., 3] == HINT_ALPHA
    assert painted.sum() == len(covered)


def test_negative_hint_and_undo(gw):
    gw.w_negative.value = True
    gw.brush_radius = 2
    gw.view.on_mouse_down(60, 60)
    gw.view.on_mouse_up(60, 60)
    assert gw.guide.hints[0].negative and "not disc" in gw.status
    gw.negative = False
    gw.view.on_mouse_down(200, 200)
    gw.view.on_mouse_up(200, 200)
    assert gw.hint_count == 2
    gw.w_undo.click()
    assert gw.hint_count == 1 and gw.guide.hints[0].negative
    gw.undo()
    assert gw.hint_count == 0 and gw.w_undo.disabled and not gw.w_redo.disabled
    assert not gw.undo() and gw.status == "Nothing to undo."


def test_auto_run_after_a_stroke(gw):
    gw.w_auto.value = True
    assert gw.auto_run
    gw.view.on_mouse_down(100, 100)
    gw.view.on_mouse_up(100, 100)
    assert gw.hint_count == 1 and gw.status.startswith("Run:") and gw.guide.satisfied()


def test_step_reset_and_readouts(gw):
    gw.add_stroke([(8, 8)], cls=2, radius=1)
    gw.w_step.click()
    assert gw.step_count == 1 and len(gw.guide.losses) == 1
    gw.step()
    assert gw.step_count == 2 and "loss" in gw.w_numbers.value and "|gamma_s|" in gw.w_numbers.value
    gamma = gw.guide.params["gamma_s"].reshape(-1).numpy()
    bars = gw.gamma_chart.bars
    assert np.allclose(bars.y[0] + bars.y[1], gamma) and (bars.y[0] >= 0).all() and (bars.y[1] <= 0).all()
    assert np.allclose(gw.loss_chart.lines.y, gw.guide.losses) and list(gw.loss_chart.lines.x) == [1, 2]
    pred = gw._prediction.copy()
    gw.step()
    assert gw.changed == int((gw._prediction != pred).sum())
    gw.w_reset.click()
    plain = render.to_numpy(gw.guide.plain_logits().argmax(1)[0])
    assert gw.step_count == 0 and gw.hint_count == 0 and np.array_equal(gw._prediction, plain)
    assert all(float(v.abs().sum()) == 0 for v in gw.guide.params.values())
    gw.step()
    assert "hint first" in gw.status


def test_iou_readout(gw):
    from guidewidgets.widgets.guide_widget import iou_per_class

    iou = iou_per_class(gw._prediction, gw.mask, 3)
    assert np.allclose(gw.iou, iou, equal_nan=True)
    p = np.array([[0, 1], [1, 1]])
    t = np.array([[0, 1], [0, 1]])
    assert np.allclose(iou_per_class(p, t, 3), [0.5, 2 / 3, np.nan], equal_nan=True)
    assert "IoU now" in gw.w_numbers.value


def test_radius_and_opacity_controls(gw):
    gw.w_radius.value = 4
    assert gw.brush_radius == 4 and gw.view.cursor_radius == 4
    gw.view.on_mouse_move(100, 100)
    assert gw.view.cursor[2] == 4
    gw.w_opacity.value = 0.25
    a = gw.view.frames["overlay"][..., 3]
    assert set(np.unique(a)) <= {0, round(0.25 * 255)}


def test_show_toggle(gw):
    gw.w_show.value = "truth"
    assert np.array_equal(gw.view.frames["overlay"], render.segmentation_rgba(gw.mask, gw.palette, alpha=gw.opacity))
    gw.show = "original"
    assert np.array_equal(
        gw.view.frames["overlay"], render.segmentation_rgba(gw._original, gw.palette, alpha=gw.opacity)
    )
    gw.show = "nonsense"
    assert gw.show == "original" and gw.status.startswith("Error")
    gw.opacity = 1.0
    assert (gw.view.frames["overlay"][..., 3][gw._original > 0] == 255).all()


def test_ask_and_answer(gw):
    assert gw.w_answers.layout.display == "none"
    y, x = gw.w_ask.click() or gw.asking
    assert gw.asking == gw.guide.ask() and "Which class" in gw.status
    assert gw.w_answers.layout.display is None
    ring = gw.view.frames["hints"]
    assert ring[max(0, y - 4) : y + 5, max(0, x - 4) : x + 5, 3].max() == 255
    cls = 2
    gw.w_answers.children[1].children[cls].click()
    assert gw.asking is None and gw.guide.hints[-1].points == ((y, x),) and gw.guide.hints[-1].cls == cls
    assert gw._prediction[y, x] == cls and gw.w_answers.layout.display == "none"
    gw.answer(1)
    assert "Nothing was asked" in gw.status


def test_guide_bad_requests_keep_it_working(gw):
    gw.brush_class = 9
    assert gw.brush_class == 1 and "outside 0..2" in gw.status
    assert not gw.add_stroke([(40, 40)])
    assert "outside" in gw.status and gw.hint_count == 0
    gw.brush_radius = -5
    assert gw.brush_radius == 0
    gw.add_stroke([(1, 1)])
    gw.run()
    assert gw.step_count >= 0 and not gw.status.startswith("Error")


def test_hover_readout(gw):
    gw.view.on_mouse_move(5 * 12 + 1, 6 * 12 + 1)
    text = gw.view.value_label.value
    assert "(y=6, x=5)" in text and "guided:" in text and "truth: disc" in text


def test_first_click_without_a_brush_asks_for_one():
    w = GuideWidget(TinySeg().eval(), torch.rand(3, 16, 16))
    w.view.on_mouse_down(30, 30)
    w.view.on_mouse_up(30, 30)
    assert w.hint_count == 0 and "Pick a brush class" in w.status and w.w_class.value is None
    assert w.key_down("2") and w.brush_class == 2  # number keys pick the brush
    w.close()


def test_undo_redo_restore_the_exact_guide_state(gw):
    pre = gw.view.frames["overlay"].copy()
    pre_params = {k: v.clone() for k, v in gw.guide.params.items()}
    gw.add_stroke([(6, 6), (6, 12)], cls=2, radius=1)
    gw.run()
    after = (gw.view.frames["overlay"].copy(), gw.step_count, list(gw.guide.losses), gw._prediction.copy())
    assert not np.array_equal(after[0], pre)
    assert gw.key_down("z", ctrl=True)  # undo the run
    assert gw.hint_count == 1 and gw.step_count == 0 and np.array_equal(gw.view.frames["overlay"], pre)
    gw.undo()  # undo the hint
    assert gw.hint_count == 0 and all(torch.equal(v, pre_params[k]) for k, v in gw.guide.params.items())
    gw.redo()
    assert gw.key_down("y", ctrl=True)
    assert np.array_equal(gw.view.frames["overlay"], after[0]) and gw.step_count == after[1]
    assert gw.guide.losses == after[2] and np.array_equal(render.to_numpy(gw.guide.prediction()), after[3])
    gw.reset()
    assert gw.hint_count == 0
    gw.undo()  # even a reset comes back
    assert gw.hint_count == 1 and np.array_equal(gw.view.frames["overlay"], after[0])


def test_outline_mode_and_high_contrast_palette(gw):
    gw.w_style.value = "outline"
    from scipy import ndimage

    frame = gw.view.frames["overlay"]
    labels = gw._prediction
    # two pixels or more away from any class boundary: no paint, the scene shows
    deep = np.zeros_like(labels, bool)
    for k in np.unique(labels):
        deep |= ndimage.binary_erosion(labels == k, iterations=2, border_value=1)
    assert (frame[deep, 3] == 0).all() and (frame[..., 3] > 0).any()
    edge = np.argwhere(~deep & (labels > 0) & (frame[..., 3] == frame[..., 3].max()))[0]
    assert tuple(frame[tuple(edge)][:3]) == tuple(gw.palette[labels[tuple(edge)], :3])  # legend colour
    gw.style = "wobbly"
    assert gw.style == "outline" and gw.status.startswith("Error")
    gw.w_contrast.value = True
    assert np.array_equal(gw.palette, render.HIGH_CONTRAST[:3])
    r, g, b = render.HIGH_CONTRAST[1, :3]
    assert f"rgb({r},{g},{b})" in gw.w_legend.value
    assert gw.w_answers.children[1].children[1].style.button_color == f"rgb({r},{g},{b})"


def test_iou_changes_coloured_and_regressions_flagged(gw):
    assert "worse" not in gw.w_numbers.value and not gw.regression
    gw.session.prediction = gw.mask.copy()  # as if a run had fixed everything
    gw.session.score()
    gw._readouts()
    assert np.allclose(gw.iou[~np.isnan(gw.iou)], 1.0) and not gw.regression
    assert theme.GOOD in gw.w_numbers.value and "&#9650;" in gw.w_numbers.value  # green, up
    gw.session.prediction = np.zeros_like(gw.mask)  # then a bad action: everything background
    gw.session.score()
    gw._readouts()
    assert gw.regression and "worse: mean IoU 1.000" in gw.w_numbers.value
    assert "#b00020" in gw.w_numbers.value and "&#9660;" in gw.w_numbers.value  # red, down
    gw.session.score()  # nothing changed since: no flag
    gw._readouts()
    assert not gw.regression and "worse" not in gw.w_numbers.value


def test_ask_buttons_sit_beside_the_image(gw):
    row = next(c for c in gw.children if isinstance(c, ipywidgets.HBox) and gw.view in c.children)
    readouts = row.children[1]
    assert gw.w_answers in readouts.children and readouts.layout.min_width  # the readouts never collapse
    gw.ask()
    assert "beside the image" in gw.status and "Which class" in gw.w_question.value
    # the image shrinks with the output area (theme.py) but never grows past its own pixel size
    assert gw.view.layout.max_width == f"{gw.view.width * gw.view.scale}px" and "gw-view" in gw.view._dom_classes


def test_guide_export_has_heading_and_legend(gw, tmp_path):
    from PIL import Image

    gw.add_stroke([(5, 5)], cls=2, radius=1)
    gw.run()
    back = np.asarray(Image.open(gw.export(str(tmp_path / "g.png"))))
    big = render.upscale(gw.composite(), gw.view.scale)
    assert back.shape[1] == big.shape[1] and back.shape[0] > big.shape[0]
    assert "Guided segmentation: 1 hint(s)" in gw.heading() and "mean IoU" in gw.heading()


def test_largest_error_region():
    from guidewidgets.widgets.guide_widget import largest_error_region

    t = np.zeros((10, 10), int)
    p = t.copy()
    p[0, 0] = p[9, 9] = 1  # two lone pixels
    p[3:6, 3:6] = 2  # one 3 x 3 region
    assert largest_error_region(p, t) == 9 and largest_error_region(t, t) == 0


def test_guide_widget_close_removes_block():
    m = TinySeg().eval()
    w = GuideWidget(m, torch.rand(3, 16, 16))
    assert any(mod._forward_hooks for mod in m.modules())
    w.close()
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.modules())


def test_guide_widget_rejects_wrong_mask():
    with pytest.raises(ValueError, match="mask"):
        GuideWidget(TinySeg().eval(), torch.rand(3, 16, 16), torch.zeros(8, 8, dtype=torch.long))


def test_widgets_from_package_root():
    import guidewidgets

    assert guidewidgets.ExplainWidget is ExplainWidget and guidewidgets.GuideWidget is GuideWidget


# ---- the embedded defaults (once the zoo ships weights) -----------------------------------------


def _zoo_ready(name: str) -> bool:
    try:
        from guidewidgets import zoo

        zoo.load(name)
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _zoo_ready("shapes-classifier"), reason="zoo weights for shapes-classifier not available")
def test_explain_widget_defaults():
    w = ExplainWidget()
    assert len(w.images) >= 4 and w.frame is not None and w.status == ""
    for m in ("cam", "grad-cam", "saliency"):
        w.method = m
        assert w.status == "" and w.frame is not None
    w.close()


@pytest.mark.skipif(not _zoo_ready("shapes-segmenter"), reason="zoo weights for shapes-segmenter not available")
def test_guide_widget_defaults():
    w = GuideWidget()
    assert w.mask is not None and w.view.frames["overlay"] is not None
    y, x = w.ask()
    w.answer(int(w.mask[y, x]))
    assert w.guide.hints[-1].points == ((y, x),) and w.step_count >= 0 and w.status.startswith("Run:")
    assert np.array_equal(
        w.view.frames["overlay"], render.segmentation_rgba(w.guide.prediction(), w.palette, alpha=w.opacity)
    )
    w.close()


def test_readout_plots():
    from guidewidgets.widgets.plots import bars_rgba, line_png, line_rgba

    a = line_rgba([4.0, 3.0, 2.0, 1.0], width=100, height=50)
    assert a.shape == (50, 100, 4) and a.dtype == np.uint8
    blue = np.argwhere((a[..., :3] == (31, 119, 180)).all(-1))
    left, right = blue[blue[:, 1] < 10], blue[blue[:, 1] > 90]
    assert left[:, 0].mean() < right[:, 0].mean()  # a falling loss goes down the image
    assert line_png([])[:4] == b"\x89PNG" and line_rgba([float("nan")]).shape == (80, 240, 4)
    b = bars_rgba([1.0, -0.5], width=40, height=41)
    red = np.argwhere((b[..., :3] == (214, 39, 40)).all(-1))
    blu = np.argwhere((b[..., :3] == (31, 119, 180)).all(-1))
    assert red[:, 0].max() < 20 < blu[:, 0].min() and red[:, 1].max() < blu[:, 1].min()
    assert len(np.unique(red[:, 0])) == 2 * len(np.unique(blu[:, 0]))  # heights in proportion


# ---- torchvision models (random weights: no download) ---------------------------------------------


def test_torchvision_classifier_and_segmenter():
    from guidewidgets import zoo

    clf = zoo.torchvision_model("resnet18", weights=None)
    w = ExplainWidget(clf, torch.rand(2, 3, 64, 64))
    assert w.status == "" and w.frame.shape == (64, 64, 4) and w.view.scale == 6
    assert "net.layer4" in [v for _, v in w.w_layer.options]
    w.layer = "net.layer3"
    w.method = "guided-backprop"
    assert w.status == "" and w.frame is not None
    w.close()
    seg = zoo.torchvision_model("lraspp_mobilenet_v3_large", weights=None)
    g = GuideWidget(seg, torch.rand(3, 64, 64))
    assert g.num_classes == 21 and len(g.w_answers.children[1].children) == 21
    g.add_stroke([(30, 30)], cls=15, radius=2)
    g.run()
    assert g.status.startswith("Run:") and g.view.frames["overlay"].shape == (64, 64, 4)
    g.close()
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in seg.modules())


# ---- GuideWidget: hints in words -------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw_text():
    if not _zoo_ready("shapes-segmenter"):
        pytest.skip("zoo weights for shapes-segmenter not available")
    w = GuideWidget()  # the embedded segmenter, its shipped text guide and a held-out scene with its mask
    yield w
    w.close()


def test_text_box_offers_generated_queries_and_templates(gw_text):
    from guidewidgets.guide.queries import generate_queries

    w = gw_text
    tok = w.text_guide.tokenizer
    generated = [q.text for q in generate_queries(torch.from_numpy(w._prediction), torch.from_numpy(w.mask), w.classes)]
    assert generated, "the default scene has a mistake, so the generator has a query for it"
    opts = list(w.w_text.options)
    assert opts[: len(generated[:12])] == generated[:12] and set(tok.examples()) <= set(opts)
    assert all(c in w.w_text_help.value for c in tok.named) and "bottom right" in w.w_text_help.value
    assert not w.w_text.disabled and not w.w_apply.disabled


def test_text_query_changes_prediction_readouts_and_undo_restores_it(gw_text):
    w = gw_text
    w.reset()
    before_pred, before_iou, before_numbers = w._prediction.copy(), w.iou.copy(), w.w_numbers.value
    before_overlay = w.view.frames["overlay"].copy()
    query = w.w_text.options[0]  # the generated query for the largest mistake
    w.w_text.value = query
    n_undo = w.session.undo_depth
    w.w_apply.click()
    assert w.guide.texts == [query] and "Words" in w.status and w.session.undo_depth == n_undo + 1
    assert w.changed > 0 and not np.array_equal(w._prediction, before_pred)
    assert np.array_equal(w._prediction, render.to_numpy(w.guide.prediction()))  # what is shown is the model's
    assert not np.array_equal(w.view.frames["overlay"], before_overlay)
    assert not np.allclose(w.iou, before_iou, equal_nan=True) and w.w_numbers.value != before_numbers
    assert query in w.w_numbers.value and "1 sentence(s)" in w.heading()
    assert w.undo()
    assert w.guide.texts == [] and np.array_equal(w._prediction, before_pred)
    assert np.array_equal(render.to_numpy(w.guide.prediction()), before_pred)  # exactly the pre-text prediction
    assert np.array_equal(w.view.frames["overlay"], before_overlay)
    assert w.redo() and w.guide.texts == [query]
    w.reset()


@pytest.mark.parametrize(
    "sentence, says",
    [
        ("there is a dragon in the top left", "not a class of this model"),
        ("there is a circle in the attic", "not a location"),
        ("", "holds no words"),
        ("circle circle circle", "does not follow a hint template"),
    ],
)
def test_bad_words_say_why_and_change_nothing(gw_text, sentence, says):
    w = gw_text
    w.reset()
    pred, params, n_undo = w._prediction.copy(), {k: v.clone() for k, v in w.guide.params.items()}, w.session.undo_depth
    assert not w.apply_text(sentence)
    assert w.status.startswith("Error: words not applied") and says in w.status
    assert np.array_equal(w._prediction, pred) and w.session.undo_depth == n_undo and w.guide.texts == []
    assert all(torch.equal(v, params[k]) for k, v in w.guide.params.items())
    assert w.apply_text(w.text_guide.tokenizer.examples()[1])  # the widget keeps working
    w.reset()


def test_text_box_off_for_a_model_without_a_text_guide(gw):
    assert gw.text_guide is None and gw.w_text.disabled and gw.w_apply.disabled
    assert "train_text" in gw.w_text_help.value
    assert not gw.apply_text("there is no disc in this image") and "train_text" in gw.status


# ---- ExplainWidget: box overlay -----------------------------------------------------------------


@pytest.mark.skipif(not _zoo_ready("shapes-classifier"), reason="zoo weights for shapes-classifier not available")
def test_box_overlay_draws_the_maps_box_and_its_iou_with_the_true_box():
    from guidewidgets import zoo
    from guidewidgets.localize.boxes import box_and_iou, box_iou
    from guidewidgets.widgets.box_overlay import BOX, TRUTH

    scenes = zoo.ShapeScenes(2, seed=5, task="classification")
    w = ExplainWidget(zoo.load("shapes-classifier"), scenes)
    w.method = "grad-cam"
    w.target = int(scenes[0]["label"])
    plain, heading = w.frame.copy(), w.heading()
    assert w.box_info is None and "box" not in heading and w.w_box_threshold.disabled
    w.w_box.value = True  # the toggle
    assert not w.w_box_threshold.disabled
    info = w.box_info
    truth = scenes[0]["boxes"][scenes[0]["box_labels"] == w.target]
    assert info is not None and torch.equal(info.truth, truth)
    box, _ = box_and_iou(w.current["map"], 0.2)
    assert info.box == box.tolist() and info.threshold == 0.2
    assert info.iou == pytest.approx(float(box_iou(box[None], truth).max()))
    assert f"IoU {info.iou:.2f} with the true" in w.heading() and f"IoU {info.iou:.2f}" in w.w_heading.value
    x0, y0, x1, y1 = info.box
    assert tuple(w.frame[y0, x0]) == BOX and tuple(w.view.frames["overlay"][y0, x0]) == BOX  # drawn, and sent
    _, ty0, tx1, _ = truth[0].tolist()
    assert tuple(w.frame[ty0, tx1 - 1]) in (TRUTH, BOX)  # the true box too (the map's box may lie on it)
    # a higher threshold keeps fewer pixels: the box can only shrink to within the old one
    w.w_box_threshold.value = 0.8
    small = w.box_info.box
    assert small[0] >= x0 and small[1] >= y0 and small[2] <= x1 and small[3] <= y1 and w.box_info.threshold == 0.8
    w.box_threshold = 1.5
    assert w.box_threshold == 0.8 and "between 0 and 1" in w.status
    w.box = False
    assert w.box_info is None and np.array_equal(w.frame, plain) and "box" not in w.heading()
    w.close()


def test_box_overlay_without_true_boxes_says_so(ew):
    ew.box = True
    assert ew.box_info is not None and ew.box_info.truth is None and ew.box_info.iou is None
    assert "no true box known" in ew.heading()
    assert ew.session.true_boxes(0) is None


@pytest.mark.skipif(not _zoo_ready("shapes-classifier"), reason="zoo weights for shapes-classifier not available")
def test_box_overlay_for_the_default_scenes():
    w = ExplainWidget()
    w.box = True
    assert w.box_info is not None and w.box_info.truth is not None and w.box_info.iou is not None
    assert 0.0 <= w.box_info.iou <= 1.0 and "with the true" in w.heading()
    w.close()


def test_boxes_follow_the_image_to_the_models_size():
    from guidewidgets.widgets.box_overlay import fit_boxes

    b = torch.tensor([[10, 20, 50, 60]])
    assert torch.equal(fit_boxes(b, (64, 64), None), b) and torch.equal(fit_boxes(b, (64, 64), 64), b)
    assert fit_boxes(b, (64, 64), 32).tolist() == [[5, 10, 25, 30]]
    assert fit_boxes(b, (64, 96), 64).tolist() == [[0, 20, 34, 60]]  # centre crop drops 16 columns each side


@pytest.mark.skipif(not _zoo_ready("shapes-segmenter"), reason="zoo weights for shapes-segmenter not available")
def test_words_after_a_newer_guide_took_over_say_so():
    from guidewidgets.guide import Guide

    w = GuideWidget()
    newer = Guide(w.model, w.image)  # one guide per model: the widget's guide is closed by this
    try:
        pred = w._prediction.copy()
        assert not w.apply_text(w.text_guide.tokenizer.examples()[1])
        assert "newer Guide on the same model took over" in w.status and np.array_equal(w._prediction, pred)
    finally:
        newer.close()
        w.close()


def test_a_class_the_model_rules_out_says_so_instead_of_a_blank_map(images):
    torch.manual_seed(0)
    model = TinyCNN().eval()
    with torch.no_grad():  # class 1: no weight on any feature and a bias far below the others
        model.fc.weight[1] = 0.0
        model.fc.bias[1] = -100.0
    w = ExplainWidget(model, images, method="grad-cam")
    try:
        w.target = 1
        assert np.abs(w.current["map"]).max() == 0  # Grad-CAM has nothing to show here
        name = w.classes[1]
        assert f"The model gives {name} 0.0%: Grad-CAM has no positive evidence to show" in w.status
        w.target = 0  # a class with evidence: the note goes away
        assert "The model gives" not in w.status
    finally:
        w.close()
