"""lib.stock: CORS origins from --conf, and a stop signal that ends the server within seconds even while a
background task runs and a request holds a worker thread (run in a child Python, where signals reach the main
thread)."""

import subprocess
import sys
import textwrap
import time

import pytest

from lib.stock import cors_origins, stop_promptly
from tests.helpers.app import APP_DIR


@pytest.mark.parametrize(
    "value,env,expected",
    [
        (None, (), []),
        ("http://viewer.example:8080, https://b.example/", (), ["http://viewer.example:8080", "https://b.example"]),
        ("*", ["http://x.example"], ["http://x.example", "*"]),
    ],
)
def test_cors_origins(value, env, expected):
    assert cors_origins(value, env) == expected


@pytest.mark.parametrize("value", ["evil.example", "http://a.example/path", "ftp://a.example", "javascript:alert(1)"])
def test_cors_origins_refuses_what_is_not_an_origin(value):
    with pytest.raises(ValueError, match="cors_origins"):
        cors_origins(value)


def test_stop_promptly_validates_the_grace():
    with pytest.raises(ValueError, match="grace_s"):
        stop_promptly(0)


CHILD = textwrap.dedent("""
    import os, signal, subprocess, sys, threading, time
    sys.path.insert(0, {app!r})
    from monailabel.utils.async_tasks.utils import background_processes
    from lib.stock import stop_promptly

    training = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    background_processes["train"] = {{"task": training}}
    passed_on = []
    signal.signal(signal.SIGTERM, lambda s, f: passed_on.append(s))  # stands for uvicorn's handler
    stop_promptly({grace})
    holder = threading.Thread(target=time.sleep, args=(300,))  # a request on a worker thread, not a daemon
    holder.start()
    print(training.pid, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    print("passed on" if passed_on == [signal.SIGTERM] else "not passed on", training.poll() is not None, flush=True)
""")


@pytest.mark.parametrize("grace", [1.0])
def test_a_stop_signal_kills_background_tasks_and_ends_the_process_after_the_grace(grace):
    started = time.time()
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(app=str(APP_DIR), grace=grace)], capture_output=True, text=True, timeout=120
    )
    elapsed = time.time() - started
    lines = child.stdout.split("\n")
    assert child.returncode == 0, child.stderr[-2000:]
    assert lines[1] == "passed on True"  # uvicorn's handler still called; the training process killed
    assert elapsed < 30  # without the grace timer the non-daemon thread would hold the process 300 s
