"""Routes replacing MONAI Label's upload, session and train-all calls, so that every route MONAI Label mounts goes
through this app's rules (issue 17):

- ``PUT /session/`` (stock: unpacks with :func:`shutil.unpack_archive`, so members named ``../x``, absolute paths
  and links write outside the session folder; no size limit): uploads counted against ``--conf max_upload_mb``,
  archives checked member by member before anything is written (:mod:`lib.archives`), temporary files removed on
  every path. ``GET``/``DELETE /session/{id}``: the id must be a session id; answers name no server path.
- ``PUT /datastore/image`` and ``/datastore/label`` (stock: 500 on non-JSON ``params``; the whole body left in
  the temporary folder when refused; ``params`` may set server-managed keys; an image with labels replaced by any
  annotator): ``params`` a JSON object of bounded depth without managed keys; an image that has labels or class
  labels replaced only by an admin asking ``replace=true`` (else 409); the upload streamed to a temporary file
  under ``max_upload_mb`` (413) and removed whatever happens; the checks and writes off the event loop.
- ``PUT /datastore/updatelabelinfo`` (stock's hidden twin of ``/datastore/label/info``): the same checks.
- ``POST /train/`` (stock: queues every task past this app's checks): each task's params checked first.
- ``GET /datastore/dataset`` (stock: built on the event loop, the ZIP left in the temporary folder): built on a
  worker thread and removed once sent.
- ``GET /logs/gpu`` (stock: 500 without ``nvidia-smi``): 404 naming the cause.
- ``GET /logs/`` (stock: ``<app>/logs/app.log``, written by every server started from the app folder): this
  server's own log file (:mod:`lib.server_state`), read off the event loop.
"""

import os
import re
import shutil
import subprocess
import tempfile
from typing import List, Optional, cast

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from monailabel.endpoints.user.auth import User
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.utils.app import app_instance
from starlette.background import BackgroundTask

from lib import stock
from lib.access import ADMIN, ANNOTATOR, USER, RoleRequired, rank
from lib.archives import DEFAULT_MAX_MEMBERS, ArchiveError, safe_unpack
from lib.datastore import check_image_id, check_label_tag
from lib.errors import bad_input, refused
from lib.request_checks import RequestError, parse_object
from lib.store_routes import MANAGED_INFO_KEYS, put_label_info
from lib.train_checks import check_train_request

router = APIRouter()
_SESSION_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SUFFIX = re.compile(r"((\.[A-Za-z0-9]{1,8}){1,2})$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
DEFAULT_MAX_UPLOAD_BYTES = 2048 * 2**20


def max_upload_bytes() -> int:
    """Largest upload this server takes (``--conf max_upload_mb``, kept by the datastore)."""
    return int(getattr(app_instance().datastore(), "max_upload_bytes", DEFAULT_MAX_UPLOAD_BYTES))


def suffix_of(filename: Optional[str], default: str = ".nii.gz") -> str:
    """The file name's extension(s) (``.nii.gz``), letters and digits only; ``default`` when it has none."""
    match = _SUFFIX.search(os.path.basename(filename or ""))
    return match.group(1).lower() if match else default


def receive(
    upload: UploadFile, what: str, max_bytes: int, folder: Optional[str] = None, name: Optional[str] = None
) -> str:
    """Copy ``upload`` to a new temporary file (or ``folder/name``), refusing it (413) past ``max_bytes``.

    Blocking: call it off the event loop. The file is removed again when the copy is refused or fails.
    """
    if name is None:
        fd, path = tempfile.mkstemp(prefix="mri-label-upload-", suffix=suffix_of(upload.filename), dir=folder)
    else:
        path = os.path.join(cast(str, folder), name)  # folder comes with name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            copied = 0
            upload.file.seek(0)
            while True:
                chunk = upload.file.read(1 << 20)
                if not chunk:
                    break
                copied += len(chunk)
                if copied > max_bytes:
                    raise bad_input(
                        413,
                        f"{what} is larger than {max_bytes / 2**20:.0f} MB, "
                        "the most this server accepts (--conf max_upload_mb)",
                    )
                out.write(chunk)
        return path
    except BaseException:
        remove(path)
        raise


def remove(path: Optional[str]) -> None:
    """Remove a temporary file or folder, if it is there."""
    if path and os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif path and os.path.lexists(path):
        os.remove(path)


# ------------------------------------------------------------------------------------------------- sessions


def _session_answer(session_id: str, info) -> dict:
    """A session as clients see it: its id, times and the image's file name (no server path)."""
    return {
        "session_id": session_id,
        "session_info": {
            "name": info.name,
            "image": os.path.basename(str(info.image)),
            "create_ts": info.create_ts,
            "last_access_ts": info.last_access_ts,
            "expiry": info.expiry,
        },
    }


def _store():
    sessions = stock.sessions(app_instance())
    if sessions is None:
        raise bad_input(406, "sessions are off on this server")
    return sessions


def find_session(session_id: str, update_ts: bool = False):
    if not _SESSION_ID.fullmatch(session_id or ""):
        raise bad_input(422, f"session id {session_id[:80]!r} is not a session id (a UUID)")
    info = _store().get_session(session_id, update_ts=update_ts)
    if not info:
        raise bad_input(404, f"no session {session_id!r}")
    return info


def _create_session(files: List[UploadFile], uncompress: bool, expiry: int) -> dict:
    sessions = _store()
    limit = max_upload_bytes()
    received = tempfile.mkdtemp(prefix="mri-label-session-")
    try:
        paths, left = [], limit
        for index, upload in enumerate(files):
            base = os.path.basename(upload.filename or "")
            name = base if _FILE_NAME.fullmatch(base) and ".." not in base else f"file{index}{suffix_of(base)}"
            if os.path.exists(os.path.join(received, name)):
                name = f"file{index}{suffix_of(base)}"
            path = receive(upload, "the session upload", left, received, name)
            left -= os.path.getsize(path)
            paths.append(path)
        if uncompress:
            if len(paths) != 1:
                raise bad_input(422, f"uncompress=true takes one archive, got {len(paths)} files")
            unpacked = os.path.join(received, "unpacked")
            try:
                safe_unpack(paths[0], unpacked, max_members=DEFAULT_MAX_MEMBERS, max_bytes=limit)
            except ArchiveError as error:
                raise bad_input(413 if error.too_large else 422, str(error)) from None
            remove(paths[0])
            source = unpacked
        else:
            source = paths[0] if len(paths) == 1 else received
        if source == received:  # add_session moves the folder itself: give it one of its own
            source = tempfile.mkdtemp(prefix="mri-label-session-files-")
            os.rmdir(source)
            shutil.move(received, source)
            received = source
        session_id, info = sessions.add_session(source, expiry, False)
        return _session_answer(session_id, info)
    finally:
        remove(received)


@router.put("/session/", summary="Create a session from uploaded files; archives checked member by member (user)")
async def create_session(
    uncompress: bool = False,
    expiry: int = 0,
    files: List[UploadFile] = File(...),
    user: User = Depends(RoleRequired(USER)),
):
    if expiry < 0:
        raise bad_input(422, f"expiry must be >= 0 seconds, got {expiry}")
    if not files:
        raise bad_input(422, "no files given")
    if len(files) > DEFAULT_MAX_MEMBERS:
        raise bad_input(413, f"at most {DEFAULT_MAX_MEMBERS} files per session")
    return await run_in_threadpool(_create_session, files, uncompress, expiry)


@router.get("/session/{session_id}", summary="A session's times and image name, or its image (user)")
async def get_session(
    session_id: str, update_ts: bool = False, image: bool = False, user: User = Depends(RoleRequired(USER))
):
    info = find_session(session_id, update_ts)
    if image:
        if not os.path.isfile(info.image):
            raise bad_input(409, f"session {session_id} holds a folder of files, not one image")
        return FileResponse(info.image, filename=os.path.basename(info.image))
    return _session_answer(session_id, info)


@router.delete("/session/{session_id}", summary="Delete a session (user)")
async def delete_session(session_id: str, user: User = Depends(RoleRequired(USER))):
    info = find_session(session_id)
    _store().remove_session(session_id)
    return _session_answer(session_id, info)


# ------------------------------------------------------------------------------------------ datastore writes


def _has_labels(datastore, image: str) -> bool:
    """Whether ``image`` has any stored label or class label."""
    info = datastore.get_image_info(image) or {}
    return bool(datastore.get_labels_by_image_id(image)) or bool(info.get("class_labels"))


def _add_image(image: Optional[str], params: dict, upload: UploadFile, replace: bool, user: User) -> dict:
    datastore = app_instance().datastore()
    if image and datastore.get_image_uri(image) and _has_labels(datastore, image):
        if not replace:
            raise bad_input(
                409,
                f"image {image!r} has labels; replacing it would orphan them. An admin may replace it "
                "with replace=true (its labels and class labels are dropped)",
            )
        if rank_of(user) < rank(ADMIN):
            raise bad_input(403, f'Role "{ADMIN}" (or a higher one) is required to replace an image that has labels')
    path = receive(upload, f"uploaded image {image or ''!r}".replace(" ''", ""), max_upload_bytes())
    try:
        if image and replace and datastore.get_image_uri(image):
            for tag in list(datastore.get_labels_by_image_id(image)):
                datastore.remove_label(image, tag)
        info = dict(params, user=user.username) if user.username else dict(params)
        return {"image": datastore.add_image(image or "", path, info)}
    finally:
        remove(path)


def rank_of(user: User) -> int:
    """The caller's highest role (admin when auth is off: MONAI Label's default user holds every role)."""
    from monailabel.config import settings

    if not settings.MONAI_LABEL_AUTH_ENABLE:
        return rank(ADMIN)
    return max((rank(r) for r in user.roles), default=-1)


def _checked_params(params: str, what: str = "params") -> dict:
    try:
        parsed = parse_object(params, what)
    except RequestError as error:
        raise refused(error) from None
    managed = sorted(set(parsed) & set(MANAGED_INFO_KEYS))
    if managed:
        raise bad_input(422, f"{what} key(s) {managed} are managed by the server; class labels go through /classlabel")
    return parsed


@router.put("/datastore/image", summary="Upload an image (annotator); an image with labels: admin and replace=true")
@router.put("/datastore/", include_in_schema=False)
async def put_image(
    image: Optional[str] = None,
    params: str = Form("{}"),
    replace: bool = False,
    file: UploadFile = File(...),
    user: User = Depends(RoleRequired(ANNOTATOR)),
):
    parsed = _checked_params(params)
    if not image:  # MONAI Label names the image after the upload's file name
        name = os.path.basename(file.filename or "")
        suffix = suffix_of(name, "")
        image = name[: -len(suffix)] if suffix and name.lower().endswith(suffix) else name
        if not image:
            raise bad_input(422, "no image id: pass image=<id> or upload a file with a name")
    check_image_id(image)
    return await run_in_threadpool(_add_image, image, parsed, file, replace, user)


def _save_label(image: str, tag: str, params: dict, upload: UploadFile) -> dict:
    instance = app_instance()
    path = receive(upload, f"label for image {image!r}", max_upload_bytes())
    try:
        label_id = instance.datastore().save_label(image, path, tag, params)
    finally:
        remove(path)
    answer = instance.on_save_label(image, label_id) or {}
    answer.update({"image": image, "label": label_id})
    return answer


@router.put("/datastore/label", summary="Save a label (annotator); params a JSON object without server-managed keys")
async def put_label(
    image: str,
    params: str = Form("{}"),
    tag: str = DefaultLabelTag.FINAL.value,
    label: UploadFile = File(...),
    user: User = Depends(RoleRequired(ANNOTATOR)),
):
    parsed = _checked_params(params)
    check_image_id(image)
    check_label_tag(tag or DefaultLabelTag.FINAL.value)
    return await run_in_threadpool(_save_label, image, tag or DefaultLabelTag.FINAL.value, parsed, label)


@router.put("/datastore/updatelabelinfo", include_in_schema=False)
async def update_label_info(
    label: str, tag: str, params: str = Form("{}"), user: User = Depends(RoleRequired(ANNOTATOR))
):
    """MONAI Label's hidden twin of ``PUT /datastore/label/info``, with the same checks."""
    return await put_label_info(label, tag, params, user)


@router.get("/datastore/dataset", summary="The labelled data as a ZIP (annotator); the ZIP is removed once sent")
async def download_dataset(limit_cases: Optional[int] = None, user: User = Depends(RoleRequired(ANNOTATOR))):
    """MONAI Label's dataset ZIP, made off the event loop (stock: on it) and removed after sending (stock: every
    ZIP stays in the temporary folder)."""
    if limit_cases is not None and limit_cases < 1:
        raise bad_input(422, f"limit_cases must be >= 1, got {limit_cases}")
    datastore = app_instance().datastore()
    if not datastore.datalist():
        raise bad_input(404, "no labelled images: the dataset ZIP would be empty")
    path = await run_in_threadpool(datastore.get_dataset_archive, limit_cases)
    return FileResponse(
        path, media_type="application/zip", filename="dataset.zip", background=BackgroundTask(remove, path)
    )


# ------------------------------------------------------------------------------------------------- others


@router.post("/train/", include_in_schema=False)
async def train_all(
    params: Optional[dict] = None, run_sync: Optional[bool] = False, user: User = Depends(RoleRequired(ADMIN))
):
    """MONAI Label's "train every task", each task's params checked as ``POST /train/<task>`` checks them."""
    instance = app_instance()
    for task in instance.info().get("trainers", {}):
        task_params = dict(params or {})
        own = task_params.pop(task, None)
        for other in instance.info().get("trainers", {}):
            task_params.pop(other, None)
        check_train_request(task, dict(task_params, **(own if isinstance(own, dict) else {})))
    return stock.train_all(params, run_sync)


@router.get("/logs/", include_in_schema=False)
async def server_log(
    lines: Optional[int] = 300,
    html: Optional[bool] = True,
    text: Optional[bool] = False,
    refresh: Optional[int] = 0,
    user: User = Depends(RoleRequired(ADMIN)),
):
    """MONAI Label's log view of this server's own log file (:mod:`lib.server_state`; stock: ``<app>/logs/app.log``,
    which every server started from the app folder writes)."""
    if lines is None or lines < 0:
        raise bad_input(422, f"lines must be >= 0 (0: the whole file), got {lines}")
    path = app_instance().log_file
    if not os.path.isfile(path):
        raise bad_input(404, "this server has written no log file yet")
    return await run_in_threadpool(stock.log_view, path, lines, html, text, refresh)


@router.get("/logs/gpu", include_in_schema=False)
async def gpu_info(user: User = Depends(RoleRequired(ADMIN))):
    """``nvidia-smi``'s report; 404 where there is none (stock: 500)."""
    if not shutil.which("nvidia-smi"):
        raise bad_input(404, "no nvidia-smi on this server (no NVIDIA GPU driver)")
    try:
        done = await run_in_threadpool(subprocess.run, ["nvidia-smi"], capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        raise bad_input(504, "nvidia-smi did not answer within 20 s") from None
    return Response(content=done.stdout.decode("utf-8", "replace"), media_type="text/plain")
