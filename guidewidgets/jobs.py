"""One background-job type for every session: start, progress, cancel, done, errors, wait.

A :class:`Job` runs ``work(job)`` in a daemon thread. The work reports with ``job.report(fraction,
message)``; after :meth:`Job.cancel` that report raises :class:`Cancelled`, so the work stops at its
next report (cooperative: nothing is killed mid-step, hooks and locks are released by the work's
own ``finally``). Callbacks run in the job's thread: ``on_progress(job)`` at each report,
``on_done(job)`` once at the end, also after a cancel or an error (``job.state`` says which), and
``on_cancel(job)`` at the cancel request (for work that has a stop switch of its own, such as a
trainer's ``stop()``).

>>> job = Job(lambda j: [j.report(i / 10, f"step {i}") for i in range(10)], message="counting").start()
>>> job.wait(5), job.state
(True, 'done')

:class:`JobGroup` holds a session's jobs by slot: submitting to a busy slot cancels the older job
(unless it asks for the same key), :meth:`JobGroup.close` cancels them all and waits a bounded time.
Pure Python: sessions below ``widgets/`` use it without any widget library.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Hashable, Iterable
from typing import Any

__all__ = ["Cancelled", "Job", "JobGroup", "error_text"]

#: What :attr:`Job.state` can be.
STATES = ("new", "running", "done", "cancelled", "failed")


class Cancelled(Exception):
    """Raised from a progress report after :meth:`Job.cancel`: the work stops there."""


def error_text(err: BaseException) -> str:
    """``"TypeName: message"``: how a job's error reads in a status line."""
    return f"{type(err).__name__}: {err}"


Callback = Callable[["Job"], Any]


class Job:
    """``work(job)`` in a background thread, with progress, cooperative cancel and done callbacks.

    Args:
        work: the computation; it receives the job and calls :meth:`report` (or :meth:`check`)
            often enough that a cancel takes effect soon. Its return value is :attr:`result`.
        name: the thread's name (shown in debuggers and thread dumps).
        message: what the job does, in words a status line can show ("Computing t-SNE ...").
        after: jobs to wait for before ``work`` starts (their outcome does not matter; a cancel
            of this job still takes effect while it waits).
        on_progress, on_done, on_cancel: first callbacks (more with :meth:`add_progress_callback`
            and friends).
    """

    def __init__(
        self,
        work: Callable[[Job], Any],
        *,
        name: str = "job",
        message: str = "",
        after: Iterable[Job | None] = (),
        on_progress: Callback | None = None,
        on_done: Callback | None = None,
        on_cancel: Callback | None = None,
    ) -> None:
        if not callable(work):
            raise TypeError(f"work must be a function taking the job, got {type(work).__name__}")
        self.work = work
        self.name = str(name)
        self.message = str(message)
        self.progress = 0.0
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self._after = [j for j in after if j is not None]
        self._state = "new"
        self._cancel = threading.Event()
        self._ended = threading.Event()
        self._lock = threading.Lock()
        self._progress_cbs: list[Callback] = []
        self._done_cbs: list[Callback] = []
        self._cancel_cbs: list[Callback] = []
        for cbs, cb in ((self._progress_cbs, on_progress), (self._done_cbs, on_done), (self._cancel_cbs, on_cancel)):
            if cb is not None:
                cbs.append(cb)

    # ---- callbacks ------------------------------------------------------------------------------
    def add_progress_callback(self, fn: Callback) -> None:
        """``fn(job)`` at each :meth:`report` (in the job's thread)."""
        self._progress_cbs.append(fn)

    def add_done_callback(self, fn: Callback) -> None:
        """``fn(job)`` once when the job ends, however it ends; at once if it already has."""
        # Why the state, not _ended: the end reads its callbacks under the lock as it sets the final
        # state, and _ended is set only after they ran; one added in between was lost (review).
        self._add_or_call(fn, self._done_cbs, lambda: self._state not in ("new", "running"))

    def add_cancel_callback(self, fn: Callback) -> None:
        """``fn(job)`` when :meth:`cancel` is called (at once if it already was)."""
        self._add_or_call(fn, self._cancel_cbs, self._cancel.is_set)

    def _add_or_call(self, fn: Callback, cbs: list[Callback], happened: Callable[[], bool]) -> None:
        # Why under the lock: cancel() and the job's end read the list under it, so fn lands in the
        # list they read, or (the event already set) is called here.
        with self._lock:
            if not happened():
                cbs.append(fn)
                return
        fn(self)

    # ---- life -----------------------------------------------------------------------------------
    def start(self) -> Job:
        """Start the thread; returns the job. A job starts once."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"this job was already started ({self._state}); make a new Job to run again")
            self._state = "running"
            self.thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self.thread.start()
        return self

    def _main(self) -> None:
        state = "done"
        try:
            for prior in self._after:
                while not prior.wait(0.05):
                    self.check()
            self.check()
            self.result = self.work(self)
            self.progress = 1.0
        except Cancelled:
            state = "cancelled"
        except BaseException as err:  # a failing job reports; it never dies silently in its thread
            self.error, state = err, "failed"
        finally:
            with self._lock:
                self._state = state
                callbacks = list(self._done_cbs)
            for cb in callbacks:
                try:
                    cb(self)
                except Exception:  # one broken callback must not keep the others (or wait()) waiting
                    traceback.print_exc()
            self._ended.set()

    def report(self, fraction: float | None = None, message: str | None = None) -> None:
        """Record progress (``fraction`` in [0, 1], ``message`` in words) and tell the progress
        callbacks; raises :class:`Cancelled` once :meth:`cancel` was called."""
        self.check()
        if fraction is not None:
            self.progress = min(1.0, max(0.0, float(fraction)))
        if message is not None:
            self.message = str(message)
        for cb in list(self._progress_cbs):
            cb(self)

    def check(self) -> None:
        """Raise :class:`Cancelled` if :meth:`cancel` was called (a report without news)."""
        if self._cancel.is_set():
            raise Cancelled()

    def cancel(self) -> None:
        """Ask the work to stop at its next report; the cancel callbacks run now (in this thread)."""
        with self._lock:
            if self._cancel.is_set():
                return
            self._cancel.set()
            callbacks = list(self._cancel_cbs)
        for cb in callbacks:
            cb(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended (its done callbacks included); True if it has, or if it was
        never started. From inside the job's own thread it does not block."""
        if self._state == "new":
            return True
        if self.thread is threading.current_thread():
            return self._ended.is_set()
        return self._ended.wait(timeout)

    # ---- state ----------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """``"new"``, ``"running"``, ``"done"``, ``"cancelled"`` or ``"failed"``."""
        return self._state

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called (the work may still be finishing its step)."""
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        """True once the job has ended (or was never started): nothing of it runs any more."""
        return self._state == "new" or self._ended.is_set()

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the job has ended."""
        return self._state != "new" and not self._ended.is_set()

    @property
    def error_text(self) -> str:
        """The error as ``"TypeName: message"``, or ``""``."""
        return "" if self.error is None else error_text(self.error)

    def __repr__(self) -> str:
        return f"<Job {self.name!r} {self.state} {self.progress:.0%}{' cancel asked' * self.cancelled}>"


class JobGroup:
    """A session's background jobs, one per slot: a new job in a busy slot cancels the older one.

    ``submit(slot, key, work, ...)`` returns the running job of ``slot`` when it was submitted with
    the same ``key`` (the same request twice computes once); any other key cancels it and starts a
    new one. :meth:`close` cancels every job, waits a bounded time and refuses new ones.
    """

    def __init__(self, name: str = "session") -> None:
        self.name = name
        self._jobs: dict[str, tuple[Hashable, Job]] = {}
        self._lock = threading.Lock()
        self.closed = False

    def submit(
        self,
        slot: str,
        key: Hashable,
        work: Callable[[Job], Any],
        *,
        message: str = "",
        after: Iterable[Job | None] = (),
        on_progress: Callback | None = None,
        on_done: Callback | None = None,
        on_cancel: Callback | None = None,
    ) -> Job:
        """Start ``work`` in ``slot`` (see the class); the callbacks are the new job's."""
        with self._lock:
            if self.closed:
                raise RuntimeError(f"this {self.name} is closed; make a new one to compute again")
            old = self._jobs.get(slot)
            if old is not None and old[0] == key and old[1].running and not old[1].cancelled:
                return old[1]
            job = Job(
                work,
                name=f"{self.name}:{slot}",
                message=message,
                after=after,
                on_progress=on_progress,
                on_done=on_done,
                on_cancel=on_cancel,
            )
            self._jobs[slot] = (key, job)
        if old is not None:
            old[1].cancel()
        return job.start()

    def job(self, slot: str) -> Job | None:
        """The last job submitted to ``slot``, or None."""
        entry = self._jobs.get(slot)
        return entry[1] if entry is not None else None

    def key(self, slot: str) -> Hashable | None:
        """The key the last job of ``slot`` was submitted with, or None."""
        entry = self._jobs.get(slot)
        return entry[0] if entry is not None else None

    def jobs(self) -> list[Job]:
        return [job for _key, job in list(self._jobs.values())]

    @property
    def running(self) -> bool:
        """True while any job of the group runs."""
        return any(job.running for job in self.jobs())

    def cancel(self, slot: str | None = None) -> None:
        """Cancel the job of ``slot`` (default: every job)."""
        for name, (_key, job) in list(self._jobs.items()):
            if slot is None or name == slot:
                job.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every job has ended (``timeout`` seconds in all); True if they have."""
        end = None if timeout is None else time.monotonic() + timeout
        for job in self.jobs():
            left = None if end is None else max(0.0, end - time.monotonic())
            if not job.wait(left):
                return False
        return True

    def close(self, timeout: float | None = 1.0) -> bool:
        """Cancel every job, refuse new ones and wait up to ``timeout`` s; True if all have ended."""
        with self._lock:
            self.closed = True
        self.cancel()
        return self.wait(timeout)
