"""mri-label: a MONAI Label app serving brain-MRI models (see the README for the task list).

Start: ``monailabel start_server --app apps/mri_app --studies DIR --conf models all``.
``--conf models`` takes ``all`` (the default) or a comma-separated list of task names;
``--conf model_dir DIR`` puts checkpoints and training runs in DIR instead of the server's own model folder
(``<state folder>/model``, :mod:`lib.server_state`: per studies folder, so two servers never mix; the log
file is ``<state folder>/logs/app.log``; ``--conf state_dir DIR`` chooses the state folder);
until a task is trained there, its shipped checkpoint (``<app>/shipped/<task>``) is served
(``--conf shipped_models none`` serves none).
``--studies`` may be a DICOMweb root (``http://127.0.0.1:8042/dicom-web``): ``--conf dicomweb_modality``
(default ``MR``) selects the series; final labels go back to the PACS as DICOM-SEG with their measurements as DICOM SR
(:mod:`lib.dicomweb`, :mod:`lib.dicom_sr`).
"""

import logging
import os
from typing import Dict, Optional, Type

from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.config import TaskConfig
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

import lib.configs
import lib.configs.pipelines
from lib import access, server_state, stock
from lib.activelearning import UNCERTAINTY, ModelScorer, RetrainScheduler, UncertaintyStrategy, labelled_task
from lib.conf import conf_float, conf_int
from lib.datastore import (
    DEFAULT_MAX_VOXELS,
    MRIDatastore,
    check_image_file,
    read_header,
    read_spacing,
    spatial_size,
    update_info_entry,
)
from lib.dicomweb import MRIDICOMwebDatastore, dicomweb_client
from lib.dicomweb import search_filter as dicomweb_search_filter
from lib.errors import ImageNotFound, bad_input
from lib.follow_up import follow_up, study_of
from lib.pipeline_config import PipelineConfig
from lib.request_checks import DEFAULT_MAX_INFER_VOXELS, infer_cost
from lib.routes import install as install_routes
from lib.stock import cors_origins, stop_promptly
from lib.transforms import measure_label_file

logger = logging.getLogger(__name__)


def discover_configs() -> Dict[str, type]:
    """Task name (module name in ``lib/configs``) -> its TaskConfig class (:func:`lib.configs.discover`)."""
    return lib.configs.discover()


def discover_pipelines() -> Dict[str, Type[PipelineConfig]]:
    """Pipeline name (module name in ``lib/configs/pipelines``) -> its PipelineConfig class
    (:func:`lib.configs.pipelines.discover`)."""
    return lib.configs.pipelines.discover()


class MRIApp(MONAILabelApp):
    """Registers an infer and a train task per TaskConfig, plus an infer task per PipelineConfig whose required
    stages are served (``tumor_pipeline``)."""

    studies: str  # set by MONAILabelApp
    pipelines: Dict[str, Type[PipelineConfig]]  # name -> declaration (lib/configs/pipelines)

    def __init__(self, app_dir, studies, conf):
        # per-server state (lib.server_state): the model folder and the log file of a server on these studies
        self.model_dir = server_state.model_dir(studies, conf)
        self.log_file = server_state.log_file(studies, conf)
        server_state.log_to(self.log_file, os.path.join(app_dir, "logs", server_state.LOG_NAME))
        logger.info(f"studies {studies}: model folder {self.model_dir}, log {self.log_file}")
        legacy = server_state.legacy_checkpoints(app_dir, self.model_dir)
        if legacy:
            logger.warning(
                f"{os.path.join(app_dir, 'model')} holds checkpoints of {legacy} that this server does not "
                f"serve (its model folder is {self.model_dir}); pass --conf model_dir to serve them"
            )
        configs = discover_configs()
        wanted = [m.strip() for m in (conf.get("models") or "all").split(",") if m.strip()]
        unknown = [m for m in wanted if m != "all" and m not in configs]
        if unknown:
            raise ValueError(f"--conf models names unknown task(s) {unknown}; available: all, {', '.join(configs)}")
        names = list(configs) if "all" in wanted else wanted
        self.models: Dict[str, TaskConfig] = {}
        for name in names:
            self.models[name] = configs[name]()
            self.models[name].init(name, self.model_dir, conf, None)
            self.models[name].check_checkpoints()
        logger.info(f"+++ Using models: {list(self.models)}")
        self.pipelines = discover_pipelines()
        for name, pipeline in self.pipelines.items():
            pipeline.check(name, list(configs))
        self.max_voxels = conf_int(conf, "max_voxels", DEFAULT_MAX_VOXELS, low=1)
        self.stop_grace_s = conf_float(conf, "stop_grace_s", 10.0, low=0.5)
        self.max_infer_voxels = conf_int(conf, "max_infer_voxels", DEFAULT_MAX_INFER_VOXELS, low=1)
        self.cors_origins = cors_origins(conf.get("cors_origins"), settings.MONAI_LABEL_CORS_ORIGINS)
        access.configure(conf.get("auth_issuer"), conf.get("auth_client_id"), conf.get("auth_audience"))
        retrain_after = conf_int(conf, "retrain_after", 0, low=0)
        self.retrain = None
        if retrain_after:
            self.retrain = RetrainScheduler(
                self.model_dir,
                retrain_after,
                conf_int(conf, "retrain_epochs", 5, low=1),
                on_run_end=self._after_retraining,
            )
        self._scorer = ModelScorer(self, samples=conf_int(conf, "mc_dropout_samples", 5, low=2))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="mri-label",
            description="Brain MRI: sequence, dementia stage, tumor gate / segmentation / pipeline, hippocampus",
            version="0.1.0",
        )

    def init_datastore(self) -> Datastore:
        """A local folder (:class:`MRIDatastore`), or a DICOMweb PACS (``--studies http(s)://.../dicom-web``):
        its ``--conf dicomweb_modality`` series (default MR), final labels stored back as DICOM-SEG."""
        if self.studies.startswith(("http://", "https://")):
            if settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa"):
                return super().init_datastore()
            self.studies = self.studies.strip().rstrip("/")
            cache = (settings.MONAI_LABEL_DATASTORE_CACHE_PATH or settings.MONAI_LABEL_DICOMWEB_CACHE_PATH).strip()
            logger.info(f"DICOMweb studies: {self.studies}")
            return MRIDICOMwebDatastore(
                dicomweb_client(self.studies),
                dicomweb_search_filter(self.conf),
                task_labels=self.segmentation_labels(),
                measure=self.measure_label,
                lesion_labels={n: c.lesions for n, c in self.models.items() if getattr(c, "lesions", None)},
                cache_path=cache or None,
                max_upload_mb=conf_float(self.conf, "max_upload_mb", 2048.0, low=1.0),
                fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME,
            )
        return MRIDatastore(
            self.studies,
            max_upload_mb=conf_float(self.conf, "max_upload_mb", 2048.0, low=1.0),
            max_voxels=self.max_voxels,
            task_labels=self.segmentation_labels(),
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        infers = {name: config.infer_in(self.models) for name, config in self.models.items()}
        for name, pipeline in self.pipelines.items():  # a pipeline is served where its required stages are
            infer = pipeline.infer_in(name, infers)
            if infer is not None:
                infers[name] = infer
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        return {name: config.trainer() for name, config in self.models.items()}

    def init_strategies(self) -> Dict[str, Strategy]:
        def served(method):  # {task: (kind, volume_only)} of the served tasks whose config declares this strategy
            return lambda: {n: (c.kind, c.volume_only) for n, c in self.models.items() if c.uncertainty == method}

        strategies: Dict[str, Strategy] = {"random": Random(), "first": First()}
        for method, (kind, description) in UNCERTAINTY.items():
            strategies[method] = UncertaintyStrategy(method, kind, served(method), self._scorer, description)
        return strategies

    def on_save_label(self, image_id, label_id):
        """A ``final`` segmentation label counts towards its task's next fine-tuning run (``--conf retrain_after``)."""
        result = super().on_save_label(image_id, label_id)
        if self.retrain is not None:
            task = labelled_task(self.datastore(), image_id, label_id, self.segmentation_labels())
            if task:
                self.retrain.note_label(task, image_id)
        return result

    def on_class_label(self, task, image_id):
        """A class correction (``PUT /classlabel``) counts towards its task's next fine-tuning run."""
        if self.retrain is not None and task in self.models:
            self.retrain.note_label(task, image_id)

    def on_init_complete(self):
        super().on_init_complete()
        if self.retrain is not None:
            self.retrain.resume()

    def _after_retraining(self, run):
        """After a promoted fine-tuning run, refresh the cached uncertainty scores of its task in the background."""
        if not run.get("promoted"):
            return
        strategy = stock.strategies(self).get(self.models[run["task"]].uncertainty)
        scores = strategy.rescore(run["task"], self.datastore())
        logger.info(
            f"after retraining {run['task']}: {strategy.method} scores of {len(scores)} unlabelled images cached"
        )

    def init_scoring_methods(self):
        return {}

    def next_sample(self, request):
        strategy = request.get("strategy") or "random"
        strategies = stock.strategies(self)
        if strategy not in strategies:
            raise bad_input(404, f"no active-learning strategy {strategy!r}; strategies: {sorted(strategies)}")
        return super().next_sample(request)

    def check_infer_cost(self, model: str, size, spacing) -> None:
        """413 when the networks of ``model`` would see more than ``--conf max_infer_voxels`` voxels for an image of
        ``size`` at ``spacing`` (slice-wise tasks: slices x their input size squared; see :func:`infer_cost`); a
        pipeline's: its served stages' together."""
        pipeline = self.pipelines.get(model)
        stages = pipeline.stages() if pipeline is not None and model not in self.models else (model,)
        names = [n for n in stages if n in self.models]
        cost = sum(infer_cost(size, spacing, self.models[n]) for n in names)
        if cost > self.max_infer_voxels:
            raise bad_input(
                413,
                f"{model} on an image of size {tuple(size)} means {cost:,} voxels of work; this server "
                f"takes at most {self.max_infer_voxels:,} per request (--conf max_infer_voxels)",
            )

    def measure_label(self, task: str, image_path: str, label_path: str) -> Optional[Dict]:
        """``measurements`` of a label map on an image as segmentation task ``task``'s infer measures its answer (the
        DICOM SR of a final label, :mod:`lib.dicom_sr`): the infer's own ``measure_label`` where it has one, else
        volumes per label and the lesions of the label its config declares (:func:`lib.transforms.measure_label_file`);
        None for a task that is no segmentation task served here."""
        config, infer = self.models.get(task), stock.infers(self).get(task)
        if config is None or infer is None or getattr(config, "kind", "") != "segmentation":
            return None
        own = getattr(infer, "measure_label", None)
        if callable(own):
            return own(image_path, label_path)
        return measure_label_file(image_path, label_path, config.labels, lesions=getattr(config, "lesions", None))

    def segmentation_labels(self) -> Dict[str, Dict[str, int]]:
        """Segmentation task -> its label names and values."""
        return {n: c.labels for n, c in self.models.items() if c.kind == "segmentation"}

    def classifier_classes(self) -> Dict[str, list]:
        """Classifier task -> its class names."""
        return {n: list(c.labels) for n, c in self.models.items() if getattr(c, "kind", "") == "classification"}

    def server_mode(self, mode: bool):
        super().server_mode(mode)
        if mode:
            from monailabel.app import app as server

            install_routes(server, self.cors_origins)
            stop_promptly(self.stop_grace_s)

    def infer(self, request, datastore=None):
        """MONAI Label's infer, with 4xx answers for what the caller got wrong, and predictions recorded; a task
        whose config declares ``measures`` gets the change over time in its result (``change_over_time``) and its
        result stored in the image's info for the next study (:mod:`lib.follow_up`)."""
        model = request.get("model")
        task = stock.infers(self).get(model)
        if task is None:
            raise bad_input(404, f"model {model!r} is not served here; models: {sorted(stock.infers(self))}")
        image = request.get("image")
        datastore = datastore or self.datastore()
        if not isinstance(image, str) or not image:
            raise bad_input(422, "no image given: pass an image id or upload a file")
        uploaded = os.path.isabs(image) and os.path.isfile(image)  # MONAI Label put an upload in a temporary file
        path = image if uploaded else datastore.get_image_uri(image)
        if not path or not os.path.exists(path):
            raise ImageNotFound(image)
        if os.path.isfile(path):
            what = "the uploaded image" if uploaded else f"image {image!r}"
            size, _ = read_header(path, what, self.max_voxels)  # costs checked from the header, before reading
            if getattr(task, "volume_only", False) and len(spatial_size(size)) < 3:  # (W, H, 1) is a slice
                raise bad_input(422, f"{model} needs a 3D volume, got a 2D image of size {size}")
            self.check_infer_cost(model, spatial_size(size), read_spacing(path))
            if uploaded:  # read it whole once (truncated, NaN/inf)
                check_image_file(path, what, self.max_voxels)
        stages = task.stages() if hasattr(task, "stages") else [task]
        untrained = [t for t in stages if hasattr(t, "get_path") and t.get_path() is None]
        if untrained:
            paths = ", ".join(t.path[-1] for t in untrained if t.path)
            raise bad_input(
                409, f"model {model!r} is not trained yet: train it (POST /train/<task>) or put a checkpoint at {paths}"
            )
        measures = getattr(self.models.get(model), "measures", None)
        study = None
        if measures:  # subject and study date, checked before the model runs (lib.follow_up)
            try:
                study = study_of(datastore, None if uploaded else image, path, request)
            except ValueError as error:
                raise bad_input(422, str(error)) from None
        result = super().infer(request, datastore)
        params = result.get("params") or {}
        if study is not None and isinstance(params, dict) and params.get("measurements") is not None:
            params["change_over_time"] = follow_up(
                datastore, model, str(measures), None if uploaded else image, study, params, request
            )
        if task.type == InferType.CLASSIFICATION and path != image and "probabilities" in params:
            prediction = {
                k: params.get(k) for k in ("label", "probabilities", "checkpoint", "probability", "threshold")
            }
            update_info_entry(
                datastore, image, "predictions", model, {k: v for k, v in prediction.items() if v is not None}
            )
        return result
