"""Routes under ``/mri/``: a task's model history and rollback (:mod:`lib.history`), and the review of ``final``
labels (:mod:`lib.review`).

- ``GET /mri/history/{task}`` (user): ``{"task", "served": checkpoint info, "entries": [newest first]}``.
- ``POST /mri/rollback/{task}`` (admin): serve the newest archived checkpoint again; 409 with no archive or while a
  training of the task runs.
- ``PUT /mri/review/{image}`` (reviewer): ``{"status": "approved" | "needs_changes", "comment": "..."}``.
- ``GET /mri/review?status=pending|approved|needs_changes`` (reviewer): the final labels in that state.
"""

import os
from typing import Any, Optional

from fastapi import APIRouter, Body, Depends
from fastapi.concurrency import run_in_threadpool
from monailabel.config import settings
from monailabel.endpoints.user.auth import User
from monailabel.interfaces.utils.app import app_instance

from lib import history, review
from lib.access import ADMIN, REVIEWER, USER, RoleRequired
from lib.datastore import check_image_id
from lib.errors import bad_input
from lib.infers import checkpoint_info

router = APIRouter(prefix="/mri", tags=["Model history and review"])


def _config(task: str):
    configs = getattr(app_instance(), "models", {})
    if task not in configs:
        raise bad_input(404, f"no task {task!r} here; tasks: {sorted(configs)}")
    return configs[task]


def served_checkpoint(config) -> Optional[dict]:
    """Checkpoint info (:func:`lib.infers.checkpoint_info`) of what the task serves now: its trained checkpoint, else
    its shipped one, else None."""
    existing = [p for p in config.serving_paths if p and os.path.exists(p)]
    return checkpoint_info(existing[-1]) if existing else None


def training_running(task: str) -> bool:
    """Whether a training of ``task`` runs: one of MONAI Label's background trainings (each runs in its own process)
    or one in this process (``run_sync``)."""
    from monailabel.utils.async_tasks.utils import tasks

    from lib.trainers.base import training_in_process

    for record in tasks("train"):
        request = record.get("request") or {}
        if record.get("status") == "RUNNING" and request.get("model", task) == task:
            return True
    return training_in_process(task)


def _user_name(user: User) -> str:
    return (user.username or "anonymous") if settings.MONAI_LABEL_AUTH_ENABLE else "anonymous"


@router.get("/history/{task}", summary="A task's model history: fine-tune decisions, rollbacks, archives (user)")
async def get_history(task: str, user: User = Depends(RoleRequired(USER))):
    config = _config(task)
    entries = history.read_history(config.task_dir)
    return {"task": task, "served": served_checkpoint(config), "entries": entries[::-1]}


@router.post("/rollback/{task}", summary="Serve the task's newest archived checkpoint again (admin)")
async def rollback(task: str, user: User = Depends(RoleRequired(ADMIN))):
    config = _config(task)
    if training_running(task):
        raise bad_input(409, f"a training of {task} is running; roll back once it has ended (or stop it)")
    try:
        entry = await run_in_threadpool(history.rollback, config.task_dir, config.history_keep, _user_name(user))
    except history.NoArchive:
        raise bad_input(409, f"{task} has no archived checkpoint to roll back to") from None
    return {"task": task, "served": served_checkpoint(config), "entry": entry}


@router.put("/review/{image}", summary="Review an image's final label: approved or needs_changes (reviewer)")
async def put_review(image: str, body: Any = Body(None), user: User = Depends(RoleRequired(REVIEWER))):
    check_image_id(image)
    stored = await run_in_threadpool(review.set_review, app_instance().datastore(), image, body, _user_name(user))
    return {"image": image, "review": stored}


@router.get("/review", summary="Images whose final label is pending review, approved or needs changes (reviewer)")
async def list_reviews(status: Optional[str] = None, user: User = Depends(RoleRequired(REVIEWER))):
    instance = app_instance()
    found = await run_in_threadpool(review.reviews, instance.datastore(), instance.segmentation_labels(), status)
    return {"status": status, "count": len(found), "images": found}
