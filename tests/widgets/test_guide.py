"""GuideWidget driven from Python: clicks, strokes, runs, readouts, undo/redo, questions and answers,
and hints in words (the text guide)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

ipywidgets = pytest.importorskip("ipywidgets")
pytest.importorskip("ipycanvas")

from guidewidgets import render  # noqa: E402
from guidewidgets.widgets import GuideWidget, theme  # noqa: E402
from guidewidgets.widgets.guide_widget import HINT_ALPHA  # noqa: E402
from tests.widget_fixtures import TinySeg, zoo_ready  # noqa: E402

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
    gw.live_every, gw.live_seconds = 2, 0.0  # every other step, however fast the steps are
    gw.add_stroke([(3, 3)], cls=2, radius=0)
    gw.add_stroke([(3, 5)], cls=1, radius=0)  # two classes side by side: takes a few steps
    gw.run_steps = 6
    before = gw._prediction.copy()
    gw.run()
    n = gw.step_count
    assert n >= 2 and frames.count("overlay") == n // 2 + 1
    assert gw.changed == int((gw._prediction != before).sum())
    gw.live_seconds = 3600.0  # a fast Run spends its time stepping: one live frame, then the final one
    gw.reset()
    gw.add_stroke([(3, 3)], cls=2, radius=0)
    gw._next_live = 0.0
    frames.clear()
    gw.run()
    assert gw.step_count >= 4 and frames.count("overlay") == 2, (gw.step_count, frames)


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


# ---- GuideWidget: hints in words -------------------------------------------------------------------


@pytest.fixture(scope="module")
def gw_text():
    if not zoo_ready("shapes-segmenter"):
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


@pytest.mark.skipif(not zoo_ready("shapes-segmenter"), reason="zoo weights for shapes-segmenter not available")
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
