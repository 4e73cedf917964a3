"""The widget-free sessions driven from Python alone, as a script would: GainRun, STNSession and
GuideSession (no ipywidgets import here; FeatureBrowser: tests/features/test_browser.py)."""

from __future__ import annotations

import ast
import pathlib
import time

import numpy as np
import pytest
import torch

from guidewidgets import jobs, zoo
from guidewidgets.attend import stn
from guidewidgets.attend.stn_session import STNSession
from guidewidgets.gain import GainRun
from guidewidgets.guide import GuideSession
from guidewidgets.guide.interactive import iou_per_class
from tests.helpers import TinySeg
from tests.helpers import hook_count as _hooks_on
from tests.helpers import until as _until


def test_sessions_need_no_widget_library():
    """The house rule: nothing below widgets/ imports a widget library."""
    root = pathlib.Path(jobs.__file__).parent
    for path in [root / "jobs.py", root / "gain/run.py", root / "features/browser.py", root / "attend/stn_session.py",
                 root / "guide/interactive.py"]:  # fmt: skip
        imported = {
            (n.module or "") if isinstance(n, ast.ImportFrom) else a.name
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, (ast.Import, ast.ImportFrom))
            for a in (n.names if isinstance(n, ast.Import) else [n])
        }
        assert not {m for m in imported if m.split(".")[0] in ("ipywidgets", "ipycanvas", "bqplot")}, path


# ---- GainRun ------------------------------------------------------------------------------------------


def test_gain_run_warms_up_then_trains_and_scores():
    events = []
    run = GainRun(train_scenes=16, test_scenes=16, epochs=1, warmup_epochs=1, probes=2, probe_every=1,
                  pixel_labels=2, batch_size=16)  # fmt: skip
    run.listen(events.append)
    job = run.start()
    assert isinstance(job, jobs.Job) and run.wait(120)
    assert run.state == "done" and job.state == "done", run.status
    phases = [e["phase"] for e in events if e["kind"] == "phase"]
    assert phases == ["warm-up", "training"]
    assert [h["phase"] for h in run.history] == ["warm-up", "training"]  # 16 scenes, 16 per step
    assert [h["global_step"] for h in run.history] == [1, 2]
    assert run.history[0]["losses"]["am"] == 0 < run.history[1]["losses"]["am"]  # plain training first ...
    assert "Steps 1-1 are the warm-up" in run.warmup_note()  # ... and the note says so
    states = [e["state"] for e in events if e["kind"] == "state"]
    assert states[0] == "preparing" and "warm-up" in states and states[-1] == "done"
    assert events[-1] == {"kind": "finished", "state": "done"}
    assert run.last_probe is not None and len(run.last_probe["maps"]) == 2
    assert run.accuracies and {a["phase"] for a in run.accuracies} <= {"warm-up", "training"}
    rows = dict(run.table_rows())
    assert set(rows) >= {"unbiased accuracy", "pointing game"} and all(0 <= v <= 1 for v in rows.values())
    circles = int((run.data["train"]["labels"] == zoo.CLASSES.index("circle")).sum())
    assert run.used_pixel_labels == min(2, circles) and _hooks_on(run.model) == 0


def test_gain_run_pause_resume_stop_and_close():
    run = GainRun(train_scenes=32, test_scenes=32, epochs=50, warmup_epochs=0, probes=1, probe_every=1,
                  pixel_labels=0, batch_size=8)  # fmt: skip
    run.start()
    with pytest.raises(RuntimeError, match="already running"):
        run.start()
    assert _until(lambda: run.step >= 2), run.status
    run.pause()
    assert run.state == "paused" and _until(lambda: run.trainer.waiting)
    frozen = run.step
    time.sleep(0.3)
    assert run.step == frozen and run.running
    run.resume()
    assert _until(lambda: run.step > frozen) and run.state == "training"
    run.stop()
    assert run.status.startswith("Stopping")  # at once, before the step in flight ends
    assert run.wait(30) and run.state == "stopped" and run.status == f"Stopped at step {run.step}."
    assert run.trainer.stopped and run.step < run.trainer.total_steps and run.table is None
    assert run.close() and run.closed
    with pytest.raises(RuntimeError, match="closed"):
        run.start()


def test_gain_run_refuses_bad_knobs_with_a_sentence():
    with pytest.raises(ValueError, match="alpha"):
        GainRun(alpha=-0.5)
    with pytest.raises(TypeError, match="epochs"):
        GainRun(epochs=2.5)
    with pytest.raises(TypeError, match="batch_size"):
        GainRun(batch_size=True)
    with pytest.raises(ValueError, match="batch_size"):
        GainRun(train_scenes=8, batch_size=16)
    run = GainRun(train_scenes=16, test_scenes=16, epochs=1, warmup_epochs=0, probes=1, batch_size=8)
    run.omega = 0.0
    with pytest.raises(ValueError, match="omega"):
        run.start()
    run.omega, run.pixel_labels = 10.0, 2.5
    with pytest.raises(TypeError, match="pixel_labels"):
        run.start()
    assert not run.running and run.state == "idle"


# ---- STNSession ----------------------------------------------------------------------------------------


def test_stn_session_distorts_and_compares():
    torch.manual_seed(0)
    model, plain = stn.STNClassifier().eval(), stn.PlainClassifier().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scenes = stn.DistortedScenes(4, seed=61_001)
    s = STNSession(model, plain, scenes, index=1)
    item = scenes[1]
    assert s.index == 1 and s.angle == pytest.approx(item["angle"], abs=0.05)
    r = s.result
    assert set(r) >= {"theta", "input", "output", "stn", "plain", "label"} and r["label"] == item["label"]
    assert r["theta"].shape == (2, 3) and r["output"].shape == (3, stn.OUT, stn.OUT)
    first = r["input"].clone()
    s.distort(angle=90.0, scale=0.5)
    assert s.angle == 90.0 and not torch.equal(s.result["input"], first)
    assert torch.equal(s.result["input"], scenes.render(1, angle=90.0, scale=0.5, shift=s.shift))
    text, correct = s.verdict("stn")
    assert "%" in text and isinstance(correct, bool) and "scene 1: rotate 90°" in s.describe()
    for bad, kind in [({"scale": 9.0}, ValueError), ({"angle": float("nan")}, TypeError), ({"shift": 0.1}, TypeError)]:
        with pytest.raises(kind):
            s.distort(**bad)
        assert s.angle == 90.0 and s.scale == 0.5  # a refused value changes nothing
    with pytest.raises(ValueError, match="0..3"):
        s.pick(True)
    s.reset()
    assert s.angle == pytest.approx(item["angle"], abs=0.05)
    assert STNSession(model, False, scenes).result["plain"] is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not model.training
    with pytest.raises(TypeError, match="transform"):
        STNSession(plain, False, scenes)


# ---- GuideSession ---------------------------------------------------------------------------------------


@pytest.fixture
def guided():
    torch.manual_seed(0)
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(32, 32, dtype=torch.long)
    mask[4:12, 4:12] = 1
    mask[20:24, :] = 2
    s = GuideSession(TinySeg().eval(), image, mask)
    yield s
    s.close()


def test_guide_session_undo_redo_restore_the_exact_state(guided):
    s = guided
    assert not s.can_undo and s.step_count == 0 and np.array_equal(s.prediction, s.original)
    s.add_stroke([(6, 6), (6, 12)], cls=2, radius=1)
    n = s.run()
    after = (s.prediction.copy(), s.step_count, list(s.guide.losses), {k: v.clone() for k, v in s.guide.params.items()})
    assert n == s.step_count > 0 and s.satisfied() and s.undo_depth == 2
    assert s.changed == int((s.prediction != s.original).sum())
    assert s.undo() and s.step_count == 0 and len(s.guide.hints) == 1 and np.array_equal(s.prediction, s.original)
    assert s.undo() and not s.guide.hints and not s.undo()  # nothing left: False, nothing moves
    assert s.redo() and s.redo() and not s.redo()
    assert np.array_equal(s.prediction, after[0]) and s.step_count == after[1] and s.guide.losses == after[2]
    assert all(torch.equal(v, after[3][k]) for k, v in s.guide.params.items())
    s.reset()
    assert not s.guide.hints and s.step_count == 0 and s.changed == 0
    assert s.undo() and len(s.guide.hints) == 1  # even a reset comes back


def test_guide_session_iou_before_now_and_regression(guided):
    s = guided
    r = s.readout
    truth = s.mask
    assert np.allclose(r.now, iou_per_class(s.prediction, truth, 3), equal_nan=True) and not r.regression
    assert np.allclose(r.before, r.now, equal_nan=True) and r.change() == 0.0
    s.prediction = truth.copy()  # as if a run had fixed everything
    r = s.score()
    assert np.allclose(r.now[~np.isnan(r.now)], 1.0) and r.change() > 0 and not r.regression
    s.prediction = np.zeros_like(truth)  # then a bad action
    r = s.score()
    assert r.regression and r.last_mean == pytest.approx(1.0) and s.regression
    assert not s.score().regression  # nothing changed since
    assert GuideSession(TinySeg().eval(), torch.rand(3, 16, 16)).readout is None  # no mask, no readout


def test_guide_session_ask_and_answer_is_one_undo_step(guided):
    s = guided
    with pytest.raises(ValueError, match="nothing was asked"):
        s.answer(1)
    q = s.ask()
    assert (q.y, q.x) == s.guide.ask() and q.first != q.second and "hesitates between" in q.text
    depth = s.undo_depth
    s.answer(2)
    assert s.question is None and s.prediction[q.y, q.x] == 2 and s.undo_depth == depth + 1
    assert s.guide.hints[-1].points == ((q.y, q.x),)
    s.undo()
    assert not s.guide.hints and np.array_equal(s.prediction, s.original)


def test_guide_session_refusals_change_nothing_and_close_releases_the_model(guided):
    s = guided
    with pytest.raises(ValueError):
        s.add_stroke([(40, 40)], cls=1)
    assert not s.guide.hints and not s.can_undo
    with pytest.raises(ValueError, match="mask has shape"):
        GuideSession(TinySeg().eval(), torch.rand(3, 16, 16), torch.zeros(8, 8))
    assert s.text_guide is None and "no text guide ships for TinySeg" in s.text_note
    with pytest.raises(ValueError, match="hints in words are off"):
        s.apply_text("there is no disc in this image")
    s.close()
    assert s.guide.closed and _hooks_on(s.model) == 0
