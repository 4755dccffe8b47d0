"""Routes this app adds to the MONAI Label server: the class-label API and a checked train call."""

from typing import Optional

from fastapi import APIRouter, Depends
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from lib.class_labels import router as class_label_router
from lib.datastore import bad_input

train_router = APIRouter(tags=["Train"])


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


def install(server) -> None:
    """Add our routes to the FastAPI ``server`` once; the train route goes before MONAI Label's own."""
    if getattr(server.state, "mri_label_routes", False):
        return
    server.include_router(class_label_router, prefix=settings.MONAI_LABEL_API_STR)
    routes = server.router.routes
    before = len(routes)
    server.include_router(train_router, prefix=settings.MONAI_LABEL_API_STR)
    added = routes[before:]
    del routes[before:]
    routes[0:0] = added
    server.state.mri_label_routes = True
