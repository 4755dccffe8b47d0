"""Active learning that closes the loop: retrain after corrections, and pick the next image by uncertainty.

- :class:`RetrainScheduler` counts new ``final`` segmentation labels and class corrections per task (an image
  once per run); after
  ``--conf retrain_after N`` of them it queues a fine-tuning run of that task through MONAI Label's own
  ``AsyncTask.run("train", ..., enqueue=True)`` (one training at a time: MONAI Label's train queue has one
  worker). Triggers that arrive while a run of the task is queued or running only set ``pending``, which
  launches exactly one more run when it ends. The trainer (``lib/trainers/base.py``) starts from the served
  checkpoint, publishes to ``model.candidate.pt`` and promotes it only if its validation metric on the fixed
  split is not worse than the served checkpoint's, measured on the same items before training. Counters and
  every run's record live in ``<model_dir>/activelearning.json`` (atomic writes), readable at
  ``GET /activelearning/stats``.
- :class:`UncertaintyStrategy` serves ``/activelearning/entropy`` (classifiers: predictive entropy of the
  volume probabilities) and ``/activelearning/epistemic`` (segmentation: Monte-Carlo dropout, mean voxel
  variance of the foreground probability). Scores are cached in image info
  (``al_scores.<task> = {"<method>": score, "checkpoint_mtime": ...}``), recomputed in the background after
  each promoted retraining, and on demand for images whose cached score belongs to an older checkpoint.
"""

import copy
import json
import logging
import math
import os
import threading
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

import torch
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.strategy import Strategy

from lib import stock
from lib.datalists import final_label
from lib.datastore import update_info_entry
from lib.errors import bad_input
from lib.infers import INFER_LOCK
from lib.label_info import class_label, label_task
from lib.mirroring import MirrorAveragingInferer
from mri_label.core.atomic import atomic_write_json

logger = logging.getLogger(__name__)

STATE_FILE = "activelearning.json"
#: Uncertainty strategy (``/activelearning/<name>``) -> (the kind of task it ranks images for, its description); each
#: task config names its own as ``uncertainty``.
UNCERTAINTY = {
    "entropy": ("classification", "Classifiers: unlabelled image with the highest predictive entropy"),
    "epistemic": ("segmentation", "Segmentation: unlabelled image with the highest Monte-Carlo dropout variance"),
}
_DONE = ("DONE", "ERROR", "STOPPED")


class RetrainScheduler:
    """Queues fine-tuning runs after ``retrain_after`` new labels of a task (see the module docstring).

    Args:
        model_dir: the app's model folder (state file ``activelearning.json`` goes there).
        retrain_after: new labels of a task that trigger a run.
        epochs: ``max_epochs`` of a fine-tuning run.
        launch: ``request -> task record`` starting a training (default: MONAI Label's ``AsyncTask.run``);
            the record is a dict whose ``status`` becomes DONE/ERROR/STOPPED when the run ends.
        on_run_end: called with each finished run's record (the app rescores images there).
        poll_s: how often the watcher looks at a running task's status.
    """

    def __init__(
        self,
        model_dir: str,
        retrain_after: int,
        epochs: int,
        launch: Optional[Callable] = None,
        on_run_end: Optional[Callable] = None,
        poll_s: float = 1.0,
    ):
        self.model_dir, self.retrain_after, self.epochs = model_dir, int(retrain_after), int(epochs)
        self.launch = launch or _launch_training
        self.on_run_end = on_run_end
        self.poll_s = poll_s
        self.path = os.path.join(model_dir, STATE_FILE)
        self._lock = threading.RLock()
        self.state = self._load()

    def _load(self) -> Dict:
        state: Dict[str, Any] = {"tasks": {}, "runs": []}
        if os.path.exists(self.path):
            with open(self.path) as handle:
                state.update(json.load(handle))
        for task, entry in state["tasks"].items():  # a run the previous server did not see end: run it again
            if entry.get("active"):
                state["runs"].append(
                    {
                        "run": entry["active"],
                        "task": task,
                        "status": "INTERRUPTED",
                        "promoted": False,
                        "reason": "the server stopped before the run ended",
                    }
                )
                entry["active"], entry["pending"] = None, True
        return state

    def _save(self) -> None:
        os.makedirs(self.model_dir, exist_ok=True)
        atomic_write_json(self.path, self.state, indent=2, default=str)

    def _entry(self, task: str) -> Dict:
        return self.state["tasks"].setdefault(
            task, {"new_labels": 0, "labels_total": 0, "pending": False, "active": None}
        )

    def note_label(self, task: str, image: str) -> Optional[str]:
        """Count one new label of ``task``; start a run (returns its id) or mark one pending when due.

        An image counts once towards the next run of a task: the same correction sent again (or another one of
        the same image) before the run is due does not count twice."""
        with self._lock:
            entry = self._entry(task)
            counted = entry.setdefault("counted_images", [])
            if image in counted:
                return None
            counted.append(image)
            entry["new_labels"] += 1
            entry["labels_total"] += 1
            entry["last_image"] = image
            started = None
            if entry["new_labels"] >= self.retrain_after:
                entry["new_labels"], entry["counted_images"] = 0, []
                if entry["active"]:
                    entry["pending"] = True
                    logger.info(
                        f"retrain {task}: {self.retrain_after} new labels during run {entry['active']}; "
                        "one more run pending"
                    )
                else:
                    started = self._start(task)
            self._save()
            return started

    def resume(self) -> None:
        """Start the runs left pending (by a restart) now."""
        with self._lock:
            for task, entry in self.state["tasks"].items():
                if entry.get("pending") and not entry.get("active"):
                    entry["pending"] = False
                    self._start(task)
            self._save()

    def _start(self, task: str) -> str:
        run = uuid.uuid4().hex[:12]
        entry = self._entry(task)
        request = {
            "model": task,
            "name": "finetune",
            "pretrained": True,
            "finetune": True,
            "max_epochs": self.epochs,
            "al_run": run,
        }
        entry["active"] = run
        entry["labels_at_start"] = entry["labels_total"]
        logger.info(
            f"retrain {task}: queueing fine-tuning run {run} ({self.epochs} epochs) "
            f"after {entry['labels_total']} labels"
        )
        record = self.launch(request)
        threading.Thread(
            target=self._watch, args=(task, run, record, time.time()), daemon=True, name=f"retrain-{task}"
        ).start()
        return run

    def _watch(self, task: str, run: str, record: Dict, queued: float) -> None:
        while (record or {}).get("status") not in _DONE:
            if record is None:
                break
            time.sleep(self.poll_s)
        status = (record or {}).get("status", "ERROR")
        result = {}
        result_path = os.path.join(self.model_dir, task, "finetune_result.json")
        if os.path.exists(result_path):
            with open(result_path) as handle:
                result = json.load(handle)
            if result.get("run") != run:
                result = {}
        with self._lock:
            entry = self._entry(task)
            summary = {
                "run": run,
                "task": task,
                "status": status,
                "labels_used": entry.get("labels_at_start"),
                "queued": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(queued)),
                "promoted": False,
            }
            summary.update(result)
            summary["status"] = status
            if not result:
                summary["reason"] = f"the training ended with status {status} and recorded no result"
            self.state["runs"].append(summary)
            entry["active"] = None
            if entry.get("pending"):
                entry["pending"] = False
                self._start(task)
            self._save()
        if self.on_run_end:
            try:
                self.on_run_end(summary)
            except Exception:  # rescoring must never break the scheduler
                logger.exception(f"after retraining {task}: rescoring failed")

    def stats(self) -> Dict:
        with self._lock:
            return copy.deepcopy(dict(self.state, retrain_after=self.retrain_after, epochs=self.epochs))


def _launch_training(request: Dict) -> Dict:
    from monailabel.utils.async_tasks.task import AsyncTask

    record, description = AsyncTask.run("train", request=request, enqueue=True)
    if record is None:
        raise RuntimeError(f"training could not be queued: {description}")
    return record


def labelled_task(
    datastore: Datastore, image_id: str, label_id: str, task_labels: Dict[str, Dict[str, int]]
) -> Optional[str]:
    """The segmentation task whose ``final`` label ``label_id`` of ``image_id`` was just saved, or None."""
    if datastore.get_label_by_image_id(image_id, DefaultLabelTag.FINAL) != label_id:
        return None
    _, info = final_label(datastore, image_id)
    return label_task(info, task_labels)


# ---------------------------------------------------------------------------------------------- scoring


def entropy(probabilities) -> float:
    """Predictive entropy (nats) of a class distribution; highest for the flattest one."""
    p = torch.as_tensor([float(v) for v in probabilities], dtype=torch.float64).clamp_min(1e-12)
    p = p / p.sum()
    return float(-(p * p.log()).sum())


def enable_dropout(network: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``network`` in eval mode except its dropout layers (Monte-Carlo dropout)."""
    network = copy.deepcopy(network).eval()
    for module in network.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.train()
    return network


@torch.no_grad()
def mc_dropout_variance(
    network: torch.nn.Module, inputs: torch.Tensor, inferer: Callable, samples: int = 5, seed: int = 0
) -> float:
    """Mean voxel variance of the foreground probability (1 - p(background)) over ``samples`` forward passes
    with dropout on: the epistemic uncertainty of a segmentation network on one image."""
    network = enable_dropout(network)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        foreground = []
        for _ in range(samples):
            logits = inferer(inputs, network)
            foreground.append(1.0 - torch.softmax(logits.float(), dim=1)[:, 0])
    finally:
        torch.random.set_rng_state(generator_state)
    return float(torch.stack(foreground).var(dim=0, unbiased=False).mean())


class ModelScorer:
    """Uncertainty of the served checkpoint of a task on a datastore image (computed with its infer task)."""

    def __init__(self, app, samples: int = 5):
        self.app, self.samples = app, samples

    def checkpoint_mtime(self, task: str) -> Optional[float]:
        infer = stock.infers(self.app).get(task)
        path = infer.get_path() if infer is not None else None
        return os.stat(path).st_mtime if path and os.path.exists(path) else None

    def __call__(self, task: str, image_id: str, datastore: Datastore) -> float:
        with INFER_LOCK:  # per image: an infer request waits for one image's score, not for a whole strategy
            return self.score(task, image_id, datastore)

    def score(self, task: str, image_id: str, datastore: Datastore) -> float:
        infer = stock.infers(self.app)[task]
        if infer.type == "classification":
            result = self.app.infer({"model": task, "image": image_id, "result_extension": None}, datastore)
            return entropy((result.get("params") or {})["probabilities"].values())
        path = datastore.get_image_uri(image_id)
        data = {"image": path, "model": task, "device": "cuda" if torch.cuda.is_available() else "cpu"}
        for transform in infer.pre_transforms(data):
            data = transform(data)
        inputs = torch.as_tensor(data["image"])[None].to(data["device"])
        network = stock.infer_network(infer, data["device"], data)
        inferer = infer.inferer(data)
        # dropout samples the network's uncertainty; averaging mirrors too would only multiply the passes
        inferer = inferer.inner if isinstance(inferer, MirrorAveragingInferer) else inferer
        return mc_dropout_variance(network, inputs, inferer, self.samples)


class UncertaintyStrategy(Strategy):
    """Next image to annotate for a task: the unlabelled one with the highest cached uncertainty score.

    Args:
        method: ``"entropy"`` (classifiers) or ``"epistemic"`` (segmentation), the name the score is cached under.
        kind: ``"classification"`` or ``"segmentation"``: which tasks the strategy serves.
        tasks: ``() -> {task: (kind, volume_only)}`` of the served tasks.
        scorer: ``(task, image_id, datastore) -> float``; ``scorer.checkpoint_mtime(task)`` says which
            checkpoint a cached score must come from.
    Request params: ``task`` (default: the first task of the strategy's kind).
    """

    def __init__(self, method: str, kind: str, tasks: Callable[[], Dict], scorer, description: str = ""):
        super().__init__(description or f"Unlabelled image with the highest {method} score of the served model")
        self.method, self.kind, self.tasks, self.scorer = method, kind, tasks, scorer

    def task_of(self, request: Dict) -> str:
        tasks = [t for t, (kind, _) in self.tasks().items() if kind == self.kind]
        task: Any = request.get("task") or (tasks[0] if tasks else None)
        if task not in tasks:
            raise bad_input(404, f"strategy {self.method} serves {self.kind} tasks {tasks}; got task {task!r}")
        return task

    def candidates(self, task: str, datastore: Datastore) -> List[str]:
        """Images without a label for ``task`` (class label, or any ``final`` mask for segmentation)."""
        volume_only = self.tasks()[task][1]
        images = []
        for image_id in datastore.list_images():
            info = datastore.get_image_info(image_id)
            if self.kind == "classification" and class_label(info, task) is not None:
                continue
            if self.kind == "segmentation" and datastore.get_label_by_image_id(image_id, DefaultLabelTag.FINAL):
                continue
            if volume_only and str(info.get("path") or datastore.get_image_uri(image_id)).lower().endswith(
                (".png", ".jpg", ".jpeg", ".tif", ".tiff")
            ):
                continue
            images.append(image_id)
        return images

    def score(self, task: str, image_id: str, datastore: Datastore, mtime: Optional[float]) -> float:
        cached = (datastore.get_image_info(image_id).get("al_scores") or {}).get(task) or {}
        if self.method in cached and cached.get("checkpoint_mtime") == mtime:
            return float(cached[self.method])
        value = float(self.scorer(task, image_id, datastore))
        update_info_entry(datastore, image_id, "al_scores", task, {self.method: value, "checkpoint_mtime": mtime})
        return value

    def rescore(self, task: str, datastore: Datastore) -> Dict[str, float]:
        """Score every candidate of ``task`` (cached ones of the current checkpoint are reused)."""
        mtime = self.scorer.checkpoint_mtime(task)
        return {image: self.score(task, image, datastore, mtime) for image in self.candidates(task, datastore)}

    def __call__(self, request, datastore: Datastore):
        task = self.task_of(request)
        if self.scorer.checkpoint_mtime(task) is None:
            raise bad_input(409, f"model {task!r} is not trained yet: uncertainty needs a checkpoint")
        scores = self.rescore(task, datastore)
        if not scores:
            return None
        best = max(sorted(scores), key=lambda image: scores[image])
        if not math.isfinite(scores[best]):
            return None
        return {"id": best, "task": task, "strategy": self.method, "score": scores[best]}
