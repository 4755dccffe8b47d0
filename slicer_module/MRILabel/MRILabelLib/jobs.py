"""Long server calls off the GUI thread, without Slicer: a :class:`Job` runs one piece of work in a thread, a
:class:`JobRunner` allows one job at a time, and a :class:`Plan` splits a panel action into its three parts.

The panel's action is a plan: ``work`` talks to the server and runs in the job's thread (it must not touch Qt or
MRML); ``finish`` turns the answer into nodes and runs on the GUI thread after the job ended (the panel polls the
job with a ``qt.QTimer``); ``cleanup`` removes the action's temporary files, whatever happened. Work reports
progress through ``progress(message, fraction=None, detail=None)``, the same callback :mod:`MRILabelLib.logic`
takes; once the job is cancelled, the next report raises :class:`~MRILabelLib.errors.Cancelled`, so the work
stops at its next step. A call already waiting for the server cannot be interrupted: the job is detached at once
(the runner takes a new job) and whatever the call answers later is dropped.
"""

import threading
from typing import Any, Callable, NamedTuple, Optional, Tuple

from .errors import BusyError, Cancelled

Progress = Callable[..., None]
Work = Callable[[Progress], Any]


def _unchanged(value: Any) -> Any:
    return value


def _nothing() -> None:
    return None


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None


class Plan(NamedTuple):
    """One panel action: server ``work`` (worker thread), ``finish`` and ``cleanup`` (GUI thread)."""

    title: str
    work: Work
    finish: Callable[[Any], Any] = _unchanged
    cleanup: Callable[[], None] = _nothing


def run_plan(plan: Plan, progress: Optional[Progress] = None) -> Any:
    """Run a plan's parts one after the other in this thread (scripts, tests, the self-test); cleanup always runs."""
    try:
        return plan.finish(plan.work(progress or _ignore))
    finally:
        plan.cleanup()


class Job:
    """One piece of work in a daemon thread, with progress, cancel, and its result or error for the poller.

    Args:
        title: what the work is, for messages (``Running sequence``).
        work: called in the thread with the job's :meth:`progress`; its return value becomes :attr:`result`, what it
            raises becomes :attr:`error` (nothing is raised in the thread itself).
    """

    def __init__(self, title: str, work: Work):
        self.title = title
        self._work = work
        self._cancel, self._done, self._lock = threading.Event(), threading.Event(), threading.Lock()
        self._message: str = title
        self._fraction: Optional[float] = None
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, name=f"MRILabel: {title}", daemon=True)

    def start(self) -> "Job":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.check()
            result = self._work(self.progress)
            self.check()  # cancelled while the last call ran: its answer is dropped
            self.result = result
        except BaseException as error:  # handed to the GUI thread, which shows it as a sentence
            self.error = error
        finally:
            self._done.set()

    def progress(self, message: str, fraction: Optional[float] = None, detail: Any = None) -> None:
        """Report progress (from the work's thread); raises Cancelled once the job was cancelled."""
        self.check()
        with self._lock:
            self._message, self._fraction = str(message), fraction

    def check(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled."""
        if self._cancel.is_set():
            raise Cancelled(self.title)

    def cancel(self) -> None:
        """Ask the work to stop; whatever it still answers is dropped."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout_s: Optional[float] = None) -> bool:
        """Wait until the work ended; True when it did within ``timeout_s``."""
        return self._done.wait(timeout_s)

    def snapshot(self) -> Tuple[str, Optional[float]]:
        """The latest progress: ``(message, fraction or None)``."""
        with self._lock:
            return self._message, self._fraction


class JobRunner:
    """At most one job at a time: :meth:`start` refuses a second one while the first runs (no nested runs)."""

    def __init__(self) -> None:
        self.job: Optional[Job] = None

    @property
    def busy(self) -> bool:
        return self.job is not None

    def start(self, title: str, work: Work) -> Job:
        """Start ``work`` in a new job; :class:`BusyError` while another job runs."""
        if self.job is not None:
            raise BusyError(self.job.title)
        self.job = Job(title, work).start()
        return self.job

    def poll(self) -> Optional[Job]:
        """The job once it has ended (the runner is then free); None while it runs or when there is none."""
        job = self.job
        if job is None or not job.done:
            return None
        self.job = None
        return job

    def cancel(self) -> Optional[Job]:
        """Cancel and detach the running job (the runner is free at once); returns it, or None."""
        job, self.job = self.job, None
        if job is not None:
            job.cancel()
        return job
