"""The one place this app reaches into MONAI Label's (and Starlette's) internals added for issue 17: CORS
middleware options, the session store, the infer response writer, the train queue. Each helper names what it
relies on, so an upgrade of MONAI Label breaks here and nowhere else."""

import logging
import os
import re
import signal
import threading
import time
from typing import Dict, List, Optional, Sequence

from fastapi.middleware.cors import CORSMiddleware

logger = logging.getLogger(__name__)

#: Origins admitted by default: pages served from this machine (any port), over http or https.
LOOPBACK_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?"
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


def cors_origins(conf_value: Optional[str], env_origins: Sequence[str] = ()) -> List[str]:
    """The origins ``--conf cors_origins`` admits besides loopback (comma separated; ``*`` for any).

    Args:
        conf_value: the ``--conf cors_origins`` text, or None.
        env_origins: MONAI Label's ``MONAI_LABEL_CORS_ORIGINS`` (kept: it is set on purpose).

    Raises:
        ValueError: naming ``cors_origins`` and the entry that is not ``scheme://host[:port]`` or ``*``.
    """
    origins = [str(o).rstrip("/") for o in env_origins]
    for entry in (conf_value or "").split(","):
        entry = entry.strip().rstrip("/")
        if not entry:
            continue
        if entry != "*" and not _ORIGIN.match(entry):
            raise ValueError(f"--conf cors_origins entries must be scheme://host[:port] or *, got {entry!r}")
        origins.append(entry)
    return origins


def restrict_cors(server, origins: Sequence[str]) -> None:
    """Replace MONAI Label's CORS setup (any origin, with credentials) by loopback plus ``origins``.

    Relies on MONAI Label adding one ``CORSMiddleware`` to ``server.user_middleware`` and on Starlette building
    the middleware stack from it again when ``server.middleware_stack`` is None.
    """
    options = dict(
        allow_origins=list(origins),
        allow_origin_regex=LOOPBACK_ORIGINS,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    found = False
    for middleware in server.user_middleware:
        if middleware.cls is CORSMiddleware:
            middleware.kwargs = options
            found = True
    if not found:
        server.user_middleware.append(_middleware(CORSMiddleware, **options))
    server.middleware_stack = None  # rebuilt, with the options above, at the next request


def _middleware(cls, **kwargs):
    from starlette.middleware import Middleware

    return Middleware(cls, **kwargs)


def sessions(instance):
    """MONAI Label's session store of the app (None when sessions are off)."""
    return instance.sessions()


def infer_config(instance) -> Dict:
    """The infer defaults MONAI Label merges into every infer request (``info()["config"]["infer"]``)."""
    return dict(instance.info().get("config", {}).get("infer", {}))


def send_infer_response(datastore, result: Dict, output, background_tasks):
    """MONAI Label's infer answer (JSON, image or multipart), from its endpoint module."""
    from monailabel.endpoints.infer import send_response

    return send_response(datastore, result, output, background_tasks)


def log_view(path: str, lines: Optional[int], html: Optional[bool], text: Optional[bool], refresh: Optional[int]):
    """MONAI Label's ``GET /logs/`` answer (last ``lines``, HTML or text) for the log file ``path``."""
    from monailabel.endpoints.logs import get_logs

    return get_logs(path, lines, html, text, refresh)


def trainer_defaults(instance, task: str) -> Dict:
    """The config (name -> default) of a train task: what ``params`` may set."""
    trainer = instance._trainers.get(task)
    return dict(getattr(trainer, "_config", {}) or {})


def train_all(params: Optional[dict], run_sync: Optional[bool]):
    """MONAI Label's ``POST /train/`` (every task queued)."""
    from monailabel.endpoints.train import run

    return run(params, run_sync)


def kill_background_tasks() -> int:
    """Kill the processes of MONAI Label's background tasks (training, batch infer, scoring) and their children;
    how many were killed. A killed training resumes from its last completed epoch (``{"resume": true}``)."""
    import psutil
    from monailabel.utils.async_tasks.utils import background_processes

    killed = 0
    for processes in list(background_processes.values()):
        for process in list(processes.values()):
            try:
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
                process.kill()
                killed += 1
            except (psutil.Error, OSError):
                pass
    return killed


def _exit_after(grace_s: float) -> None:
    time.sleep(grace_s)
    logger.warning(f"still running {grace_s:.0f} s after the stop signal (a request holds it): exiting now")
    logging.shutdown()
    os._exit(0)


def stop_promptly(grace_s: float) -> None:
    """On SIGTERM or SIGINT, kill the background tasks (:func:`kill_background_tasks`; MONAI Label waits for a
    training to end, so the server ignored SIGTERM during one), pass the signal on to uvicorn's handler, and end the
    process ``grace_s`` seconds later if a request (a strategy or an inference on a worker thread) still holds it.

    Relies on uvicorn having installed its handlers with :func:`signal.signal` before the app starts. Only from the
    main thread (elsewhere, e.g. in a test client, nothing is installed).

    Raises:
        ValueError: ``grace_s`` not positive.
    """
    if not grace_s > 0:
        raise ValueError(f"grace_s must be > 0, got {grace_s}")
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(number)
        if getattr(previous, "mri_label_stop", False):
            continue

        def handler(signum, frame, previous=previous):
            killed = kill_background_tasks()
            logger.info(f"stop signal {signum}: {killed} background task(s) killed; exiting within {grace_s:.0f} s")
            threading.Thread(target=_exit_after, args=(grace_s,), daemon=True, name="mri-label-exit").start()
            if callable(previous):
                previous(signum, frame)
            else:
                raise SystemExit(0)

        setattr(handler, "mri_label_stop", True)  # a mark on the function, read back above
        signal.signal(number, handler)
