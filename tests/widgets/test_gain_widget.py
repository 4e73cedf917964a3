"""GainWidget driven from Python: start, probe refresh, pause, resume, stop, a full tiny run."""

import time

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from guidewidgets.widgets.gain_widget import GainWidget
from tests.helpers import hook_count as _hooks_on
from tests.helpers import until as _until


def _tiny(**changes) -> GainWidget:
    """A GainWidget on a few small scenes: two probes refreshed every step, a long GAIN phase."""
    options = dict(
        train_scenes=32,
        test_scenes=32,
        epochs=50,
        warmup_epochs=0,
        probes=2,
        probe_every=1,
        pixel_labels=2,
        batch_size=8,
    )
    return GainWidget(**{**options, **changes})


def test_start_probe_pause_resume_stop():
    w = _tiny(train_scenes=64, test_scenes=64, batch_size=16)
    w.start()
    try:
        assert _until(lambda: w.probe_refreshes >= 1), w.status
        assert w.w_strip[0].value and w.w_masked[0].value  # the strip was drawn
        first = bytes(w.w_strip[0].value)
        assert _until(lambda: w.probe_refreshes >= 3), w.status
        w.pause()
        assert _until(lambda: w.state == "paused" and w.trainer.waiting)  # the step in flight is done
        frozen = w.step
        time.sleep(1.0)
        assert w.step == frozen and w.running  # paused: alive, no progress
        w.resume()
        assert _until(lambda: w.step > frozen), w.status
        assert bytes(w.w_strip[0].value) != first  # the attention strip moved with training
    finally:
        w.stop()
        assert w.status.startswith("Stopping") or not w.running  # said at once, before the step ends
        assert w.wait(120)
    assert w.state == "stopped" and w.step < 50 * 4 and w.status.startswith("Stopped at step")
    assert w.history and all(h["losses"]["e"] >= 0 for h in w.history)
    lines = w.loss_chart.lines  # the chart holds exactly the recorded losses, step by step
    assert lines.x.tolist() == list(range(1, len(w.history) + 1))
    assert np.allclose(lines.y[0], [h["losses"]["cl"] for h in w.history])
    assert w.export().endswith(".png")


def test_full_tiny_run_gives_a_table_and_bad_knobs_are_refused():
    w = _tiny(epochs=1, warmup_epochs=1, pixel_labels=0, batch_size=16)
    w.alpha = -1.0
    w.start()
    assert w.status.startswith("Error") and not w.running
    w.alpha = 1.0
    w.start()
    assert w.wait(180)
    assert w.state == "done", w.status
    assert w.table is not None and 0.0 <= w.table["unbiased"] <= 1.0
    assert "circle without water" in w.w_table.value
    assert {h["phase"] for h in w.history} == {"warm-up", "training"}
    warm = sum(h["phase"] == "warm-up" for h in w.history)
    assert (
        f"Steps 1-{warm} are the warm-up" in w.w_curve_text.value and "L_am and L_e stay at 0" in w.w_curve_text.value
    )
    assert all(h["losses"]["am"] == 0 for h in w.history[:warm])  # what the note says
    with pytest.raises(ValueError, match="alpha"):
        GainWidget(alpha=-0.5)


def test_close_stops_training_and_leaves_the_model_alone():
    w = _tiny()
    w.start()
    assert _until(lambda: w.step >= 2), w.status  # training, not still rendering scenes
    thread, trainer = w.session.job.thread, w.trainer
    w.close()  # waits at most about a second: the step in flight ends, then the thread
    assert not thread.is_alive() and not w.running, "close() left the training thread running"
    assert trainer.stopped and w.state == "stopped"
    assert _hooks_on(w.model) == 0
    steps = trainer.step_count
    time.sleep(0.3)
    assert trainer.step_count == steps < trainer.total_steps  # no step after close
    w.start()  # a closed widget starts nothing
    assert not w.running and "closed" in w.status


def test_close_before_start_and_twice_is_harmless():
    w = _tiny(epochs=1, probes=1, probe_every=5, pixel_labels=0)
    w.omega = 0.0  # the slider reaches 0; the soft mask would then ignore the attention: refused at Start
    w.start()
    assert w.status.startswith("Error: omega") and not w.running
    w.close()
    w.close()
    assert not w.running
