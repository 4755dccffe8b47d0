"""What every mri-label trainer shares: data from the datastore, a fixed subject split, AMP on GPU, a cosine
learning-rate schedule, early stopping, and a ``model.json`` written beside the checkpoint.

A run is composed of handlers and small policies, each in its own module, instead of flags on the task:

* :class:`TrainingRun`: what one request asks (seed, resume, fine-tune), decided once before the run;
* :class:`lib.trainers.checkpoints.AtomicPublisher` (statistics and best checkpoint, atomically) and
  :class:`~lib.trainers.checkpoints.ResumeState` (``resume.pt``): ignite handlers;
* :class:`lib.trainers.promotion.FineTune`: a fine-tune run's candidate, baseline and promotion (the decision goes
  to the task's model history, :mod:`lib.history`);
* :class:`lib.trainers.energy.EnergyMeter`: codecarbon around the run;
* :func:`lib.model_card.run_card`: ``model.json``; :class:`lib.learning_curve.LearningCurveHandler`: the curve;
* :class:`lib.trainers.distributed.DistributedTrainTask`: several processes (its handlers reduce over the ranks).
"""

import copy
import json
import logging
import os
import threading
import time
from abc import abstractmethod
from typing import Dict, List, Optional

import torch
from monai.handlers import LrScheduleHandler
from monai.inferers import SimpleInferer
from monai.utils import set_determinism
from monailabel.interfaces.datastore import Datastore
from monailabel.tasks.train.basic_train import Context

from lib import stock
from lib.conf import conf_bool
from lib.datalists import split_by_subject
from lib.history import DEFAULT_KEEP
from lib.learning_curve import CURVE_FILE, LearningCurveHandler, publish_curve
from lib.model_card import CARD, run_card
from lib.networks import build_network
from lib.slice_cache import cache_folder, cache_items
from lib.slicewise import channels_last_on_cpu
from lib.trainers.checkpoints import AtomicPublisher, ResumeState, resume_path
from lib.trainers.distributed import DistributedTrainTask
from lib.trainers.energy import EnergyMeter
from lib.trainers.promotion import FineTune
from mri_label.core.atomic import atomic_write_json
from mri_label.core.splits import CARD_SIDES, ensure_split, split_of

logger = logging.getLogger(__name__)

_running: Dict[str, int] = {}  # task -> trainings of it running in this process (see training_in_process)
_running_lock = threading.Lock()


def training_in_process(task: str) -> bool:
    """Whether a training of ``task`` runs in this process (``POST /train/<task>?run_sync=true`` trains in the
    server's own process; MONAI Label's background trainings run in their own)."""
    with _running_lock:
        return _running.get(task, 0) > 0


class TrainingRun:
    """One training request in this process, decided once before the run starts (alike on every rank): its seed
    (:func:`monai.utils.set_determinism`), whether it continues the interrupted run of the same name from its
    ``resume.pt`` (:attr:`resume`) or fine-tunes the served checkpoint (:attr:`finetune`), where it publishes;
    then its context, once made.

    Raises:
        ValueError: a seed that is not an integer >= 0; ``finetune`` or ``resume`` not a boolean; both.
    """

    def __init__(self, request: Dict, task: "MRITrainTask"):
        seed = request.get("seed")
        if seed is not None:
            if isinstance(seed, bool) or not str(seed).strip().isdigit():
                raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
            set_determinism(seed=int(seed))
        finetune = conf_bool(request, "finetune", False, where="params")
        self.resume = conf_bool(request, "resume", False, where="params")
        if finetune and self.resume:
            raise ValueError("finetune and resume exclude each other: resume continues a run, finetune starts one")
        run_model = os.path.join(task.model_dir, request["name"], task.key_metric_filename)
        self.finetune = FineTune(task.publish_path, task.shipped_path, run_model) if finetune else None
        self.publish_path = self.finetune.candidate if self.finetune else task.publish_path
        self.request, self.started = request, time.time()
        self.context: Optional[Context] = None


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
        self.shipped_path, self.train_on, self.history_keep = shipped_path, train_on, history_keep
        self._split: Optional[Dict] = None  # the datastore's split.json (set by pre_process)
        self._label_rule: Optional[Dict] = None  # which final labels the items use (set by items; model.json)
        self.last_run: Optional[TrainingRun] = None  # the run in progress or the last one in this process

    def __getstate__(self):
        # spawned training processes get a pickled copy of the task; a finished run's context holds engines
        return dict(self.__dict__, last_run=None)

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
        folder = stock.datastore_folder(datastore)
        self._split = ensure_split(folder, seed=int(request.get("split_seed", 0))) if folder else None
        return items

    def partition_datalist(self, context: Context, shuffle=False):
        """Train/validation items by the datastore's fixed subject split (``split.json``, written once and
        reused by every training); its test subjects are never trained on. A datastore without a folder
        (DICOMweb) is split by subject hash on each run (``val_split``, ``split_seed``)."""
        if self.last_run is not None:
            self.last_run.context = context
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
        ids = {
            side: {str(i["subject"]) for i in items} for side, items in (("train", train), ("val", val), ("test", test))
        }
        context.split = {
            "source": "split.json" if self._split else "hash per run",
            "seed": seed,
            # the card's subject lists, under the keys mri_label.core.splits.pin_split reads back
            **{key: sorted(ids[side]) for key, side in CARD_SIDES.items()},
            "train_items": len(train),
            "val_items": len(val),
        }
        logger.info(
            f"{self.task}: {len(train)} training items from {len(ids['train'])} subjects, "
            f"{len(val)} validation items from {len(ids['val'])} subjects"
        )
        return train, val

    def network(self, context: Context):
        network = build_network(self.network_spec)
        channels_last_on_cpu(network)  # 2D networks: oneDNN's faster layout; kept by the move to the device
        return network

    def cache_slices(self, items: List[Dict], datastore: Datastore, size: int, with_mask: bool) -> List[Dict]:
        """Slice items read from the persistent slice cache (:mod:`lib.slice_cache`), built where missing: each
        image is read and normalised once, not once per slice item and run."""
        folder = cache_folder(stock.datastore_folder(datastore), self.model_dir)
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
        run = self.last_run
        if run is not None and run.resume:  # everything comes from resume.pt (ResumeState), not from model.pt
            return None
        if run is not None and run.finetune and run.finetune.start:  # the served checkpoint, not the run folder's
            return run.finetune.start
        return super().load_path(output_dir, pretrained)

    def publisher(self, context: Context):
        """:class:`AtomicPublisher` to the run's publish path; each publish rewrites ``model.json`` (not in a
        fine-tune run: its candidate is described only once promoted)."""
        run = self.last_run
        finetune = run is not None and run.finetune is not None
        return AtomicPublisher(
            self.stats_path,
            run.publish_path if run is not None else self.publish_path,
            self.key_metric_filename,
            context.start_ts,
            context.run_id,
            context.output_dir,
            context.trainer,
            context.evaluator,
            on_publish=None if finetune else lambda stats: self.write_card(context, stats, finished=False),
        )

    def finalize(self, context: Context):
        """MONAI Label's handlers with :meth:`publisher`'s, early stopping and the ranks' statistics; then the run's
        ``resume.pt`` (:class:`ResumeState`), its learning curve (rank 0) and, for a fine-tune run, the served
        checkpoint's validation metric before training."""
        super().finalize(context)
        run = self.last_run
        resume = run is not None and run.resume
        ResumeState(resume_path(self.model_dir, context.request["name"]), context, resume).attach(context.trainer)
        if context.local_rank == 0:  # after MONAI Label's ValidationHandler: the epoch's validation metrics are there
            LearningCurveHandler(self._curve_path(context), context.evaluator, context.optimizer).attach(
                context.trainer
            )
        if run is not None and run.finetune and context.evaluator:  # every rank: the metric is reduced over all
            run.finetune.measure_baseline(lambda path: self.evaluate_checkpoint(context, path), self.task)

    def _curve_path(self, context: Context) -> str:
        return os.path.join(self.model_dir, context.request["name"], CURVE_FILE)

    def evaluate_checkpoint(self, context: Context, path: str) -> Dict:
        """Key validation metric of the checkpoint at ``path`` on this run's validation items, with this trainer's
        own validation transforms, inferer and metric (the same numbers the run's evaluator reports)."""
        from monai.engines import SupervisedEvaluator

        network = copy.deepcopy(getattr(context.network, "module", context.network))  # without DDP
        self.load_weights(network, path, context.device)
        evaluator = SupervisedEvaluator(
            device=context.device,
            val_data_loader=context.evaluator.data_loader,
            network=network,
            inferer=self.val_inferer(context),
            postprocessing=self.compose(self.val_post_transforms(context), "Validation", "post"),
            key_val_metric=self.val_key_metric(context),
            amp=self.amp,
        )
        evaluator.run()
        name = evaluator.state.key_metric_name
        return {"name": name, "value": float(evaluator.state.metrics[name])}

    def train(self, rank, world_size, request, datalist):
        if world_size <= 1 and not torch.cuda.is_available() and not os.environ.get("OMP_NUM_THREADS"):
            torch.set_num_threads(free_cores())
        run = self.last_run = TrainingRun(request, self)
        with EnergyMeter(str(request.get("carbon_country", "DEU")), active=rank == 0) as energy:
            stats = super().train(rank, world_size, request, datalist)
        if rank == 0:
            self._finish(run, stats, energy.record)
        return stats

    def _finish(self, run: TrainingRun, stats: Dict, energy: Dict) -> None:
        """Rank 0, after the run: its extra statistics (the ranks' split, energy, a fine-tune decision) into
        ``stats`` and ``train_stats.json`` (what a spawning parent process returns); ``model.json`` beside the
        served checkpoint, unless a fine-tune run's candidate was not promoted."""
        context = run.context
        extra: Dict = {}
        if getattr(context, "distributed", None):
            extra["distributed"] = context.distributed  # type: ignore[union-attr]
        extra["energy"] = energy
        if run.finetune:
            stats.update(extra)
            extra["finetune"] = run.finetune.decide(self._finetune_record(run, stats), self.history_keep, self.task)
        stats.update(extra)
        if os.path.exists(self.stats_path):
            with open(self.stats_path) as handle:
                content = json.load(handle)
            atomic_write_json(self.stats_path, dict(content, **extra), indent=2, default=str)
        if run.finetune and not extra["finetune"]["promoted"]:
            return
        if os.path.exists(self.publish_path):
            self.write_card(context, stats)

    def _finetune_record(self, run: TrainingRun, stats: Dict) -> Dict:
        """What the model history and ``finetune_result.json`` record of a fine-tune run."""
        context, request = run.context, run.request
        return {
            "run": request.get("al_run"),
            "train_run": request.get("name"),
            "task": self.task,
            **run.finetune.metrics(stats),  # type: ignore[union-attr]
            "labelled_images": len({i["image"] for i in (context.datalist if context else [])}),
            "train_items": len(context.train_datalist) if context and context.train_datalist else 0,
            "val_items": len(context.val_datalist) if context and context.val_datalist else 0,
            "epochs": stats.get("epoch"),
            "device": str(context.device) if context else None,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(run.started)),
            "ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "duration_s": round(time.time() - run.started, 1),
            "final_labels": self._label_rule,
        }

    def training_card(self, context: Context) -> Dict:
        """Task-specific facts about the training data for ``model.json``'s ``training`` entry."""
        return {}

    def write_card(self, context: Optional[Context], stats: Dict, finished: bool = True) -> None:
        """Write ``model.json`` beside the published checkpoint (:func:`lib.model_card.run_card`); when the run has
        finished, with its learning curve (metric vs epoch, chosen on validation only) beside it."""
        training = dict({"final_labels": self._label_rule} if self._label_rule else {}, **self.training_card(context))
        checkpoint = os.path.basename(self.publish_path)
        card = run_card(
            self.card, self.task, self.network_spec, checkpoint, context, stats, finished, self.amp, training
        )
        folder = os.path.dirname(self.publish_path)
        if context is not None and finished:
            metric = (stats.get("eval") or stats.get("train") or {}).get("key_metric_name")
            card["training"]["learning_curve"] = publish_curve(self._curve_path(context), folder, metric)
        atomic_write_json(os.path.join(folder, CARD), card, indent=2, default=str)


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
