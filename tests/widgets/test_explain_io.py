"""ExplainWidget's inputs and outputs from Python: uploads, export, headings, shortcuts, odd models
(grey, RGBA, segmenters, torchvision), the box overlay and the embedded defaults."""

from __future__ import annotations

import datetime
import io

import numpy as np
import pytest
import torch
from torch import nn

ipywidgets = pytest.importorskip("ipywidgets")
pytest.importorskip("ipycanvas")

from guidewidgets import explain, render  # noqa: E402
from guidewidgets.widgets import ExplainWidget, GuideWidget, inputs  # noqa: E402
from tests.widget_fixtures import TinyCNN, TinySeg, encode_png, zoo_ready  # noqa: E402

pytest_plugins = ["tests.widget_fixtures"]  # its fixtures: clf, images, ew


def test_uploads_good_and_bad(ew, monkeypatch):
    n = len(ew.images)
    ew._on_upload({"new": ({"name": "photo.png", "content": memoryview(encode_png("RGB")), "size": 1},)})
    assert len(ew.images) == n + 1 and ew.image_index == n and "Loaded 'photo.png'" in ew.status
    assert ew.frame is not None and ew.images[n].shape == (3, 32, 32)
    assert ew.load_upload(encode_png("L"), "gray.png") == n + 1 and "grayscale" in ew.status
    assert ew.load_upload(encode_png("RGBA"), "alpha.png") == n + 2 and "white" in ew.status
    assert ew.load_upload(b"%PDF-1.4 not an image", "paper.pdf") is None
    assert ew.status.startswith("Upload refused") and "not an image" in ew.status
    assert ew.load_upload(b"", "empty.png") is None and "empty" in ew.status
    monkeypatch.setattr(inputs, "MAX_UPLOAD_PIXELS", 100)
    assert ew.load_upload(encode_png("RGB"), "huge.png") is None and "megapixels" in ew.status
    monkeypatch.setattr(inputs, "MAX_UPLOAD_BYTES", 10)
    assert ew.load_upload(encode_png("RGB"), "big.png") is None and "MB" in ew.status
    assert len(ew.images) == n + 3  # the widget still works after the refusals
    ew.method = "saliency"
    assert ew.frame is not None


def test_upload_control_roundtrip(ew):
    ew.w_upload.value = (
        {
            "name": "a.png",
            "type": "image/png",
            "size": 10,
            "content": memoryview(encode_png("RGB")),
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


def test_widgets_from_package_root():
    import guidewidgets

    assert guidewidgets.ExplainWidget is ExplainWidget and guidewidgets.GuideWidget is GuideWidget


# ---- the embedded defaults (once the zoo ships weights) -----------------------------------------


@pytest.mark.skipif(not zoo_ready("shapes-classifier"), reason="zoo weights for shapes-classifier not available")
def test_explain_widget_defaults():
    w = ExplainWidget()
    assert len(w.images) >= 4 and w.frame is not None and w.status == ""
    for m in ("cam", "grad-cam", "saliency"):
        w.method = m
        assert w.status == "" and w.frame is not None
    w.close()


@pytest.mark.skipif(not zoo_ready("shapes-segmenter"), reason="zoo weights for shapes-segmenter not available")
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


# ---- ExplainWidget: box overlay -----------------------------------------------------------------


@pytest.mark.skipif(not zoo_ready("shapes-classifier"), reason="zoo weights for shapes-classifier not available")
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


@pytest.mark.skipif(not zoo_ready("shapes-classifier"), reason="zoo weights for shapes-classifier not available")
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
