"""The Slicer-free job runner (issue 18 row 3): work in a thread, progress, cancel, errors, one job at a time."""

import threading

import pytest

from MRILabelLib import plain_sentence
from MRILabelLib.errors import BusyError, Cancelled, ServerHTTPError
from MRILabelLib.jobs import Job, JobRunner, Plan, run_plan


def test_work_runs_in_another_thread_and_its_result_comes_back():
    threads = []
    job = Job("Running sequence", lambda progress: threads.append(threading.current_thread()) or 42).start()
    assert job.wait(5) and job.done and job.result == 42 and job.error is None
    assert threads and threads[0] is not threading.current_thread()


def test_progress_is_seen_by_the_poller():
    reported, release = threading.Event(), threading.Event()

    def work(progress):
        progress("Uploading head (12.0 MB)", 0.25)
        reported.set()
        release.wait(5)
        return "ok"

    job = Job("Upload", work).start()
    assert reported.wait(5)
    assert job.snapshot() == ("Uploading head (12.0 MB)", 0.25) and not job.done
    release.set()
    assert job.wait(5) and job.result == "ok"


def test_errors_are_handed_back_not_raised_in_the_thread():
    error = ServerHTTPError(503, "busy")

    def work(progress):
        raise error

    job = Job("Running", work).start()
    assert job.wait(5) and job.error is error and job.result is None


def test_cancel_stops_the_work_at_its_next_progress_report():
    started, release, after = threading.Event(), threading.Event(), []

    def work(progress):
        started.set()
        release.wait(5)
        progress("next step")  # raises Cancelled: nothing after this runs
        after.append("ran on")
        return "late"

    job = Job("Running sequence", work).start()
    assert started.wait(5)
    job.cancel()
    release.set()
    assert job.wait(5) and job.cancelled and isinstance(job.error, Cancelled) and job.result is None
    assert after == []
    assert plain_sentence(job.error) == "Running sequence was cancelled."


def test_a_result_that_arrives_after_cancel_is_dropped():
    started, release = threading.Event(), threading.Event()
    job = Job("Fetch", lambda progress: (started.set(), release.wait(5), "late")[-1]).start()
    assert started.wait(5)
    job.cancel()
    release.set()
    assert job.wait(5) and job.result is None and isinstance(job.error, Cancelled)


def test_runner_allows_no_second_job_while_one_runs():
    release = threading.Event()
    runner = JobRunner()
    first = runner.start("Running sequence", lambda progress: release.wait(5))
    assert runner.busy and runner.job is first
    with pytest.raises(BusyError) as caught:
        runner.start("Fetch next sample", lambda progress: None)
    assert plain_sentence(caught.value) == "Running sequence is still running; wait for it or press Cancel."
    assert runner.poll() is None  # not done yet
    release.set()
    assert first.wait(5)
    assert runner.poll() is first and not runner.busy and runner.poll() is None


def test_cancelling_frees_the_runner_at_once_and_detaches_the_job():
    release = threading.Event()
    runner = JobRunner()
    job = runner.start("Upload", lambda progress: (release.wait(5), progress("done"))[-1])
    assert runner.cancel() is job and job.cancelled and not runner.busy
    second = runner.start("Next", lambda progress: "second")
    release.set()
    assert job.wait(5) and second.wait(5) and runner.poll() is second and second.result == "second"


def test_run_plan_runs_work_then_finish_and_always_cleans_up():
    steps = []
    plan = Plan(
        "Run",
        lambda progress: steps.append("work") or 2,
        lambda value: steps.append("finish") or value * 10,
        lambda: steps.append("cleanup"),
    )
    assert run_plan(plan) == 20 and steps == ["work", "finish", "cleanup"]

    def failing(progress):
        raise ValueError("no")

    steps.clear()
    with pytest.raises(ValueError):
        run_plan(Plan("Run", failing, cleanup=lambda: steps.append("cleanup")))
    assert steps == ["cleanup"]
