"""Routes this app adds to the MONAI Label server: the class-label API, and MONAI Label's train and infer
calls with their inputs checked first (4xx with a message instead of a 500), placed before the originals;
MONAI Label's ``POST /reload`` for admins only; the guarded model-file and info writes of
:mod:`lib.store_routes`; model history, rollback and label review (:mod:`lib.mri_routes`); access control
(:mod:`lib.access`) and log redaction (:mod:`lib.log_privacy`) over all routes."""

import os
import shutil
import tempfile
from typing import Optional

import torch
from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, HTTPException, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from monailabel.config import settings
from monailabel.endpoints.infer import ResultType
from monailabel.endpoints.user.auth import User
from monailabel.interfaces.utils.app import app_instance

from lib import access, log_privacy, stock
from lib.access import RoleRequired
from lib.class_labels import router as class_label_router
from lib.conf import conf_bool
from lib.datastore import check_image_id
from lib.errors import bad_input, refused
from lib.guard_routes import find_session, max_upload_bytes, rank_of, receive, remove
from lib.guard_routes import router as guard_router
from lib.infers import INFER_LOCK
from lib.mri_routes import router as mri_router
from lib.pacs_proxy import router as pacs_proxy_router
from lib.report import FORMATS, answer_bytes, answer_name, report_options, write_report
from lib.request_checks import RequestError, check_depth, check_infer_params, parse_object
from lib.store_routes import router as store_router
from lib.train_checks import check_train_request
from lib.uncertainty import wants_uncertainty

train_router = APIRouter(tags=["Train"])
retrain_router = APIRouter(tags=["Active Learning"])
infer_router = APIRouter(tags=["Infer"])
admin_router = APIRouter()

REPORT = "report"
"""``output=report``: the one-page report of the result (:mod:`lib.report`), besides MONAI Label's outputs."""
OUTPUTS = tuple(kind.value for kind in ResultType) + (REPORT,)
"""What ``output`` of ``POST /infer/<task>`` may be: MONAI Label's ``ResultType`` values and ``report``."""


def check_output(output: Optional[str]):
    """``output`` as the infer runs it: None, a ``ResultType``, or :data:`REPORT`; 422 naming the values otherwise
    (FastAPI's own check of the ``ResultType`` enum is replaced: it would refuse ``report``)."""
    if output is None:
        return None
    if output not in OUTPUTS:
        raise bad_input(422, f"output must be one of {', '.join(OUTPUTS)}; got {output!r}")
    return REPORT if output == REPORT else ResultType(output)


@admin_router.post("/reload", include_in_schema=False)
def reload(user: User = Depends(RoleRequired(access.ADMIN))):
    """MONAI Label's app reload (stock: open to anyone), for admins."""
    from monailabel.interfaces.utils.app import clear_cache

    clear_cache()
    return {}


@infer_router.post("/infer/{model}", summary="Run inference (MONAI Label's call, with its inputs checked first)")
async def infer_model(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: Optional[str] = Query(None, description=f"what the answer holds: {', '.join(OUTPUTS)}"),
    user: User = Depends(RoleRequired(access.USER)),
):
    kind = check_output(output)
    try:
        request = parse_object(params, "params")
    except RequestError as error:
        raise refused(error) from None
    if image:  # MONAI Label would also take a path on the server's disk here
        check_image_id(image)
    elif file is None and not session_id:
        raise bad_input(422, "no image given: pass an image id (image=...) or upload a file")
    session = None
    if session_id and file is None:  # as MONAI Label: a session's image replaces image= (which names it locally)
        try:
            session = find_session(session_id)
        except HTTPException:
            if not image:
                raise
    task = stock.infers(app_instance()).get(model)
    if task is not None and task.type == "classification" and kind == ResultType.image:
        try:
            wants_map = conf_bool(request, "cam", False, where="params")
        except ValueError as error:
            raise bad_input(422, str(error)) from None
        if not wants_map:
            raise bad_input(
                422, f'{model} answers in JSON: ask output=json, or params {{"cam": true}} for its activation map'
            )
    try:
        uncertainty = wants_uncertainty(request)  # a JSON boolean, else 422 (the infer tasks read it alike)
    except RequestError as error:
        raise refused(error) from None
    if uncertainty and task is not None and not getattr(task, "answers_uncertainty", False):
        able = sorted(
            name for name, t in stock.infers(app_instance()).items() if getattr(t, "answers_uncertainty", False)
        )
        raise bad_input(422, f"params uncertainty: {model} answers no uncertainty map; tasks that do: {able}")
    try:
        check_infer_params(
            request,
            may_write_labels=rank_of(user) >= access.rank(access.ANNOTATOR),
            from_datastore=bool(image) and file is None and session is None,
            gpus=torch.cuda.device_count(),
        )
    except RequestError as error:
        raise refused(error) from None
    if kind == REPORT and task is not None:  # an unknown task is answered 404 by the infer itself
        configs = app_instance().models
        reporting = {name: c.measures for name, c in configs.items() if getattr(c, "measures", None)}
        try:
            report_options(getattr(configs.get(model), "measures", None), model, reporting, request)
        except ValueError as error:
            raise bad_input(422, str(error)) from None
    # Off the event loop, so uploads, class labels and status calls are answered while a model runs; one
    # inference at a time (the networks are shared and reloaded in place when training publishes).
    return await run_in_threadpool(
        _infer_one_at_a_time,
        background_tasks,
        model,
        image,
        session_id if session else "",
        request,
        file,
        label,
        kind,
    )


def _infer_one_at_a_time(*args):
    with INFER_LOCK:
        return run_inference(*args)


def run_inference(background_tasks, model: str, image: str, session_id: str, params: dict, file, label, output):
    """MONAI Label's ``run_inference`` with the uploads under ``--conf max_upload_mb`` (413) and their temporary
    files removed on every path (stock: left behind whenever the inference fails); ``output`` :data:`REPORT`
    answers the result's one-page report (:func:`_report`)."""
    instance = app_instance()
    temporary = []
    try:
        request = {"model": model, "image": image}
        if file is not None:
            request["image"] = receive(file, "the uploaded image", max_upload_bytes())
            temporary.append(request["image"])
        if label is not None:
            request["label"] = receive(label, "the uploaded label", max_upload_bytes())
            temporary.append(request["label"])
            if request["label"].endswith(".bin"):  # OHIF scribbles: made an image on the image's grid
                from monailabel.datastore.utils.convert import binary_to_image

                request["label"] = binary_to_image(instance.datastore().get_image_uri(image), request["label"])
                temporary.append(request["label"])
        request.update(stock.infer_config(instance))
        request.update(params)
        if session_id and file is None:
            session = find_session(session_id, update_ts=True)
            request["image"], request["session"] = session.image, session.to_json()
        result = instance.infer(request)
        if result is None:
            raise bad_input(422, f"{model} returned no result for this input")
        if output == REPORT:
            return _report(instance, model, image, request, result, params, temporary)
        if output == ResultType.dicom_seg:
            result["dicom_seg"] = _dicom_seg(instance, image, result, params)
            background_tasks.add_task(remove, result["dicom_seg"])
        answer = stock.send_infer_response(instance.datastore(), result, output, background_tasks)
        if output == ResultType.json:  # nothing of the result file is sent: gone before the answer (stock: after it)
            produced = result.get("file") or result.get("label")
            if isinstance(produced, str) and os.path.isfile(produced):
                temporary.append(produced)
        return answer
    finally:
        for path in temporary:
            remove(path)


def _report(instance, model: str, image: str, request: dict, result: dict, params: dict, temporary: list) -> Response:
    """The answer to ``output=report``: the PDF page (shown inline), or with params ``report_format`` ``zip`` a ZIP
    of ``report.pdf``, ``report.png`` and ``report.json``; the result file and the page's folder are removed."""
    config = instance.models[model]
    _, age, sex, form = report_options(config.measures, model, {}, params)
    produced = result.get("file") if result.get("file") is not None else result.get("label")
    if produced is None:
        raise bad_input(422, f"{model} returned no label map to report on")
    if isinstance(produced, str):
        temporary.append(produced)
    uploaded = os.path.isabs(request["image"]) and os.path.exists(request["image"])
    path = request["image"] if uploaded else instance.datastore().get_image_uri(image)
    folder = tempfile.mkdtemp(prefix="mri-label-report-")
    try:
        checkpoint = stock.infers(instance)[model].get_path()
        written = write_report(
            model,
            config.measures,
            path,
            produced,  # the label map in the input's grid: a file, or the array itself
            result.get("params") or {},
            checkpoint,
            folder,
            image if image and not uploaded else "uploaded image",
            age=age,
            sex=sex,
        )
        body = answer_bytes(written["files"], form)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    name = f"{answer_name(image if not uploaded else None, model)}.{form}"
    disposition = "inline" if form == "pdf" else "attachment"
    return Response(
        content=body, media_type=FORMATS[form], headers={"Content-Disposition": f'{disposition}; filename="{name}"'}
    )


def _dicom_seg(instance, image: str, result: dict, params: dict) -> str:
    """The result as DICOM-SEG (MONAI Label's conversion); 422 where that cannot be made (stock: 500)."""
    from monailabel.datastore.dicom import DICOMWebDatastore
    from monailabel.datastore.utils.convert import nifti_to_dicom_seg

    if not isinstance(instance.datastore(), DICOMWebDatastore) or not image:
        raise bad_input(422, "output=dicom_seg needs a DICOMweb datastore and a series id (image=...)")
    if not params.get("label_info"):
        raise bad_input(422, "output=dicom_seg needs params label_info (the segments to name)")
    uri = instance.datastore().get_image_uri(image)
    series = next((uri[: -len(s)] for s in (".nii.gz", ".nii", ".nrrd") if uri.endswith(s)), uri)
    return nifti_to_dicom_seg(series, result.get("file") or result.get("label"), params.get("label_info"), use_itk=True)


@infer_router.post("/infer/wsi/{model}", include_in_schema=False)
@infer_router.post("/infer/wsi_v2/{model}", include_in_schema=False)
async def infer_wsi(model: str, user: User = Depends(RoleRequired(access.USER))):
    """MONAI Label's whole-slide-image calls (stock: run on the event loop, past the infer lock): none here."""
    raise bad_input(404, "this server serves no whole-slide-image (WSI) models; use POST /infer/<model>")


@train_router.post("/train/{model}", summary="Run the training task of a model (404 for an unknown model)")
async def train_model(
    model: str,
    params: Optional[dict] = None,
    run_sync: Optional[bool] = False,
    enqueue: Optional[bool] = False,
    user: User = Depends(RoleRequired(access.ADMIN)),
):
    from monailabel.endpoints.train import run_model

    check_train_request(model, params or {})
    if run_sync:
        return await run_in_threadpool(run_model, model, params, run_sync, enqueue)
    return run_model(model, params, run_sync, enqueue)


@retrain_router.post("/activelearning/{strategy}", summary="Next image to label, by an active-learning strategy (user)")
async def next_sample(strategy: str, params: Optional[dict] = None, user: User = Depends(RoleRequired(access.USER))):
    """MONAI Label's call, off the event loop (stock: on it, so a strategy that runs models stalls every other
    request); strategies that run a model take the infer lock for each image they score (``ModelScorer``)."""
    from monailabel.endpoints.activelearning import sample

    try:
        check_depth(params or {}, "params")
    except RequestError as error:
        raise refused(error) from None
    strategies = app_instance().info().get("strategies", {})
    if strategy not in strategies:
        raise bad_input(404, f"no active-learning strategy {strategy!r}; strategies: {sorted(strategies)}")
    return await run_in_threadpool(sample, strategy, params, user.username)


@retrain_router.get(
    "/activelearning/stats", summary="Automatic fine-tuning runs: counters, pending runs and every run's record"
)
async def retrain_stats(user: User = Depends(RoleRequired(access.USER))):
    scheduler = getattr(app_instance(), "retrain", None)
    if scheduler is None:
        return {"enabled": False, "tasks": {}, "runs": []}
    return dict(scheduler.stats(), enabled=True)


def install(server, cors_origins=()) -> None:
    """Add our routes to the FastAPI ``server`` once; the train, infer and reload routes go before MONAI Label's own.
    Then apply :func:`lib.access.install` and :func:`lib.log_privacy.install`, and admit cross-origin calls from
    loopback pages and ``cors_origins`` only (:func:`lib.stock.restrict_cors`)."""
    stock.restrict_cors(server, cors_origins)
    if getattr(server.state, "mri_label_routes", False):
        return
    server.include_router(class_label_router, prefix=settings.MONAI_LABEL_API_STR)
    routes = server.router.routes
    before = len(routes)
    server.include_router(train_router, prefix=settings.MONAI_LABEL_API_STR)
    server.include_router(retrain_router, prefix=settings.MONAI_LABEL_API_STR)
    server.include_router(infer_router, prefix=settings.MONAI_LABEL_API_STR)
    server.include_router(admin_router)
    if settings.MONAI_LABEL_AUTH_ENABLE:  # as MONAI Label's own /auth routes: there only with auth on
        server.include_router(access.login_router)
    server.include_router(store_router, prefix=settings.MONAI_LABEL_API_STR)
    server.include_router(guard_router, prefix=settings.MONAI_LABEL_API_STR)
    server.include_router(pacs_proxy_router, prefix=settings.MONAI_LABEL_API_STR)
    server.include_router(mri_router, prefix=settings.MONAI_LABEL_API_STR)
    added = routes[before:]
    del routes[before:]
    routes[0:0] = added
    access.install(server)
    log_privacy.install()
    server.state.mri_label_routes = True
