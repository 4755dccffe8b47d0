"""HTTP API for class labels (the stock MONAI Label API has none).

``PUT /classlabel/{task}?image=ID`` with JSON ``{"label": "T2"}`` records a clinician's class for an image
in its datastore info (``class_labels.<task>``), where the task's trainer reads it;
``GET /classlabel/{task}?image=ID`` returns the recorded label and the latest prediction;
``DELETE /classlabel/{task}?image=ID`` withdraws the label (admins only, as other deletions).
Errors: unknown task or image -> 404, unknown class name -> 422 (the message lists the valid ones).
"""

from fastapi import APIRouter, Depends
from monailabel.endpoints.user.auth import User
from monailabel.interfaces.utils.app import app_instance
from pydantic import BaseModel

from lib.access import ADMIN, ANNOTATOR, USER, RoleRequired
from lib.datastore import update_info_entry
from lib.errors import ImageNotFound, bad_input

router = APIRouter(prefix="/classlabel", tags=["Class labels"])


class ClassLabel(BaseModel):
    """Body of a class correction."""

    label: str


def _check(task: str, image: str):
    instance = app_instance()
    classes = instance.classifier_classes().get(task)
    if classes is None:
        raise bad_input(
            404,
            f"task {task!r} is not a classifier of this server; classifiers: {sorted(instance.classifier_classes())}",
        )
    info = instance.datastore().get_image_info(image)
    if not info:
        raise ImageNotFound(image)
    return instance.datastore(), classes, info


@router.get("/{task}", summary="Get the class label and latest prediction of an image for a classifier task")
async def get_class_label(task: str, image: str, user: User = Depends(RoleRequired(USER))):
    _, _, info = _check(task, image)
    return {
        "image": image,
        "task": task,
        "label": (info.get("class_labels") or {}).get(task),
        "prediction": (info.get("predictions") or {}).get(task),
    }


@router.put("/{task}", summary="Record the correct class of an image for a classifier task")
async def put_class_label(task: str, image: str, body: ClassLabel, user: User = Depends(RoleRequired(ANNOTATOR))):
    datastore, classes, _ = _check(task, image)
    if body.label not in classes:
        raise bad_input(422, f"class {body.label!r} is not a class of {task}; valid classes: {list(classes)}")
    record = {"label": body.label, "source": "user", "user": user.username}
    update_info_entry(datastore, image, "class_labels", task, record)
    hook = getattr(app_instance(), "on_class_label", None)
    if hook is not None:  # counts towards the task's next fine-tuning run (--conf retrain_after)
        hook(task, image)
    return {"image": image, "task": task, "label": body.label}


@router.delete("/{task}", summary="Withdraw the class label of an image for a classifier task")
async def delete_class_label(task: str, image: str, user: User = Depends(RoleRequired(ADMIN))):
    datastore, _, _ = _check(task, image)
    update_info_entry(datastore, image, "class_labels", task, None)
    return {"image": image, "task": task, "label": None}
