"""The one background-job type (guidewidgets.jobs): progress, cooperative cancel, errors, done
callbacks, wait, ordering (``after``) and the per-slot group every session uses."""

from __future__ import annotations

import threading

import pytest

from guidewidgets import jobs
from guidewidgets.explain import session as explain_session


def _blocking(started: threading.Event, release: threading.Event, steps: int = 1000):
    """Work that reports until released (or cancelled), then returns how far it got."""

    def work(job: jobs.Job) -> int:
        started.set()
        for i in range(steps):
            job.report(i / steps, f"step {i}")
            if release.wait(0.005):
                return i
        return steps

    return work


def test_progress_message_result_and_callbacks():
    seen, done = [], []
    job = jobs.Job(
        lambda j: [j.report((i + 1) / 4, f"step {i + 1} of 4") for i in range(4)] and "result",
        message="counting",
        on_progress=lambda j: seen.append((j.progress, j.message)),
        on_done=lambda j: done.append(j.state),
    )
    assert job.state == "new" and job.done and job.wait(0) and job.message == "counting"
    assert job.start() is job and job.wait(10)
    assert job.state == "done" and job.result == "result" and job.progress == 1.0 and job.error is None
    assert [p for p, _ in seen] == [0.25, 0.5, 0.75, 1.0] and seen[-1][1] == "step 4 of 4"
    assert done == ["done"] and not job.cancelled and not job.running
    late = []
    job.add_done_callback(lambda j: late.append(j.state))  # after the end: called at once
    assert late == ["done"]
    with pytest.raises(RuntimeError, match="already started"):
        job.start()


def test_cancel_stops_at_the_next_report_and_runs_the_callbacks_once():
    started, release = threading.Event(), threading.Event()
    stopped, done = [], []
    job = jobs.Job(_blocking(started, release), on_cancel=lambda j: stopped.append(1), on_done=done.append).start()
    assert started.wait(5)
    assert not job.wait(0.05) and job.running  # still working: wait says so
    job.cancel()
    job.cancel()  # twice is harmless
    assert job.cancelled and job.wait(5)
    assert job.state == "cancelled" and job.result is None and job.error is None
    assert stopped == [1] and done == [job] and job.progress < 1.0


def test_a_cancel_before_the_work_starts_runs_no_work():
    ran = []
    job = jobs.Job(lambda j: ran.append(1))
    job.cancel()
    assert job.start().wait(5) and job.state == "cancelled" and ran == []


def test_errors_are_captured_not_lost_in_the_thread():
    def broken(job):
        job.report(0.5)
        raise ZeroDivisionError("pretend")

    done = []
    job = jobs.Job(broken, on_done=lambda j: done.append(j.error_text)).start()
    assert job.wait(5) and job.state == "failed"
    assert isinstance(job.error, ZeroDivisionError) and job.error_text == "ZeroDivisionError: pretend"
    assert done == ["ZeroDivisionError: pretend"] and job.progress == 0.5


def test_a_broken_done_callback_neither_hides_the_others_nor_blocks_wait(capsys):
    seen = []
    job = jobs.Job(lambda j: 1)
    job.add_done_callback(lambda j: 1 / 0)
    job.add_done_callback(lambda j: seen.append(j.result))
    assert job.start().wait(5) and seen == [1] and job.state == "done"
    assert "ZeroDivisionError" in capsys.readouterr().err  # reported, not swallowed


def test_after_waits_for_earlier_jobs_and_still_cancels():
    started, release = threading.Event(), threading.Event()
    first = jobs.Job(_blocking(started, release)).start()
    assert started.wait(5)
    order = []
    second = jobs.Job(lambda j: order.append(first.done), after=[first, None]).start()
    assert not second.wait(0.1)  # waits for the first one
    release.set()
    assert second.wait(5) and order == [True]
    blocked_by, free = threading.Event(), threading.Event()
    third = jobs.Job(_blocking(blocked_by, free)).start()
    assert blocked_by.wait(5)
    waiting = jobs.Job(lambda j: order.append("ran"), after=[third]).start()
    waiting.cancel()  # a cancel counts while it waits
    assert waiting.wait(5) and waiting.state == "cancelled" and order == [True]
    free.set()
    assert third.wait(5)


def test_bad_work_is_refused():
    with pytest.raises(TypeError, match="function"):
        jobs.Job("not callable")  # type: ignore[arg-type]


def test_group_one_job_per_slot_newer_cancels_older_same_key_computes_once():
    group = jobs.JobGroup("test")
    started, release = threading.Event(), threading.Event()
    a = group.submit("slot", "a", _blocking(started, release), message="a")
    assert started.wait(5)
    assert group.submit("slot", "a", lambda j: None) is a  # the same request: the running job
    b_started, b_release = threading.Event(), threading.Event()
    b = group.submit("slot", "b", _blocking(b_started, b_release), message="b")
    assert b is not a and a.cancelled and a.wait(5) and a.state == "cancelled"
    other = group.submit("other", 1, lambda j: "free")  # another slot is left alone
    assert other.wait(5) and other.result == "free" and not b.cancelled
    assert group.job("slot") is b and group.key("slot") == "b" and group.running
    assert group.close(5) and b.state == "cancelled" and not group.running
    with pytest.raises(RuntimeError, match="closed"):
        group.submit("slot", "c", lambda j: None)


def test_the_explainer_uses_the_one_job_type():
    assert explain_session.Cancelled is jobs.Cancelled
    assert issubclass(explain_session.Job, jobs.Job)
    fractions = []
    job = explain_session.Job(["k"], on_progress=fractions.append, work=lambda j: j.report(0.5))
    assert job.start().wait(5) and fractions == [0.5] and job.keys == ["k"] and job.errors == []


def test_a_done_callback_added_while_the_end_runs_its_callbacks_is_called():
    """The window between the end reading its callbacks and ``wait()`` returning: a callback added
    there (here: by the first callback, in the job's thread) runs at once instead of being lost."""
    calls: list[str] = []
    job = jobs.Job(lambda j: 1)

    def first(j: jobs.Job) -> None:
        calls.append("first")
        j.add_done_callback(lambda _: calls.append("late"))

    job.add_done_callback(first)
    job.start()
    assert job.wait(5)
    assert calls == ["first", "late"]
