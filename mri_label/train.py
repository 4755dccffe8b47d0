"""``mri-label train TASK --studies DIR``: train a task with its recipe (:mod:`mri_label.recipes`) on a
datastore's training subjects, evaluate it on the held-out subjects and record both in ``model.json``,
the way the shipped checkpoints were made. It writes into ``--model-dir`` only, never into the shipped models.
"""

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Dict, Optional

from mri_label.app_path import app_class
from mri_label.core.atomic import atomic_write_json
from mri_label.core.splits import ensure_split
from mri_label.evaluate import evaluate
from mri_label.recipes import train_request
from mri_label.sources import image_source


def train(
    task: str,
    studies: str,
    model_dir: str,
    epochs: Optional[int] = None,
    held_out: bool = True,
    progress: Callable[[str], None] = print,
    learning_rate: Optional[float] = None,
    patience: Optional[int] = None,
    conf: Optional[Dict[str, str]] = None,
) -> Dict:
    """Train ``task`` on ``studies`` into ``model_dir/<task>/model.pt``; return a summary.

    Args:
        task: task name (``sequence``, ``hippocampus``...).
        studies: datastore folder (e.g. written by ``mri-label import``).
        model_dir: the app's model folder to train into.
        epochs, learning_rate, patience: override the recipe's epoch budget, learning rate and early-stopping
            patience (``model.json`` of a shipped model records the values it was trained with).
        held_out: evaluate on the held-out test subjects and record the metrics in ``model.json``.
        conf: extra app options (``--conf KEY VALUE`` of the server), e.g. ``{"<task>_pretrained": FILE}``; the
            options that place the run (``models``, ``model_dir``, ``shipped_models``) cannot be overridden.
    """
    request = train_request(task, epochs, learning_rate=learning_rate, patience=patience)
    if not Path(studies).is_dir():
        raise FileNotFoundError(f"--studies {studies} is not a folder")
    MRIApp, folder = app_class()
    app = MRIApp(
        folder, str(studies), {**(conf or {}), "models": task, "model_dir": str(model_dir), "shipped_models": "none"}
    )
    progress(f"{task}: training {request['max_epochs']} epochs on {studies} into {model_dir}")
    started = time.time()
    stats = app.train(request)
    minutes = (time.time() - started) / 60
    if int(os.environ.get("RANK", "0")) != 0:  # launched by torchrun: rank 0 publishes, evaluates and records
        return {"task": task, "rank": int(os.environ["RANK"]), "epochs": stats.get("epoch")}
    checkpoint = Path(model_dir) / task / "model.pt"
    if not checkpoint.exists():
        raise RuntimeError(f"{task}: training published no checkpoint at {checkpoint}")
    from lib import stock  # noqa: E402  (the app's adapter to MONAI Label, importable after app_class)

    run = stock.trainers(app)[task].last_run
    context = run.context if run else None
    summary = {
        "task": task,
        "checkpoint": str(checkpoint),
        "epochs": stats.get("epoch"),
        "train_minutes": round(minutes, 1),
        "device": str(context.device) if context else None,
    }
    report = None
    if held_out:
        report = evaluate(
            task, studies, model_dir=str(model_dir), out=str(Path(model_dir) / task / "evaluation"), progress=progress
        )
        summary["held_out"] = report["headline"]
    update_card(checkpoint.parent / "model.json", run_record(app.datastore(), studies, minutes, request, report))
    return summary


def run_record(datastore, studies: str, minutes: float, request: Dict, report: Optional[Dict]) -> Dict:
    """What ``model.json`` records of a training run: its data (images per source, subjects per split side,
    split seed), time and request, and the held-out metrics of ``report`` (a :func:`evaluate` summary)."""
    infos = [datastore.get_image_info(i) or {} for i in datastore.list_images()]
    sources = Counter(image_source(i) for i in infos)
    split = ensure_split(studies)
    sides = Counter(split["subjects"].values())
    record = {
        "data": {
            "studies": os.path.abspath(studies),
            "images_by_source": dict(sources),
            "subjects": {side: sides.get(side, 0) for side in ("train", "val", "test")},
            "split_seed": split.get("seed"),
        },
        "minutes": round(minutes, 1),
        "request": request,
    }
    if report:
        record["held_out"] = {
            "subjects": report["n_subjects"],
            "images": report["n_images"],
            "metrics": report["headline"],
            "split": "test subjects of split.json"
            if report.get("split_kind", "grouped") == "grouped"
            else "test images of split_random.json (random image split)",
        }
    return record


def update_card(card_path: Path, record: Dict) -> None:
    """Add the run's data, time and held-out metrics to ``model.json`` (written atomically)."""
    card = json.loads(Path(card_path).read_text(encoding="utf-8"))
    training = dict(card.get("training") or {})
    training.update({k: record[k] for k in ("data", "minutes", "request") if k in record})
    card["training"] = training
    if "held_out" in record:
        card.setdefault("metrics", {})["held_out"] = record["held_out"]
    atomic_write_json(card_path, card, indent=2, default=str)
