"""What every mri-label trainer shares: data from the datastore, a fixed subject split, AMP on GPU,
a cosine learning-rate schedule, early stopping, and a ``model.json`` written beside the checkpoint. A fine-tune
run's promotion decision goes to the task's model history (:mod:`lib.history`)."""

import contextlib
import copy
import json
import logging
import os
import threading
import time
from abc import abstractmethod
from typing import Callable, Dict, List, Optional

import torch
from ignite.engine import Events
from monai.handlers import LrScheduleHandler
from monai.inferers import SimpleInferer
from monai.utils import set_determinism
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import Context

from lib.conf import conf_bool
from lib.datalists import split_by_subject
from lib.history import DEFAULT_KEEP, record_decision
from lib.learning_curve import CURVE_FILE, LearningCurveHandler, publish_curve
from lib.networks import build_network
from lib.slice_cache import cache_folder, cache_items
from lib.slicewise import channels_last_on_cpu
from lib.trainers.checkpoints import load_resume_state, resume_path, save_resume_state
from lib.trainers.distributed import DistributedTrainTask
from mri_label.core.atomic import atomic_write_json
from mri_label.core.splits import ensure_split, split_of

logger = logging.getLogger(__name__)

_running: Dict[str, int] = {}  # task -> trainings of it running in this process (see training_in_process)
_running_lock = threading.Lock()


def training_in_process(task: str) -> bool:
    """Whether a training of ``task`` runs in this process (``POST /train/<task>?run_sync=true`` trains in the
    server's own process; MONAI Label's background trainings run in their own)."""
    with _running_lock:
        return _running.get(task, 0) > 0


class MRITrainTask(DistributedTrainTask):
    """Base trainer. Runs on one process, on several (``multi_gpu``, ``processes``) or under torchrun: see
    :mod:`lib.trainers.distributed`. Request option ``seed`` (int): :func:`monai.utils.set_determinism` in every
    training process before the network is built (reproducible runs, also for spawned processes).

    Args:
        model_dir: folder for this task's training runs (``<model folder>/<task>``, :mod:`lib.server_state`).
        task: task name (used in messages and ``model.json``).
        network_spec: :mod:`lib.networks` spec of the network to train.
        card: static part of ``model.json`` (labels, input size, spacing, normalisation...).
        publish_path: where the best checkpoint is published for inference.
        shipped_path: the checkpoint shipped with the app, served until a training publishes one; a fine-tune
            run starts from it when nothing was published yet. Never written.
        config: defaults shown in ``/info`` and overridable per request.
        train_on: which ``final`` labels a segmentation training (or a classifier's per-slice labels from masks)
            uses: ``all``, or ``approved`` ones only (``--conf train_on``,
            :func:`lib.datalists.trainable_final_labels`).
        history_keep: archived checkpoints kept in the task's model history (``--conf history_keep``).
    """

    def __init__(
        self,
        model_dir: str,
        task: str,
        network_spec: Dict,
        card: Dict,
        publish_path: str,
        description: str,
        config: Optional[Dict] = None,
        shipped_path: Optional[str] = None,
        train_on: str = "all",
        history_keep: int = DEFAULT_KEEP,
    ):
        defaults = {
            "max_epochs": 30,
            "early_stop_patience": 10,
            "val_split": 0.2,
            "split_seed": 0,
            "learning_rate": 1e-3,
            "train_batch_size": 16,
            "val_batch_size": 16,
            "dataset": "CacheDataset",
            "dataloader": "DataLoader",
            "tracking": "None",
        }
        defaults.update(config or {})
        super().__init__(
            model_dir=model_dir,
            description=description,
            config=defaults,
            amp=torch.cuda.is_available(),
            publish_path=publish_path,
            tracking=None,
            load_strict=True,
        )
        self.task, self.network_spec, self.card = task, network_spec, card
        self._split: Optional[Dict] = None
        self.shipped_path = shipped_path
        self._finetune_from: Optional[str] = None  # the served checkpoint a fine-tune run starts from (see ``train``)
        self._baseline: Optional[Dict] = (
            None  # the served checkpoint's validation metric, measured before a fine-tune run
        )
        self._resume = False  # continue the interrupted run of the same name from its resume.pt
        self._finetuning = False  # this run fine-tunes (publishes a candidate)
        self.train_on, self.history_keep = train_on, history_keep
        self._label_rule: Optional[Dict] = None  # which final labels the items use (set by items; model.json)

    def __getstate__(self):
        # spawned training processes get a pickled copy of the task; a finished run's context holds engines
        return dict(self.__dict__, _context=None)

    def __call__(self, request, datastore):
        with _running_lock:
            _running[self.task] = _running.get(self.task, 0) + 1
        try:
            return super().__call__(request, datastore)
        finally:
            with _running_lock:
                _running[self.task] -= 1

    @abstractmethod
    def items(self, datastore: Datastore) -> List[Dict]:
        """Training items of this task found in the datastore."""

    def pre_process(self, request, datastore: Datastore):
        items = self.items(datastore)
        if not items:
            raise ValueError(f"{self.task}: the datastore holds no labelled data for this task")
        folder = getattr(datastore, "_datastore_path", None)
        self._split = ensure_split(folder, seed=int(request.get("split_seed", 0))) if folder else None
        return items

    def partition_datalist(self, context: Context, shuffle=False):
        """Train/validation items by the datastore's fixed subject split (``split.json``, written once and
        reused by every training); its test subjects are never trained on. A datastore without a folder
        (DICOMweb) is split by subject hash on each run (``val_split``, ``split_seed``)."""
        self._context = context
        if self._split:
            side = {i["subject"]: split_of(self._split, i["subject"]) for i in context.datalist}
            train = [i for i in context.datalist if side[i["subject"]] == "train"]
            val = [i for i in context.datalist if side[i["subject"]] == "val"]
            test = [i for i in context.datalist if side[i["subject"]] == "test"]
            seed = self._split["seed"]
        else:
            seed = int(context.request.get("split_seed", 0))
            train, val = split_by_subject(context.datalist, float(context.request.get("val_split", 0.2)), seed)
            test = []
        if not train:  # too few subjects for a three-way split: train on what there is
            train, val = val + test, []
        context.split = {
            "source": "split.json" if self._split else "hash per run",
            "seed": seed,
            "train_subjects": sorted({str(i["subject"]) for i in train}),
            "val_subjects": sorted({str(i["subject"]) for i in val}),
            "test_subjects_held_out": sorted({str(i["subject"]) for i in test}),
            "train_items": len(train),
            "val_items": len(val),
        }
        logger.info(
            f"{self.task}: {len(train)} training items from {len(context.split['train_subjects'])} subjects, "
            f"{len(val)} validation items from {len(context.split['val_subjects'])} subjects"
        )
        return train, val

    def network(self, context: Context):
        network = build_network(self.network_spec)
        channels_last_on_cpu(network)  # 2D networks: oneDNN's faster layout; kept by the move to the device
        return network

    def cache_slices(self, items: List[Dict], datastore: Datastore, size: int, with_mask: bool) -> List[Dict]:
        """Slice items read from the persistent slice cache (:mod:`lib.slice_cache`), built where missing: each
        image is read and normalised once, not once per slice item and run."""
        folder = cache_folder(getattr(datastore, "_datastore_path", None), self._model_dir)
        return cache_items(items, folder, size, with_mask, progress=lambda line: logger.info(f"{self.task}: {line}"))

    def optimizer(self, context: Context):
        lr = float(context.request.get("learning_rate", 1e-3))
        return torch.optim.AdamW(context.network.parameters(), lr=lr, weight_decay=1e-4)

    def lr_scheduler_handler(self, context: Context):
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(context.optimizer, T_max=max(1, int(context.max_epochs)))
        context.lr_schedule = schedule  # saved in / restored from resume.pt
        # MONAI annotates torch's old _LRScheduler name; CosineAnnealingLR derives from its successor LRScheduler
        return LrScheduleHandler(schedule, print_lr=True, epoch_level=True)  # type: ignore[arg-type]

    def val_inferer(self, context: Context):
        return SimpleInferer()

    def load_path(self, output_dir, pretrained=True):
        if self._resume:  # everything comes from resume.pt (see finalize), not from the run's best model.pt
            return None
        if self._finetune_from:  # a fine-tune run starts from the served checkpoint, not from its run folder
            return self._finetune_from
        return super().load_path(output_dir, pretrained)

    def finalize(self, context: Context):
        super().finalize(context)
        state_path = resume_path(self._model_dir, context.request["name"])
        if self._resume:
            load_resume_state(context, state_path)
        if context.local_rank == 0:
            context.trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: save_resume_state(context, state_path))
            # after MONAI Label's ValidationHandler: the epoch's validation metrics are there
            LearningCurveHandler(self._curve_path(context), context.evaluator, context.optimizer).attach(
                context.trainer
            )
            if not self._finetuning:  # a fine-tune run publishes a candidate, described only once promoted
                context.trainer.on_publish = lambda stats: self.write_card(context, stats, finished=False)
        if self._finetune_from and context.evaluator:  # on every rank: the metric is reduced over all of them
            self._baseline = self.evaluate_checkpoint(context, self._finetune_from)
            logger.info(
                f"{self.task}: served checkpoint scores {self._baseline} on the validation items before fine-tuning"
            )

    def _curve_path(self, context: Context) -> str:
        return os.path.join(self._model_dir, context.request["name"], CURVE_FILE)

    def evaluate_checkpoint(self, context: Context, path: str) -> Dict:
        """Key validation metric of the checkpoint at ``path`` on this run's validation items, with this trainer's
        own validation transforms, inferer and metric (the same numbers the run's evaluator reports)."""
        from monai.engines import SupervisedEvaluator

        network = copy.deepcopy(getattr(context.network, "module", context.network))  # without DDP
        checkpoint = torch.load(path, map_location=context.device)
        network.load_state_dict(checkpoint.get(self._model_dict_key, checkpoint), strict=self._load_strict)
        evaluator = SupervisedEvaluator(
            device=context.device,
            val_data_loader=context.evaluator.data_loader,
            network=network,
            inferer=self.val_inferer(context),
            postprocessing=self._validate_transforms(self.val_post_transforms(context), "Validation", "post"),
            key_val_metric=self.val_key_metric(context),
            amp=self._amp,
        )
        evaluator.run()
        name = evaluator.state.key_metric_name
        return {"name": name, "value": float(evaluator.state.metrics[name])}

    def train(self, rank, world_size, request, datalist):
        self._context = None
        if world_size <= 1 and not torch.cuda.is_available() and not os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(free_cores())
        seed = request.get("seed")
        if seed is not None:
            if isinstance(seed, bool) or not str(seed).strip().isdigit():
                raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
            set_determinism(seed=int(seed))
        finetune = self._finetuning = conf_bool(request, "finetune", False, where="params")
        self._resume = conf_bool(request, "resume", False, where="params")
        if finetune and self._resume:
            raise ValueError("finetune and resume exclude each other: resume continues a run, finetune starts one")
        served = self._publish_path
        if finetune:  # publish to a candidate beside the served checkpoint; promote it after the run if not worse
            self._finetune_from = served if os.path.exists(served) else self.shipped_path
            self._publish_path = candidate_path(served)
            self._baseline = None
            # every rank removes them before it decides what to load, so all ranks decide alike
            for stale in (
                self._publish_path,
                os.path.join(self._model_dir, request["name"], self._key_metric_filename),
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(stale)
        started = time.time()
        tracker = _carbon_tracker(str(request.get("carbon_country", "DEU"))) if rank == 0 else None
        baseline = self._finetune_from
        try:
            stats = super().train(rank, world_size, request, datalist)
        finally:
            energy = _stop(tracker)
            self._publish_path = served
            self._finetune_from = None
            self._resume = self._finetuning = False
        if rank == 0:
            with contextlib.suppress(FileNotFoundError):  # the run finished: nothing left to resume
                os.remove(resume_path(self._model_dir, request["name"]))
            stats["energy"] = energy
            if finetune:
                stats["finetune"] = self._finish_finetune(request, stats, served, baseline, started)
            if os.path.exists(self._stats_path):  # what a spawning parent process returns
                extra = {key: stats[key] for key in ("energy", "finetune") if key in stats}
                _write_json(self._stats_path, dict(_read_json(self._stats_path), **extra))
            if finetune and not stats["finetune"]["promoted"]:
                return stats
            if os.path.exists(self._publish_path):
                self.write_card(self._context, stats)
        return stats

    def _finish_finetune(self, request, stats: Dict, served: str, baseline, started: float) -> Dict:
        """Promote the candidate of a fine-tune run if not worse than the served checkpoint (archiving the one it
        replaces); append the decision to the task's model history (:func:`lib.history.record_decision`) and
        record the run in ``finetune_result.json`` beside the checkpoint (read by the server's retrain scheduler)."""
        evaluation = stats.get("eval") or {}
        after = evaluation.get("best_metric") if evaluation else None
        before = self._baseline

        def promote(archive: Callable[[], Optional[str]]):
            return promote_candidate(
                candidate_path(served),
                served,
                before["value"] if before else None,
                after,
                had_served=baseline is not None,
                archive=archive,
            )

        context = self._context
        labelled = {i["image"] for i in (context.datalist if context else [])}
        record = {
            "run": request.get("al_run"),
            "train_run": request.get("name"),
            "task": self.task,
            "metric": evaluation.get("key_metric_name") or (before or {}).get("name"),
            "metric_before": before["value"] if before else None,
            "metric_after": after,
            "labelled_images": len(labelled),
            "train_items": len(context.train_datalist) if context and context.train_datalist else 0,
            "val_items": len(context.val_datalist) if context and context.val_datalist else 0,
            "epochs": stats.get("epoch"),
            "device": str(context.device) if context else None,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "duration_s": round(time.time() - started, 1),
            "final_labels": self._label_rule,
        }
        entry = record_decision(os.path.dirname(served), record, promote, keep=self.history_keep)
        record.update(promoted=entry["promoted"], reason=entry["reason"], archive=entry["archive"])
        archived = f" (the checkpoint it replaced is archived as {entry['archive']})" if entry["archive"] else ""
        logger.info(
            f"{self.task}: fine-tuned checkpoint {'promoted' if entry['promoted'] else 'NOT promoted'}: "
            f"{entry['reason']}{archived}"
        )
        _write_json(os.path.join(os.path.dirname(served), "finetune_result.json"), record)
        return record

    def training_card(self, context: Context) -> Dict:
        """Task-specific facts about the training data for ``model.json``'s ``training`` entry."""
        return {}

    def write_card(self, context: Context, stats: Dict, finished: bool = True) -> None:
        """Write ``model.json`` beside the published checkpoint (nnU-Net style self-description).

        Args:
            context: the run's context (data, split, device).
            stats: MONAI Label's training stats (epoch, best validation metric).
            finished: False for the card written at each publish during the run (``training.finished``; it stays
                so if the run is killed or stopped before its end).
        """
        evaluation = stats.get("eval") or stats.get("train") or {}
        card = dict(self.card)
        card.update(
            {
                "task": self.task,
                "network": self.network_spec,
                "checkpoint": os.path.basename(self._publish_path),
                "training": {
                    "items": len(context.datalist) if context else None,
                    "split": getattr(context, "split", None),
                    "epochs": stats.get("epoch"),
                    "max_epochs": getattr(context, "max_epochs", None),
                    "finished": finished,
                    "device": str(context.device) if context else None,
                    "amp": self._amp,
                    "distributed": stats.get("distributed"),
                    "energy": stats.get("energy"),
                    **({"final_labels": self._label_rule} if self._label_rule else {}),
                    **self.training_card(context),
                },
                "metrics": {
                    "key_metric": evaluation.get("key_metric_name"),
                    "best": evaluation.get("best_metric"),
                    "best_epoch": evaluation.get("best_metric_epoch"),
                    "split": "validation subjects" if stats.get("eval") else "training items",
                },
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "code_version": _code_version(),
            }
        )
        folder = os.path.dirname(self._publish_path)
        if context is not None and finished:  # metric vs epoch beside the checkpoint, chosen on validation only
            card["training"]["learning_curve"] = publish_curve(
                self._curve_path(context), folder, evaluation.get("key_metric_name")
            )
        _write_json(os.path.join(folder, "model.json"), card)


def candidate_path(served: str) -> str:
    """Where a fine-tune run publishes its best checkpoint before promotion (``model.candidate.pt``)."""
    root, extension = os.path.splitext(served)
    return f"{root}.candidate{extension}"


def promote_candidate(
    candidate: str,
    served: str,
    before,
    after,
    had_served: bool = True,
    archive: Optional[Callable[[], Optional[str]]] = None,
):
    """Replace ``served`` by ``candidate`` (``os.replace``) when its validation metric ``after`` is not worse than
    the served checkpoint's ``before`` (higher is better); otherwise delete the candidate and keep ``served``.
    Returns ``(promoted, reason)``. With no served checkpoint yet (``had_served`` False: neither a trained nor
    a shipped one), any candidate is promoted; without a validation metric on either side nothing can be
    compared and the served checkpoint stays. ``before`` may be a shipped checkpoint's: ``served`` is then
    the path training publishes to, which does not exist yet. ``archive()``, when given, is called right before
    an existing ``served`` file is replaced (the model history keeps a copy of it)."""
    if not os.path.exists(candidate):
        return False, "the run published no candidate checkpoint"

    def replace():
        if archive is not None and os.path.exists(served):
            archive()
        os.replace(candidate, served)

    if not had_served:
        replace()
        return True, "no checkpoint was served yet"
    if before is None or after is None:
        os.remove(candidate)
        return (
            False,
            "no validation metric on the fixed split to compare with (no validation items); served checkpoint kept",
        )
    if float(after) < float(before):
        os.remove(candidate)
        return (
            False,
            f"validation metric {float(after):.4f} is worse than the served checkpoint's {float(before):.4f}; "
            "served checkpoint kept",
        )
    replace()
    return True, f"validation metric {float(after):.4f} >= served checkpoint's {float(before):.4f}"


def free_cores() -> int:
    """CPU cores this process may use that other work is not already keeping busy: the cores of its affinity mask
    less the 1-minute load average (rounded), at least 1; training uses this many torch threads on the CPU unless
    ``OMP_NUM_THREADS`` says otherwise. Two torch threads on a 2-core machine that is running
    something else train about half as fast as one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        busy = round(os.getloadavg()[0])
    except OSError:  # not available on this platform
        busy = 0
    return max(1, cores - busy)


def _read_json(path: str) -> Dict:
    with open(path) as handle:
        return json.load(handle)


def _write_json(path: str, content: Dict) -> None:
    atomic_write_json(path, content, indent=2, default=str)


def _carbon_tracker(country: str):
    """A started codecarbon tracker in offline mode (no network), or None where codecarbon cannot run here."""
    try:
        from codecarbon import OfflineEmissionsTracker

        tracker = OfflineEmissionsTracker(country_iso_code=country, save_to_file=False, log_level="error")
        tracker.start()
        return tracker
    except Exception as error:  # energy accounting must never stop a training
        logger.warning(f"codecarbon could not start ({error}); this run's energy is not recorded")
        return None


def _stop(tracker) -> Dict:
    """Energy (kWh) and emissions (kg CO2eq) of the run measured by ``tracker``."""
    if tracker is None:
        return {"recorded": False}
    try:
        emissions = tracker.stop()
        data = tracker.final_emissions_data
        return {
            "recorded": True,
            "energy_kwh": float(data.energy_consumed),
            "co2_kg": float(emissions),
            "country": data.country_name,
            "duration_s": round(float(data.duration), 1),
            "tool": "codecarbon (offline)",
        }
    except Exception as error:
        logger.warning(f"codecarbon could not finish ({error}); this run's energy is not recorded")
        return {"recorded": False}


def _code_version() -> str:
    try:
        from importlib.metadata import version

        return version("mri-label")
    except Exception:  # not installed as a package
        return "unknown"
