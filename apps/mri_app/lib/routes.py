"""Routes this app adds to the MONAI Label server: the class-label API, and MONAI Label's train and infer
calls with their inputs checked first (4xx with a message instead of a 500), placed before the originals."""

import json
from typing import Optional

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, UploadFile
from monailabel.config import settings
from monailabel.endpoints.infer import ResultType, run_inference
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from lib.class_labels import router as class_label_router
from lib.conf import conf_bool
from lib.datastore import bad_input

train_router = APIRouter(tags=["Train"])
retrain_router = APIRouter(tags=["Active Learning"])
infer_router = APIRouter(tags=["Infer"])


@infer_router.post("/infer/{model}", summary="Run inference (MONAI Label's call, with its inputs checked first)")
async def infer_model(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    file: UploadFile = File(None),
    label: UploadFile = File(None),
    output: Optional[ResultType] = None,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    try:
        request = json.loads(params) if params else {}
    except ValueError:
        request = None
    if not isinstance(request, dict):
        raise bad_input(422, f"params must be a JSON object, got {params[:80]!r}")
    task = app_instance()._infers.get(model)
    if task is not None and task.type == "classification" and output == ResultType.image:
        try:
            wants_map = conf_bool(request, "cam", False)
        except ValueError as error:
            raise bad_input(422, str(error).replace("--conf ", "params ")) from None
        if not wants_map:
            raise bad_input(422, f"{model} answers in JSON: ask output=json, or params {{\"cam\": true}} for its activation map")
    return run_inference(background_tasks, model, image, session_id, params, file, label, output)


@train_router.post("/train/{model}", summary="Run the training task of a model (404 for an unknown model)")
async def train_model(
    model: str,
    params: Optional[dict] = None,
    run_sync: Optional[bool] = False,
    enqueue: Optional[bool] = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
):
    from monailabel.endpoints.train import run_model

    trainers = app_instance().info().get("trainers", {})
    if model not in trainers:
        raise bad_input(404, f"no train task {model!r}; train tasks: {sorted(trainers)}")
    return run_model(model, params, run_sync, enqueue)


@retrain_router.get("/activelearning/stats", summary="Automatic fine-tuning runs: counters, pending runs and every run's record")
async def retrain_stats(user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    scheduler = getattr(app_instance(), "retrain", None)
    if scheduler is None:
        return {"enabled": False, "tasks": {}, "runs": []}
    return dict(scheduler.stats(), enabled=True)


def install(server) -> None:
    """Add our routes to the FastAPI ``server`` once; the train and infer routes go before MONAI Label's own."""
    if getattr(server.state, "mri_label_routes", False):
        return
    server.include_router(class_label_router, prefix=settings.MONAI_LABEL_API_STR)
    routes = server.router.routes
    before = len(routes)
    server.include_router(train_router, prefix=settings.MONAI_LABEL_API_STR)
    server.include_router(retrain_router, prefix=settings.MONAI_LABEL_API_STR)
    server.include_router(infer_router, prefix=settings.MONAI_LABEL_API_STR)
    added = routes[before:]
    del routes[before:]
    routes[0:0] = added
    server.state.mri_label_routes = True
