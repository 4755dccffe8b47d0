"""The one place this app and the CLI reach into MONAI Label's (and Starlette's) internals: every private name of a
MONAI Label object (``_infers``, ``_publish_path``, ``_update_datastore_file``, ...) is used here and nowhere else
(``tests/unit/lib/test_stock.py`` checks both: that each name listed in :data:`PRIVATE_NAMES` still exists on the
installed monailabel, with the parameters used here, and that no other module of the app or the CLI uses one).

* the app's tasks: :func:`infers`, :func:`trainers`, :func:`strategies`, :func:`infer_network`;
* :class:`StockTrainTask`: ``BasicTrainTask`` with public names and hooks (the trainers of :mod:`lib.trainers`);
* :class:`StockLocalDatastore`: ``LocalDatastore`` with public names and an atomic index write (:mod:`lib.datastore`,
  the importer of :mod:`mri_label.importers`);
* the server: CORS middleware options, the session store, the infer response writer, the train queue, the stop
  signal.

Nothing of MONAI Label is monkeypatched: where its behaviour is replaced, a subclass here overrides it.
"""

import contextlib
import copy
import logging
import os
import re
import signal
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch
from fastapi.middleware.cors import CORSMiddleware
from filelock import FileLock
from ignite.engine import Events
from ignite.handlers import EarlyStopping
from monai.handlers import stopping_fn_from_metric
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.tasks.train.basic_train import BasicTrainTask
from monailabel.tasks.train.handler import PublishStatsAndModel

from mri_label.core.atomic import atomic_write_json

logger = logging.getLogger(__name__)

#: Every private name of MONAI Label used in this module: ``"module:Class"`` -> {name: None for an attribute, or the
#: parameter names of a method as called or overridden here}. ``tests/unit/lib/test_stock.py`` checks each against
#: the installed monailabel, and that no other module of the app or the CLI uses any of these names.
PRIVATE_NAMES: Dict[str, Dict[str, Optional[Tuple[str, ...]]]] = {
    "monailabel.interfaces.app:MONAILabelApp": {"_infers": None, "_trainers": None, "_strategies": None},
    "monailabel.tasks.infer.basic_infer:BasicInferTask": {"_get_network": ("self", "device", "data")},
    "monailabel.tasks.train.basic_train:BasicTrainTask": {
        "_model_dir": None,
        "_publish_path": None,
        "_stats_path": None,
        "_key_metric_filename": None,
        "_model_dict_key": None,
        "_load_strict": None,
        "_amp": None,
        "_find_unused_parameters": None,
        "_validate_transforms": ("transforms", "step", "name"),
        "_device": ("self", "context"),
        "_dataset": ("self", "context", "datalist", "is_train", "replace_rate"),
        "_create_network_and_optimizer": ("self", "context"),
        "_load_checkpoint": ("self", "context", "train_handlers"),
        "_create_evaluator": ("self", "context"),
    },
    "monailabel.datastore.dicom:DICOMWebDatastore": {"_client": None, "_dicom_info": ("self", "series_id")},
    "monailabel.datastore.local:LocalDatastore": {
        "_datastore_path": None,
        "_datastore": None,
        "_datastore_config_path": None,
        "_lock_file": None,
        "_ignore_event_config": None,
        "_config_ts": None,
        "_update_datastore_file": ("self", "lock"),
        "_to_id": ("self", "file"),
        "_filename": ("self", "id", "ext"),
    },
}


# ------------------------------------------------------------------------------------------- the app's tasks


def infers(app) -> Dict[str, Any]:
    """The app's infer tasks by name (``MONAILabelApp._infers``)."""
    return app._infers


def trainers(app) -> Dict[str, Any]:
    """The app's train tasks by name (``MONAILabelApp._trainers``)."""
    return app._trainers


def strategies(app) -> Dict[str, Any]:
    """The app's active-learning strategies by name (``MONAILabelApp._strategies``)."""
    return app._strategies


def infer_network(task, device, data: Dict):
    """The network of an infer task on ``device``, loaded from its checkpoint or taken from its cache (reloaded when
    the file changed): ``BasicInferTask._get_network``."""
    return task._get_network(device, data)


def datastore_folder(datastore) -> Optional[str]:
    """The folder of a local datastore (``LocalDatastore._datastore_path``), None for one without (a remote one)."""
    return getattr(datastore, "_datastore_path", None)


# ------------------------------------------------------------------------------------------- train tasks


def _one_process(context):
    """A shallow copy of a training ``context`` that MONAI Label's helpers treat as one process."""
    local = copy.copy(context)
    local.multi_gpu = False
    return local


class StockTrainTask(BasicTrainTask):
    """MONAI Label's ``BasicTrainTask`` through public names: the trainers of :mod:`lib.trainers` derive from this
    class and touch no private attribute or method of ``BasicTrainTask``.

    * read-only properties for what ``BasicTrainTask`` keeps privately (:attr:`model_dir`, :attr:`publish_path`,
      :attr:`stats_path`, :attr:`key_metric_filename`, :attr:`amp`), :meth:`load_weights`, :meth:`compose`;
    * :meth:`publisher`: the handler that writes the run's statistics and publishes its best checkpoint after each
      validation, on rank 0. ``BasicTrainTask.finalize`` builds MONAI Label's ``PublishStatsAndModel`` by its
      module-level name; :meth:`finalize` here attaches the hook's handler instead, then early stopping as MONAI
      Label does;
    * :meth:`rank_device`, :meth:`rank_datalist` and :meth:`attach_validation`: one rank of a run on several
      processes where MONAI Label assumes one process per GPU (CPU processes on gloo, torchrun; see
      :mod:`lib.trainers.distributed`). Their defaults keep MONAI Label's behaviour.
    """

    @property
    def model_dir(self) -> str:
        """Folder of the task's training runs (``<model_dir>/<run name>/``)."""
        return self._model_dir

    @property
    def publish_path(self) -> str:
        """The served checkpoint: where a training publishes its best one."""
        return self._publish_path

    @property
    def stats_path(self) -> str:
        """The task's ``train_stats.json`` (what a parent process that spawned the training returns)."""
        return self._stats_path

    @property
    def key_metric_filename(self) -> str:
        """File name of a run's best checkpoint in its run folder (``model.pt``)."""
        return self._key_metric_filename

    @property
    def amp(self) -> bool:
        """Whether the trainer runs with automatic mixed precision."""
        return self._amp

    def load_weights(self, network: torch.nn.Module, path: str, device) -> None:
        """Load the checkpoint at ``path`` into ``network`` as MONAI Label's loader does (its key, its strictness)."""
        checkpoint = torch.load(path, map_location=device)
        network.load_state_dict(checkpoint.get(self._model_dict_key, checkpoint), strict=self._load_strict)

    @staticmethod
    def compose(transforms, step: str, name: str):
        """A hook's transforms composed as MONAI Label composes them (its checks and messages)."""
        return BasicTrainTask._validate_transforms(transforms, step, name)

    # -------------------------------------------------------------------------- hooks

    def publisher(self, context):
        """The handler run on rank 0 after each validation (each epoch without validation items); MONAI Label's
        ``PublishStatsAndModel`` unless a subclass returns another."""
        return PublishStatsAndModel(
            self._stats_path,
            self._publish_path,
            self._key_metric_filename,
            context.start_ts,
            context.run_id,
            context.output_dir,
            context.trainer,
            context.evaluator,
        )

    def rank_device(self, context) -> Optional[torch.device]:
        """The device of this rank of a multi-process run; None: MONAI Label's choice (one GPU per process)."""
        return None

    def rank_datalist(self, context, datalist: List[Dict], is_train: bool) -> Optional[List[Dict]]:
        """This rank's share of ``datalist`` in a multi-process run; None: MONAI Label's own partition."""
        return None

    def attach_validation(self, context, evaluator, network: torch.nn.Module) -> None:
        """Called on every rank of a multi-process run with its evaluator, which runs ``network`` (not wrapped in
        DDP: its forward is a collective, and the ranks' validation shares may differ in length)."""

    # -------------------------------------------------------------------------- MONAI Label's steps, with the hooks

    def finalize(self, context):
        """``BasicTrainTask.finalize`` with :meth:`publisher`'s handler in place of its own: the publisher (rank 0),
        then early stopping on the key validation metric after ``early_stop_patience`` validations without gain."""
        if context.local_rank == 0:
            (context.evaluator or context.trainer).add_event_handler(Events.EPOCH_COMPLETED, self.publisher(context))
        patience = int(context.request.get("early_stop_patience", 0))
        if patience > 0 and context.evaluator:
            metric = next(iter(self.val_key_metric(context) or {}), None)
            if metric:
                stopper = EarlyStopping(patience, stopping_fn_from_metric(metric), context.trainer)
                context.evaluator.add_event_handler(Events.EPOCH_COMPLETED, stopper)
            else:
                logger.warning("No Validation Key Metric has been defined to enable Early Stopper")

    def _device(self, context):
        device = self.rank_device(context) if context.multi_gpu else None
        return super()._device(context) if device is None else device

    def _dataset(self, context, datalist, is_train, replace_rate=0.25):
        share = self.rank_datalist(context, datalist, is_train)
        if share is None:
            return super()._dataset(context, datalist, is_train, replace_rate)
        return super()._dataset(_one_process(context), share, is_train, replace_rate)  # not partitioned again

    def _create_network_and_optimizer(self, context):
        if not (context.multi_gpu and context.device.type == "cpu"):
            return super()._create_network_and_optimizer(context)
        network, optimizer = super()._create_network_and_optimizer(_one_process(context))
        # MONAI Label passes device_ids=[device.index], which DDP rejects for a module on the CPU
        network = torch.nn.parallel.DistributedDataParallel(
            network, find_unused_parameters=self._find_unused_parameters
        )
        return network, optimizer

    def _load_checkpoint(self, context, train_handlers):
        # MONAI Label maps cuda:0 to cuda:<device index>: only meaningful on a GPU
        super()._load_checkpoint(_one_process(context) if context.device.type == "cpu" else context, train_handlers)

    def _create_evaluator(self, context):
        if not context.multi_gpu:
            return super()._create_evaluator(context)
        wrapped = context.network
        network = getattr(wrapped, "module", wrapped)
        context.network = network
        try:
            evaluator = super()._create_evaluator(context)
        finally:
            context.network = wrapped
        if evaluator:
            self.attach_validation(context, evaluator, network)
        return evaluator


# ------------------------------------------------------------------------------------------- local datastore


class StockLocalDatastore(LocalDatastore):
    """MONAI Label's ``LocalDatastore`` through public names: its folders, file names and in-memory index, and
    :meth:`write_index`, which writes the index file ``datastore_v2.json`` atomically
    (:func:`mri_label.core.atomic.atomic_write_json`) wherever MONAI Label writes it (it truncates the file and
    rewrites it in place). Subclasses override :meth:`write_index` (locking, batching), not MONAI Label's method."""

    @property
    def folder(self) -> str:
        """The datastore folder."""
        return self._datastore_path

    def image_folder(self) -> str:
        return self._datastore.image_path()

    def label_folder(self, tag: Optional[str]) -> str:
        """The folder of the labels tagged ``tag`` (None: the labels' parent folder)."""
        return self._datastore.label_path(tag)

    def folders(self) -> Set[str]:
        """The datastore folder, the image folder and every label folder (also final and original)."""
        found = {self._datastore_path, self.image_folder(), self.label_folder(None)}
        found.update(self._datastore.labels_path().values())
        found.update(self.label_folder(tag) for tag in (DefaultLabelTag.FINAL, DefaultLabelTag.ORIGINAL))
        return found

    def split_name(self, file_name: str) -> Tuple[str, str]:
        """``(id, extension)`` of a file name as MONAI Label splits it (``a.nii.gz`` -> ``("a", ".nii.gz")``)."""
        return self._to_id(file_name)

    def file_name(self, image_id: str, ext: str) -> str:
        """The file name MONAI Label stores an image or label of ``image_id`` under."""
        return self._filename(image_id, ext)

    def register_image(self, image_id: str, info: Dict[str, Any], ext: str) -> None:
        """Record image ``image_id`` (no labels yet) in the in-memory index."""
        self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext))

    def register_label(self, image_id: str, tag: str, info: Dict[str, Any], ext: str) -> Optional[str]:
        """Record the ``tag`` label of ``image_id`` in the in-memory index; the extension of the label it replaces,
        or None."""
        labels = self._datastore.objects[image_id].labels
        old = labels.get(tag)
        labels[tag] = DataModel(info=info, ext=ext)
        return old.ext if old is not None else None

    def index_lock(self) -> FileLock:
        """MONAI Label's lock file of the index (held by every process that reads or writes it)."""
        return FileLock(self._lock_file)

    def write_index(self, lock: bool = True) -> None:
        """Write the in-memory index to ``datastore_v2.json`` atomically, holding :meth:`index_lock` unless
        ``lock`` is False (the caller holds it)."""
        with self.index_lock() if lock else contextlib.nullcontext():
            self._ignore_event_config = True  # MONAI Label's file watcher: this change is ours
            content = self._datastore.model_dump(exclude={"base_path"})
            atomic_write_json(self._datastore_config_path, content, indent=2, default=str)
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

    def _update_datastore_file(self, lock=True):
        self.write_index(lock=lock)


class StockDICOMwebDatastore(DICOMWebDatastore):
    """MONAI Label's ``DICOMWebDatastore`` through public names: :attr:`web_client` (the PACS's DICOMweb client),
    :meth:`image_folder` (its local cache of downloaded series) and :meth:`series_info`, a hook over the DICOM info it
    records of each series (subclasses override it, not MONAI Label's method)."""

    @property
    def web_client(self):
        """The DICOMweb client of the PACS."""
        return self._client

    def image_folder(self) -> str:
        """The folder of the downloaded series (one sub-folder per series UID)."""
        return self._datastore.image_path()

    def series_info(self, info: Dict[str, Any]) -> Dict[str, Any]:
        """The info recorded of a series, from the DICOM info MONAI Label read (default: as it is)."""
        return info

    def _dicom_info(self, series_id):
        return self.series_info(super()._dicom_info(series_id))


# ------------------------------------------------------------------------------------------- the server

#: Origins admitted by default: pages served from this machine (any port), over http or https.
LOOPBACK_ORIGINS = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?"
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+$")


def cors_origins(conf_value: Optional[str], env_origins: Sequence[str] = ()) -> List[str]:
    """The origins ``--conf cors_origins`` admits besides loopback (comma separated; ``*`` for any).

    Args:
        conf_value: the ``--conf cors_origins`` text, or None.
        env_origins: MONAI Label's ``MONAI_LABEL_CORS_ORIGINS`` (kept: it is set on purpose).

    Raises:
        ValueError: naming ``cors_origins`` and the entry that is not ``scheme://host[:port]`` or ``*``.
    """
    origins = [str(o).rstrip("/") for o in env_origins]
    for entry in (conf_value or "").split(","):
        entry = entry.strip().rstrip("/")
        if not entry:
            continue
        if entry != "*" and not _ORIGIN.match(entry):
            raise ValueError(f"--conf cors_origins entries must be scheme://host[:port] or *, got {entry!r}")
        origins.append(entry)
    return origins


def restrict_cors(server, origins: Sequence[str]) -> None:
    """Replace MONAI Label's CORS setup (any origin, with credentials) by loopback plus ``origins``.

    Relies on MONAI Label adding one ``CORSMiddleware`` to ``server.user_middleware`` and on Starlette building
    the middleware stack from it again when ``server.middleware_stack`` is None.
    """
    options = dict(
        allow_origins=list(origins),
        allow_origin_regex=LOOPBACK_ORIGINS,
        allow_credentials=True,
        allow_methods=["*"],
        allow_headers=["*"],
    )
    found = False
    for middleware in server.user_middleware:
        if middleware.cls is CORSMiddleware:
            middleware.kwargs = options
            found = True
    if not found:
        server.user_middleware.append(_middleware(CORSMiddleware, **options))
    server.middleware_stack = None  # rebuilt, with the options above, at the next request


def _middleware(cls, **kwargs):
    from starlette.middleware import Middleware

    return Middleware(cls, **kwargs)


def sessions(instance):
    """MONAI Label's session store of the app (None when sessions are off)."""
    return instance.sessions()


def infer_config(instance) -> Dict:
    """The infer defaults MONAI Label merges into every infer request (``info()["config"]["infer"]``)."""
    return dict(instance.info().get("config", {}).get("infer", {}))


def send_infer_response(datastore, result: Dict, output, background_tasks):
    """MONAI Label's infer answer (JSON, image or multipart), from its endpoint module."""
    from monailabel.endpoints.infer import send_response

    return send_response(datastore, result, output, background_tasks)


def log_view(path: str, lines: Optional[int], html: Optional[bool], text: Optional[bool], refresh: Optional[int]):
    """MONAI Label's ``GET /logs/`` answer (last ``lines``, HTML or text) for the log file ``path``."""
    from monailabel.endpoints.logs import get_logs

    return get_logs(path, lines, html, text, refresh)


def trainer_defaults(instance, task: str) -> Dict:
    """The config (name -> default) of a train task: what ``params`` may set."""
    trainer = trainers(instance).get(task)
    return dict(trainer.config() or {}) if trainer is not None else {}


def train_all(params: Optional[dict], run_sync: Optional[bool]):
    """MONAI Label's ``POST /train/`` (every task queued)."""
    from monailabel.endpoints.train import run

    return run(params, run_sync)


def kill_background_tasks() -> int:
    """Kill the processes of MONAI Label's background tasks (training, batch infer, scoring) and their children;
    how many were killed. A killed training resumes from its last completed epoch (``{"resume": true}``)."""
    import psutil
    from monailabel.utils.async_tasks.utils import background_processes

    killed = 0
    for processes in list(background_processes.values()):
        for process in list(processes.values()):
            try:
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
                process.kill()
                killed += 1
            except (psutil.Error, OSError):
                pass
    return killed


def _exit_after(grace_s: float) -> None:
    time.sleep(grace_s)
    logger.warning(f"still running {grace_s:.0f} s after the stop signal (a request holds it): exiting now")
    logging.shutdown()
    os._exit(0)


def stop_promptly(grace_s: float) -> None:
    """On SIGTERM or SIGINT, kill the background tasks (:func:`kill_background_tasks`; MONAI Label waits for a
    training to end, so the server ignored SIGTERM during one), pass the signal on to uvicorn's handler, and end the
    process ``grace_s`` seconds later if a request (a strategy or an inference on a worker thread) still holds it.

    Relies on uvicorn having installed its handlers with :func:`signal.signal` before the app starts. Only from the
    main thread (elsewhere, e.g. in a test client, nothing is installed).

    Raises:
        ValueError: ``grace_s`` not positive.
    """
    if not grace_s > 0:
        raise ValueError(f"grace_s must be > 0, got {grace_s}")
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(number)
        if getattr(previous, "mri_label_stop", False):
            continue

        def handler(signum, frame, previous=previous):
            killed = kill_background_tasks()
            logger.info(f"stop signal {signum}: {killed} background task(s) killed; exiting within {grace_s:.0f} s")
            threading.Thread(target=_exit_after, args=(grace_s,), daemon=True, name="mri-label-exit").start()
            if callable(previous):
                previous(signum, frame)
            else:
                raise SystemExit(0)

        setattr(handler, "mri_label_stop", True)  # a mark on the function, read back above
        signal.signal(number, handler)
