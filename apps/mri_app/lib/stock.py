"""The one place this app reaches into MONAI Label's (and Starlette's) internals added for issue 17: CORS
middleware options, the session store, the infer response writer, the train queue. Each helper names what it
relies on, so an upgrade of MONAI Label breaks here and nowhere else."""

import re
from typing import Dict, List, Optional, Sequence

from fastapi.middleware.cors import CORSMiddleware

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
    options = dict(allow_origins=list(origins), allow_origin_regex=LOOPBACK_ORIGINS, allow_credentials=True,
                   allow_methods=["*"], allow_headers=["*"])
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


def trainer_defaults(instance, task: str) -> Dict:
    """The config (name -> default) of a train task: what ``params`` may set."""
    trainer = instance._trainers.get(task)
    return dict(getattr(trainer, "_config", {}) or {})


def train_all(params: Optional[dict], run_sync: bool):
    """MONAI Label's ``POST /train/`` (every task queued)."""
    from monailabel.endpoints.train import run

    return run(params, run_sync)
