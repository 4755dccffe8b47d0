"""Routes replacing MONAI Label's model-file and info writes, which can damage what the app serves:

- ``PUT /model/{model}`` (stock: copies any upload over the served file — for a task still on its shipped
  checkpoint, over the app's own ``shipped/<task>/model.pt`` — and answers 500 for a task never trained):
  the upload must be a PyTorch checkpoint whose weights load into the task's network; it becomes the trained
  checkpoint in ``model_dir`` (atomically), with a ``model.json`` saying where it came from.
- ``DELETE /model/{model}`` (stock: renames the served file, the shipped one included): retires the trained
  checkpoint only (renamed ``model.pt.<time>.deleted``); the shipped one is served again.
- ``PUT /datastore/image/info`` and ``/datastore/label/info`` (stock: any JSON, 500 on bad JSON or an unknown
  image): a JSON object, for a known image, not touching the keys this app manages (class labels and predictions
  have their own API, where deleting needs an admin).
"""

import io
import os
import time

import torch
from fastapi import APIRouter, Depends, File, Form, UploadFile
from monailabel.endpoints.user.auth import User
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import file_checksum

from lib.access import ADMIN, ANNOTATOR, RoleRequired
from lib.errors import ImageNotFound, bad_input, refused
from lib.request_checks import RequestError, parse_object
from mri_label.core.atomic import atomic_write, atomic_write_json

router = APIRouter()
#: Info keys only the server writes: class labels and predictions (their own API), active-learning scores,
#: strategy picks, attribution and file bookkeeping, a final label's review (PUT /mri/review, lib.review) and the
#: measured results that change over time compares (lib.follow_up).
MANAGED_INFO_KEYS = ("class_labels", "predictions", "al_scores", "strategy", "name", "ts", "user", "review", "measured")


def _config(model: str):
    configs = getattr(app_instance(), "models", {})
    if model not in configs:
        raise bad_input(404, f"no model {model!r} takes weights here; models: {sorted(configs)}")
    return configs[model]


def _state_dict(data: bytes, model: str) -> dict:
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # pickle, zip and torch errors all mean the same to the sender
        raise bad_input(
            422, f"the upload for {model} is not a PyTorch checkpoint (torch.save of a state dict)"
        ) from None
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise bad_input(
            422, f"the upload for {model} holds no state dict (a dict of tensors, or {{'model': state dict}})"
        )
    return state


@router.put("/model/{model}", summary="Upload weights for a model (admin): checked against its network")
async def put_model(model: str, file: UploadFile = File(...), user: User = Depends(RoleRequired(ADMIN))):
    config = _config(model)
    state = _state_dict(await file.read(), model)
    try:
        config.network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).split("\n")[1:3]
        raise bad_input(
            422, f"the weights do not fit {model}'s network {config.network_spec}: {' '.join(first).strip()}"
        ) from None
    atomic_write(config.path, lambda f: torch.save({"model": state}, f))
    card = dict(
        config.card(),
        task=model,
        network=config.network_spec,
        checkpoint="model.pt",
        training={"source": "uploaded with PUT /model", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    )
    atomic_write_json(os.path.join(config.task_dir, "model.json"), card, indent=2, default=str)
    return {"checksum": file_checksum(config.path), "modified_time": int(os.stat(config.path).st_mtime)}


@router.delete("/model/{model}", summary="Retire a model's trained weights (admin); the shipped ones stay")
async def delete_model(model: str, user: User = Depends(RoleRequired(ADMIN))):
    config = _config(model)
    if not os.path.exists(config.path):
        if config.shipped_path:
            raise bad_input(
                409,
                f"{model} serves its shipped checkpoint, which is part of the app and is not deleted; "
                "start the server with --conf shipped_models none to serve none",
            )
        raise bad_input(404, f"{model} has no trained checkpoint to delete")
    stamp = time.strftime("%Y%m%d_%H%M%S")
    for name in ("model.pt", "model.json"):
        path = os.path.join(config.task_dir, name)
        if os.path.exists(path):
            os.replace(path, f"{path}.{stamp}.deleted")
    return {"retired": f"{config.path}.{stamp}.deleted", "serving": config.shipped_path}


def _info(info: str, image: str) -> dict:
    try:
        parsed = parse_object(info, "info")
    except RequestError as error:
        raise refused(error) from None
    managed = sorted(set(parsed) & set(MANAGED_INFO_KEYS))
    if managed:
        raise bad_input(422, f"info key(s) {managed} are managed by the server; class labels go through /classlabel")
    if not app_instance().datastore().get_image_uri(image):
        raise ImageNotFound(image)
    return parsed


@router.put("/datastore/image/info", summary="Update image info (annotator); server-managed keys refused")
async def put_image_info(image: str, info: str = Form("{}"), user: User = Depends(RoleRequired(ANNOTATOR))):
    app_instance().datastore().update_image_info(image, dict(_info(info, image), user=user.username))
    return {}


@router.put("/datastore/label/info", summary="Update label info (annotator); server-managed keys refused")
async def put_label_info(label: str, tag: str, info: str = Form("{}"), user: User = Depends(RoleRequired(ANNOTATOR))):
    parsed = _info(info, label)
    if not app_instance().datastore().get_label_uri(label, tag):
        raise bad_input(404, f"image {label!r} has no label tagged {tag!r}")
    app_instance().datastore().update_label_info(label, tag, dict(parsed, user=user.username))
    return {}
