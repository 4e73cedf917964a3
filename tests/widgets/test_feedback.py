"""What a class sees while a widget works (issue 25): every public trait says what it is (``help``),
a control marks the widget busy before the work starts and unmarks it after, GAIN's progress bar
shows only while a run works and starts at 0, and step axes tick on whole numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("ipywidgets")
pytest.importorskip("ipycanvas")

import ipywidgets as W

from guidewidgets import widgets
from guidewidgets.widgets.charts import LineChart, integer_ticks
from tests.widget_fixtures import TinySeg

pytest_plugins = ["tests.widget_fixtures"]  # its fixtures: clf, images, ew

# every widget the package exports (ImageView is a part, with no traits of its own)
WIDGETS = tuple(entry.cls for entry in widgets.WIDGETS)  # the registry: a new widget is checked too


def _own_traits(cls: type) -> dict[str, object]:
    """Public traits declared by the package's classes (not the ones ipywidgets' Box brings)."""
    mine = [c for c in cls.__mro__ if c.__module__.startswith("guidewidgets.")]
    return {n: t for c in mine for n, t in vars(c).items() if n in cls.class_traits() and not n.startswith("_")}


@pytest.mark.parametrize("cls", WIDGETS, ids=lambda c: c.__name__)
def test_every_public_trait_says_what_it_is(cls):
    traits = _own_traits(cls)
    assert traits, f"{cls.__name__} declares no traits: the check would pass for nothing"
    missing = sorted(n for n, t in traits.items() if not (t.help or "").strip())
    assert not missing, f"{cls.__name__} traits without help=: {missing}"


def test_the_trait_check_sees_a_missing_help():
    import traitlets as T

    class Bare(W.Box):
        __module__ = "guidewidgets.widgets.fake"
        said = T.Int(0, help="a trait with its help")
        silent = T.Int(0)

    assert set(_own_traits(Bare)) == {"said", "silent"} and not Bare.class_traits()["silent"].help


def _cue_log(widget: W.Widget, log: list[str]) -> None:
    widget.observe(lambda c: log.append("busy" if "gw-working" in c["new"] else "idle"), "_dom_classes")


def test_explain_marks_itself_busy_before_computing_and_unmarks_after(ew, monkeypatch):
    log: list[str] = []
    _cue_log(ew, log)
    real = ew.session.compute_many
    monkeypatch.setattr(ew.session, "compute_many", lambda keys: (log.append("compute"), real(keys))[1])
    status = ew.status
    ew.method = "saliency"  # not cached: computed in the handler
    assert log == ["busy", "compute", "idle"] and "gw-working" not in ew._dom_classes
    assert ew.status == status  # the cue is a style: the status line keeps its own text
    log.clear()
    ew.compare_methods = [*ew.compare_methods[:1], "saliency"]  # a compare checkbox's change: cued too
    assert log[0] == "busy" and log[-1] == "idle"


def test_guide_run_is_cued_and_an_error_still_unmarks():
    torch.manual_seed(0)
    w = widgets.GuideWidget(TinySeg().eval(), torch.rand(3, 16, 16))
    try:
        log: list[str] = []
        _cue_log(w, log)
        real = w.session.run
        w.session.run = lambda *a, **k: (log.append("run"), real(*a, **k))[1]
        w.add_stroke([(4, 4)], cls=1, radius=1)
        w.run()
        assert log[-3:] == ["busy", "run", "idle"] and w.status.startswith("Run:")

        def broken(*a, **k):
            raise RuntimeError("out of memory (pretend)")

        w.session.run = broken
        w.run()
        assert "out of memory" in w.status and "gw-working" not in w._dom_classes
    finally:
        w.close()


def test_gain_progress_bar_shows_only_while_a_run_works_and_starts_at_zero():
    w = widgets.GainWidget(train_scenes=16, test_scenes=16, epochs=1, warmup_epochs=1, probes=1, batch_size=8)
    try:
        bar, seen = w.w_progress, []
        record = lambda _: seen.append((bar.layout.visibility, bar.value, bar.max))  # noqa: E731
        bar.observe(record, ["value", "max"])
        bar.layout.observe(record, "visibility")
        assert bar.layout.visibility == "hidden"  # idle: no bar
        for phase, total in (("warm-up", 4), ("training", 6)):
            w._event({"kind": "phase", "phase": phase, "total": total})
            for s in range(1, total + 1):
                w._event({"kind": "step", "step": s})
        w._event({"kind": "finished", "state": "done"})
        shown = [(v, m) for vis, v, m in seen if vis == "visible"]
        appear = [seen[i] for i in range(len(seen)) if seen[i][0] == "visible" and seen[i - 1][0] != "visible"]
        assert [a[1] for a in appear] == [0]  # shown once, at 0
        assert (6, 6) in shown and shown[shown.index((4, 4)) + 1][0] == 0  # the second phase starts at 0 too
        assert bar.layout.visibility == "hidden" and bar.value == 0  # done: hidden, then reset
        assert "(after a run)" in w.w_more.get_title(0) and w.w_more.selected_index is None  # folded
    finally:
        w.close()


def test_integer_ticks_are_whole_numbers_in_range_and_few():
    rng = np.random.default_rng(0)
    for lo, hi in [(1, 1), (1, 2), (0, 7), (1, 63), (3, 3.5), *rng.uniform(0, 5000, (40, 2)).tolist()]:
        lo, hi = min(lo, hi), max(lo, hi)
        t = integer_ticks(lo, hi)
        assert t.dtype == np.int64 and 1 <= t.size <= 6
        if np.ceil(lo) <= np.floor(hi):
            assert t.min() >= np.ceil(lo) and t.max() <= hi
            gaps = np.unique(np.diff(t))
            assert gaps.size <= 1 and (gaps.size == 0 or str(int(gaps[0])).strip("0") in ("1", "2", "5"))


def test_step_charts_tick_on_steps_and_keep_legends_short():
    chart = LineChart(
        ["L_cl (classification)", "L_am"], title="t", xlabel="step", ylabel="loss", labels=["L_cl", "L_am"]
    )
    chart.update([1, 2, 3], {"L_cl (classification)": [3.0, 2.0, 1.0], "L_am": [1.0, 1.0, 0.5]})
    assert chart.x_axis.tick_values.tolist() == [1, 2, 3] and chart.x_axis.tick_format == "d"
    assert chart.lines.labels == ["L_cl", "L_am"] and np.allclose(chart.lines.y[0], [3.0, 2.0, 1.0])
    y = np.asarray(chart.y_axis.tick_values, dtype=float)  # round numbers over the data, not 0.5 .. 3 in fifths
    assert 2 <= y.size <= 6 and y.min() >= 0.5 - 1e-9 and y.max() <= 3.0 + 1e-9
    step = np.diff(y)
    assert np.allclose(step, step[0]) and f"{step[0]:.0e}"[0] in "125"
    w = widgets.GainWidget(train_scenes=16, test_scenes=16, probes=1, batch_size=8)
    try:
        assert all(len(label) <= 5 for label in w.loss_chart.lines.labels)  # "L_cl": fits a 385 px chart
    finally:
        w.close()


def test_export_and_stn_sliders_are_cued(ew):
    log: list[str] = []
    _cue_log(ew, log)
    ew.w_export.click()
    assert log == ["busy", "idle"] and ew.exported  # the cue, and the download offered
    w = widgets.STNWidget()
    try:
        log = []
        _cue_log(w, log)
        w.angle = 30.0
        assert log == ["busy", "idle"] and not w.status.startswith("Error"), w.status
    finally:
        w.close()
