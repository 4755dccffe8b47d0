"""The DICOMweb proxy viewers use (``/proxy/dicom/...``), in place of MONAI Label's, which forwards any path (dot
segments such as ``%2E%2E`` or ``..%2F`` reach the PACS's whole REST API with the server's own PACS login), lets
any user POST (STOW-RS) through ``/proxy/dicom/studies`` and ``/proxy/dicom/wado/studies``, forwards every request
header, and waits on the event loop without a time limit.

Here: only DICOMweb resource paths (``studies``, ``series``, ``instances``, UIDs, ``metadata``, ``rendered``,
``thumbnail``, ``frames/<n,...>``, ``bulkdata``) after an optional ``qido``/``wado``/``stow`` part; a dot segment,
an empty one or any other name -> 422. ``GET`` (search and retrieve) needs a user; ``POST`` is STOW-RS only (to
``studies`` or ``studies/<uid>``) and needs an annotator; ``POST`` to ``qido``/``wado`` -> 405. Only ``Accept``
and ``Content-Type`` go upstream, the PACS's time limits apply (:data:`lib.dicomweb.PACS_TIMEOUT_S`; 504 when
passed, 502 when the PACS cannot be reached) and the request runs on a worker thread.
"""

import re
from typing import List, Optional, Tuple
from urllib.parse import unquote

import requests
from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from monailabel.config import settings
from monailabel.endpoints.user.auth import User

from lib.access import ANNOTATOR, USER, RoleRequired
from lib.dicomweb import PACS_TIMEOUT_S
from lib.errors import bad_input

router = APIRouter()
OPS = ("qido", "wado", "stow")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_FRAMES = re.compile(r"^[0-9]+(,[0-9]+)*$")
_LEVELS = ("studies", "series", "instances")
_VIEWS = ("metadata", "rendered", "thumbnail")
#: Request headers passed on to the PACS (never the caller's Authorization, cookies or Host).
FORWARDED = ("accept", "content-type")


def checked_path(path: str) -> Tuple[str, List[str]]:
    """``(op, segments)`` of a proxy path: ``[op/]level[/uid[/level/uid...]][/metadata|rendered|thumbnail|
    frames/<n,...>[/rendered]|bulkdata/...]`` with levels ``studies``, ``series``, ``instances``.

    Raises:
        HTTPException: 422 naming the segment that is not part of a DICOMweb resource path.
    """
    decoded = unquote(path)  # a second decoding: %252E%252E arrives as %2E%2E
    segments = decoded.split("/")
    op = segments.pop(0) if segments and segments[0] in OPS else ""
    if not segments or any(s in ("", ".", "..") or "\\" in s for s in segments):
        raise bad_input(422, f"proxy path {path[:100]!r} has an empty or dot segment; DICOMweb paths only")

    def wrong(segment: str):
        return bad_input(422, f"proxy path segment {segment[:80]!r} is not part of a DICOMweb resource path")

    i, n = 0, len(segments)
    if segments[0] not in _LEVELS:
        raise wrong(segments[0])
    while i < n:
        segment = segments[i]
        if segment in _LEVELS:
            if i + 1 < n and not _UID.fullmatch(segments[i + 1]):
                raise wrong(segments[i + 1])
            i += 2
        elif segment in _VIEWS and i == n - 1:
            i += 1
        elif segment == "frames" and i + 1 < n and _FRAMES.fullmatch(segments[i + 1]):
            i += 2
            if i < n and not (i == n - 1 and segments[i] in ("rendered", "thumbnail")):
                raise wrong(segments[i])
            i = n
        elif segment == "bulkdata" and all(re.fullmatch(r"[A-Za-z0-9._-]+", s) for s in segments[i + 1 :]):
            i = n
        else:
            raise wrong(segment)
    return op, segments


def _upstream(op: str, segments: List[str], query: str) -> str:
    studies = (settings.MONAI_LABEL_STUDIES or "").strip().rstrip("/")
    if not studies.startswith(("http://", "https://")):
        raise bad_input(404, "this server's studies are not a DICOMweb PACS: there is nothing to proxy")
    prefixes = {
        "qido": settings.MONAI_LABEL_QIDO_PREFIX,
        "wado": settings.MONAI_LABEL_WADO_PREFIX,
        "stow": settings.MONAI_LABEL_STOW_PREFIX,
    }
    prefix = prefixes.get(op) or ""
    if op == "qido" and segments[-1] == "metadata":  # some OHIF versions ask metadata through QIDO
        prefix = settings.MONAI_LABEL_WADO_PREFIX or ""
    path = "/".join(([prefix.strip("/")] if prefix.strip("/") else []) + segments)
    return f"{studies}/{path}" + (f"?{query}" if query else "")


def _auth():
    user = settings.MONAI_LABEL_DICOMWEB_USERNAME or getattr(settings, "MONAI_LABEL_DATASTORE_USERNAME", "")
    password = settings.MONAI_LABEL_DICOMWEB_PASSWORD or getattr(settings, "MONAI_LABEL_DATASTORE_PASSWORD", "")
    return (user, password) if user and password else None


def _send(method: str, url: str, headers: dict, body: Optional[bytes]) -> Response:
    try:
        answer = requests.request(
            method, url, headers=headers, data=body, auth=_auth(), timeout=PACS_TIMEOUT_S, allow_redirects=False
        )
    except requests.Timeout:
        raise bad_input(504, "the PACS did not answer in time") from None
    except requests.RequestException as error:
        raise bad_input(502, f"the PACS cannot be reached ({type(error).__name__})") from None
    kept = {k: v for k, v in answer.headers.items() if k.lower() == "content-type"}
    return Response(content=answer.content, status_code=answer.status_code, headers=kept)


def _headers(request: Request) -> dict:
    return {k: v for k, v in request.headers.items() if k.lower() in FORWARDED}


@router.get("/proxy/dicom/{path:path}", include_in_schema=False)
async def proxy_get(request: Request, path: str, user: User = Depends(RoleRequired(USER))):
    """QIDO-RS and WADO-RS (user)."""
    op, segments = checked_path(path)
    if op == "stow":
        raise bad_input(405, "STOW-RS takes POST")
    url = _upstream(op, segments, request.url.query)
    return await run_in_threadpool(_send, "GET", url, _headers(request), None)


@router.post("/proxy/dicom/{path:path}", include_in_schema=False)
async def proxy_post(request: Request, path: str, user: User = Depends(RoleRequired(ANNOTATOR))):
    """STOW-RS (annotator): to ``studies`` or ``studies/<uid>`` only."""
    op, segments = checked_path(path)
    if op in ("qido", "wado"):
        raise bad_input(405, f"{op} is read-only here: POST is STOW-RS (/proxy/dicom/stow/studies)")
    if segments[0] != "studies" or len(segments) > 2:
        raise bad_input(422, "POST through the proxy is STOW-RS only: /proxy/dicom/stow/studies[/<study uid>]")
    url = _upstream("stow", segments, "")
    return await run_in_threadpool(_send, "POST", url, _headers(request), await request.body())
