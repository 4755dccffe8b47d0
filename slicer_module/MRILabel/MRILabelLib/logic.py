"""The module's logic without Slicer: everything the panel does, on files and image ids.

The Slicer ``MRILabelLogic`` converts nodes to files and delegates here. Long actions report progress
through a callback ``progress(message: str, fraction: float | None, detail)``, where ``detail`` is a
:class:`~MRILabelLib.progress.TrainingProgress` for training and None otherwise.
"""

import os
import tempfile
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Union, cast

from .client import ServerClient
from .errors import (
    NO_CAM_SENTENCE,
    ImageTooLargeError,
    ServerHTTPError,
    TrainingFailedError,
    UnexpectedAnswerError,
    plain_sentence,
)
from .history import ModelHistory, RollbackResult, parse_history, parse_rollback
from .progress import TrainingProgress, read_progress
from .results import (
    ClassificationResult,
    SegmentationResult,
    UncertaintyMap,
    label_info_for,
    parse_classification,
    parse_segmentation,
    read_uncertainty,
)
from .review import (
    DECISIONS,
    PENDING,
    REVIEW_STATES,
    Review,
    ReviewItem,
    check_comment,
    parse_decision,
    parse_reviews,
    review_state,
)

ProgressCallback = Callable[[str, Optional[float], Optional[TrainingProgress]], None]


class TaskInfo(NamedTuple):
    """A task the server serves, from ``/info``."""

    name: str
    kind: str  # "classification" or "segmentation"
    labels: Dict[str, int]
    description: str
    trainable: bool
    #: Whether ``/info`` says the task answers voxel uncertainty maps (None: it does not say).
    uncertainty: Optional[bool] = None

    @property
    def classes(self) -> List[str]:
        """Label names in label-value order (the classes of a classifier)."""
        return [name for name, _ in sorted(self.labels.items(), key=lambda kv: kv[1])]

    @property
    def offers_uncertainty(self) -> bool:
        """Whether the panel offers *Show uncertainty* for this task: what ``/info`` says, else every segmentation
        task (a task that then gives none is answered with a sentence, see :meth:`ServerLogic.uncertainty_map`)."""
        return self.kind == "segmentation" if self.uncertainty is None else self.uncertainty


class TrainingRun(NamedTuple):
    """A training started from the panel."""

    task: str
    run_id: str


class NextSample(NamedTuple):
    """The image an active-learning strategy picked, downloaded for viewing."""

    image_id: str
    path: str
    info: Dict


class ReviewSample(NamedTuple):
    """An image and its ``final`` label, downloaded for review: the label's values are named by its task's labels
    (``label_names``; empty when the label belongs to no task the server serves)."""

    image_id: str
    task: Optional[str]
    image_path: str
    label_path: str
    label_names: Dict[str, int]


def _missing_route(error: ServerHTTPError, what: str) -> BaseException:
    """A 404 of FastAPI's own (``Not Found``: the route does not exist) as a sentence saying the server lacks
    ``what``; any other error unchanged."""
    if error.status == 404 and (error.detail or "").strip().lower() in ("not found", ""):
        return ValueError(
            f"This server has no {what} ({error.method} {error.path} does not exist); it needs an mri-label server "
            "with model history and review"
        )
    return error


def declared_uncertainty(model: Dict) -> Optional[bool]:
    """What a model's ``/info`` entry says about voxel uncertainty maps: its own ``uncertainty`` flag (true/false),
    else True where its ``config`` (the request options MONAI Label lists with their defaults) has an
    ``uncertainty`` option; None when it says nothing (the mri-label server of issue 18 says nothing)."""
    flag = model.get("uncertainty")
    if isinstance(flag, bool):
        return flag
    config = model.get("config")
    if isinstance(config, dict) and "uncertainty" in config:
        return True
    return None


def _report(progress: Optional[ProgressCallback], message: str, fraction: Optional[float] = None, detail=None) -> None:
    if progress is not None:
        progress(message, fraction, detail)


class ServerLogic:
    """What the panel does against one mri-label server.

    Args:
        server_url: the server's address (used when ``client`` is None).
        client: a ready :class:`ServerClient` (to set timeouts and retries).
        max_upload_mb: images larger than this are refused before upload.
        poll_interval_s: wait between training status polls.
        training_timeout_s: :meth:`wait_for_training` gives up after this long.
        work_dir: where downloaded images and result files go (a new temporary folder when None).
    """

    def __init__(
        self,
        server_url: Optional[str] = None,
        client: Optional[ServerClient] = None,
        max_upload_mb: float = 512.0,
        poll_interval_s: float = 1.0,
        training_timeout_s: float = 3600.0,
        work_dir: Optional[str] = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if client is None and not server_url:
            raise ValueError(f"server_url must be given when client is None, got {server_url!r}")
        if not max_upload_mb or max_upload_mb <= 0:
            raise ValueError(f"max_upload_mb must be a positive number, got {max_upload_mb!r}")
        if poll_interval_s <= 0 or training_timeout_s <= 0:
            raise ValueError(
                f"poll_interval_s and training_timeout_s must be > 0, "
                f"got {poll_interval_s!r} and {training_timeout_s!r}"
            )
        self.client = client or ServerClient(cast(str, server_url))  # given where client is None (checked above)
        self.max_upload_bytes = float(max_upload_mb) * 1e6
        self.poll_interval_s, self.training_timeout_s = float(poll_interval_s), float(training_timeout_s)
        self.work_dir = work_dir or tempfile.mkdtemp(prefix="mrilabel_")
        self._sleep = sleep
        self._info: Optional[Dict] = None
        self._best_fraction: Dict[str, float] = {}

    @staticmethod
    def describe(error: BaseException) -> str:
        """The one plain sentence for ``error`` (see :func:`MRILabelLib.errors.plain_sentence`)."""
        return plain_sentence(error)

    # --- signing in -------------------------------------------------------------------------------------

    def sign_in(self, username: str = "", password: str = "") -> bool:
        """Log in where the server wants it (MONAI Label auth on); nothing to do otherwise.

        Args:
            username: the realm user (Keycloak) the server's ``/auth/token`` checks.
            password: that user's password.

        Returns:
            True when a login was made, False when the server needs none (the credentials are then unused).

        Raises:
            ValueError: the server wants a login and a user name or password is missing.
            ServerHTTPError: 401 for a wrong user name or password.
        """
        if not self.client.auth_enabled():
            return False
        self.client.login(username, password)
        return True

    # --- what the server offers ------------------------------------------------------------------------

    def info(self, refresh: bool = False) -> Dict:
        """The server's ``/info`` (cached; ``refresh`` asks again)."""
        if self._info is None or refresh:
            info = self.client.info()
            if not isinstance(info, dict) or not isinstance(info.get("models"), dict):
                raise UnexpectedAnswerError("/info/ has no 'models'")
            self._info = info
        return self._info

    def tasks(self, refresh: bool = False) -> List[TaskInfo]:
        """Every task the server serves, sorted by name."""
        info = self.info(refresh)
        trainers = set(info.get("trainers") or {})
        return [
            TaskInfo(
                name,
                str(m.get("type", "")),
                {str(k): int(v) for k, v in (m.get("labels") or {}).items()},
                str(m.get("description", "")),
                name in trainers,
                declared_uncertainty(m),
            )
            for name, m in sorted(info["models"].items())
        ]

    def task(self, name: str) -> TaskInfo:
        """The task called ``name``; ValueError naming it when the server does not serve it."""
        for task in self.tasks():
            if task.name == name:
                return task
        raise ValueError(
            f"task {name!r} is not served by {self.client.base_url}; tasks: {[t.name for t in self.tasks()]}"
        )

    def strategies(self) -> List[str]:
        """Names of the server's active-learning strategies."""
        return sorted(self.info().get("strategies") or {})

    # --- images and inference --------------------------------------------------------------------------

    def has_image(self, image_id: str) -> bool:
        """Whether the server's datastore holds ``image_id``."""
        if not image_id:
            raise ValueError(f"image_id must be a non-empty id, got {image_id!r}")
        return self.client.image_exists(image_id)

    def ensure_image(
        self, image_id: str, image_path: Optional[str] = None, progress: Optional[ProgressCallback] = None
    ) -> str:
        """Make sure the datastore holds ``image_id``, uploading ``image_path`` when it does not.

        Raises:
            ValueError: the server lacks the image and no readable ``image_path`` was given.
            ImageTooLargeError: the file is over ``max_upload_mb`` (nothing is sent).
        """
        if self.has_image(image_id):
            return image_id
        if not image_path or not os.path.isfile(image_path):
            raise ValueError(
                f"image_path must name a file to upload, because the server has no image {image_id!r} "
                f"(got {image_path!r})"
            )
        size = os.path.getsize(image_path)
        if size > self.max_upload_bytes:
            raise ImageTooLargeError(size, self.max_upload_bytes)
        _report(progress, f"Uploading {os.path.basename(image_path)} ({size / 1e6:.1f} MB) as {image_id}")
        try:
            self.client.upload_image(image_id, image_path, timeout_s=max(self.client.timeout_s, 300))
        except ServerHTTPError as error:
            if error.status == 413:
                raise ImageTooLargeError(size, None) from None
            raise
        return image_id

    def run_task(
        self,
        task: str,
        image_id: str,
        image_path: Optional[str] = None,
        params: Optional[Dict] = None,
        progress: Optional[ProgressCallback] = None,
        folder: Optional[str] = None,
    ) -> Union[ClassificationResult, SegmentationResult]:
        """Run ``task`` on an image (uploaded first when the server does not have it).

        Args:
            folder: where the mask file goes (``work_dir`` when None).

        Returns:
            :class:`ClassificationResult` for a classifier (the answer has ``probabilities``), else
            :class:`SegmentationResult` with the mask file written under ``folder``.
        """
        if not task:
            raise ValueError(f"task must be a task name, got {task!r}")
        self.ensure_image(image_id, image_path, progress)
        _report(progress, f"Running {task} on {image_id}")
        result, file_path = self.client.infer(
            task, image_id, params or {}, output="all", folder=folder or self.work_dir
        )
        if isinstance(result, dict) and "probabilities" in result:
            return parse_classification(result, task)
        if file_path is None:
            raise UnexpectedAnswerError(f"{task} answered without a mask file")
        return parse_segmentation(result, file_path, task)

    def class_activation_map(
        self,
        task: str,
        image_id: str,
        image_path: Optional[str] = None,
        progress: Optional[ProgressCallback] = None,
        folder: Optional[str] = None,
    ) -> Optional[str]:
        """Ask a classifier for its class-activation map (``{"cam": true}``), written into ``folder`` (``work_dir``
        when None).

        Returns:
            The path of the map (a NIfTI float volume aligned with the image, values 0..1), or None when the
            server's answer carries no file; then ``progress`` is told :data:`NO_CAM_SENTENCE`.

        Raises:
            ValueError: ``task`` is not a classifier of this server.
        """
        if self.task(task).kind != "classification":
            raise ValueError(f"task must be a classifier to give a class-activation map, got {task!r}")
        self.ensure_image(image_id, image_path, progress)
        _report(progress, f"Asking {task} for its class-activation map on {image_id}")
        result, file_path = self.client.infer(
            task, image_id, {"cam": True}, output="all", folder=folder or self.work_dir
        )
        if "probabilities" not in result:
            raise UnexpectedAnswerError(f"{task} answered without class probabilities")
        if file_path is None:
            _report(progress, NO_CAM_SENTENCE)
        return file_path

    def report(
        self,
        task: str,
        image_id: str,
        image_path: Optional[str] = None,
        params: Optional[Dict] = None,
        progress: Optional[ProgressCallback] = None,
        folder: Optional[str] = None,
    ) -> str:
        """The one-page report (PDF) of ``task`` on an image (uploaded first when the server does not have it),
        saved into ``folder`` (``work_dir`` when None); returns the file's path.

        The server runs the task again and draws the page from that result: the measurements, the change since the
        subject's previous study, the model's card. ``params``: :func:`MRILabelLib.report.study_params` (``subject``,
        ``study_date``, ``age``, ``sex``).

        Raises:
            ServerHTTPError: 422 for a task that makes no report (the server's sentence lists those that do).
            UnexpectedAnswerError: the answer is not a PDF.
        """
        if not task:
            raise ValueError(f"task must be a task name, got {task!r}")
        self.ensure_image(image_id, image_path, progress)
        _report(progress, f"Asking {task} for its report on {image_id}")
        return self.client.report(task, image_id, params or {}, folder=folder or self.work_dir)

    def require_uncertainty(self, task: str) -> None:
        """Raise ValueError (one sentence) unless ``task`` offers uncertainty maps (:attr:`TaskInfo.offers_uncertainty`;
        answered from the cached ``/info``)."""
        if not self.task(task).offers_uncertainty:
            raise ValueError(
                f"{task} does not give uncertainty maps; choose a segmentation task that does "
                "(on an mri-label server: tumor_seg or hippocampus)"
            )

    def uncertainty_map(
        self,
        task: str,
        image_id: str,
        image_path: Optional[str] = None,
        progress: Optional[ProgressCallback] = None,
        folder: Optional[str] = None,
    ) -> UncertaintyMap:
        """Ask a segmentation task for its voxel uncertainty map (``{"uncertainty": true}``), written into ``folder``
        (``work_dir`` when None), with the summary of the slices to correct first.

        Returns:
            :class:`~MRILabelLib.results.UncertaintyMap`; its ``summary`` is None (and ``problem`` says why) when the
            server's summary cannot be read; the map is still there.

        Raises:
            ValueError: the task does not offer uncertainty maps (``/info``, or a classifier where it says nothing),
                or it answered without the ``uncertainty`` summary (its usual result; ``tumor_pipeline`` even
                answers its segmentation stage's map without one): nothing is loaded from that answer.
            ServerHTTPError: the server refused the request (e.g. 422 from a server that checks the option).
        """
        self.require_uncertainty(task)
        self.ensure_image(image_id, image_path, progress)
        _report(progress, f"Asking {task} for its uncertainty map on {image_id}")
        result, file_path = self.client.uncertainty_map(task, image_id, folder=folder or self.work_dir)
        if not isinstance(result, dict) or "uncertainty" not in result:
            if file_path is not None and os.path.isfile(file_path):
                os.remove(file_path)  # whatever it is (its usual mask, a stage's map), it is never shown as a map
            raise ValueError(
                f"{task} answered without an uncertainty summary, so this server does not give uncertainty maps "
                "for it; on an mri-label server tumor_seg and hippocampus do"
            )
        if file_path is None:
            raise UnexpectedAnswerError(f"{task} answered an uncertainty summary without the map file")
        return read_uncertainty(result, file_path, task)

    # --- corrections -----------------------------------------------------------------------------------

    def submit_class(self, task: str, image_id: str, label: str) -> Dict:
        """Record the correct class of an image (the server checks the class name)."""
        if not label:
            raise ValueError(f"label must be a class name, got {label!r}")
        return self.client.put_class_label(task, image_id, label)

    def submit_segmentation(
        self, task: str, image_id: str, label_path: str, segment_names: List[str], tag: str = "final"
    ) -> Dict:
        """Save an edited label map as the image's ``tag`` label, naming its values by the task's labels."""
        if not label_path or not os.path.isfile(label_path):
            raise ValueError(f"label_path must be an existing label file, got {label_path!r}")
        label_info = label_info_for(segment_names, self.task(task).labels)
        return self.client.save_label(image_id, label_path, tag, label_info)

    # --- training --------------------------------------------------------------------------------------

    def start_training(self, task: str, max_epochs: Optional[int] = None, params: Optional[Dict] = None) -> TrainingRun:
        """Start training ``task`` on the server's datastore (a 429 if one is already running)."""
        if max_epochs is not None and (not isinstance(max_epochs, int) or max_epochs < 1):
            raise ValueError(f"max_epochs must be a whole number >= 1, got {max_epochs!r}")
        request = dict(params or {})
        if max_epochs is not None:
            request["max_epochs"] = max_epochs
        record = self.client.start_training(task, request)
        if not isinstance(record, dict) or not record.get("id"):
            raise UnexpectedAnswerError(f"POST /train/{task} gave no run id")
        return TrainingRun(task, str(record["id"]))

    def training_progress(self, run: TrainingRun) -> TrainingProgress:
        """One look at a run's status and printed lines; the fraction never goes backwards between looks."""
        record = next((r for r in self.client.training_runs() if r.get("id") == run.run_id), None)
        if record is None:
            return TrainingProgress(run.task, run.run_id, "SUBMITTED")
        current = read_progress(run.task, run.run_id, str(record.get("status", "")), list(record.get("details") or []))
        best = max(self._best_fraction.get(run.run_id, 0.0), current.fraction)
        self._best_fraction[run.run_id] = best
        return current._replace(fraction=best)

    def wait_for_training(
        self, run: TrainingRun, progress: Optional[ProgressCallback] = None, timeout_s: Optional[float] = None
    ) -> TrainingProgress:
        """Poll the run until it ends, reporting each change; raise TrainingFailedError unless it is DONE."""
        deadline = time.monotonic() + float(timeout_s or self.training_timeout_s)
        last_message = None
        while True:
            state = self.training_progress(run)
            if state.message() != last_message:
                last_message = state.message()
                _report(progress, last_message, state.fraction, state)
            if state.finished:
                if state.status != "DONE":
                    raise TrainingFailedError(run.task, state.status, state.line)
                return state
            if time.monotonic() > deadline:
                raise TrainingFailedError(run.task, "TIMEOUT", state.line)
            self._sleep(self.poll_interval_s)

    def train(
        self,
        task: str,
        max_epochs: Optional[int] = None,
        params: Optional[Dict] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> TrainingProgress:
        """Start a training and wait for it to end."""
        return self.wait_for_training(self.start_training(task, max_epochs, params), progress)

    def training_log(self, lines: int = 100) -> str:
        """The last ``lines`` lines of the server log (all of the server's activity, not only training)."""
        if not isinstance(lines, int) or lines < 1:
            raise ValueError(f"lines must be a whole number >= 1, got {lines!r}")
        return self.client.logs(lines)

    # --- active learning -------------------------------------------------------------------------------

    def next_sample(
        self, strategy: str, progress: Optional[ProgressCallback] = None, folder: Optional[str] = None
    ) -> Optional[NextSample]:
        """The next image picked by ``strategy``, downloaded into ``folder`` (``work_dir`` when None); None when
        none is left."""
        if strategy not in self.strategies():
            raise ValueError(f"strategy {strategy!r} is not offered by this server; strategies: {self.strategies()}")
        picked = self.client.next_sample(strategy)
        if not picked or not picked.get("id"):
            return None
        image_id = str(picked["id"])
        _report(progress, f"Downloading {image_id}")
        return NextSample(image_id, self.client.download_image(image_id, folder or self.work_dir), picked)

    # --- model history ---------------------------------------------------------------------------------------

    @staticmethod
    def _require_task(task: str) -> str:
        if not task or not str(task).strip():
            raise ValueError(f"task must be a task of the server (choose one in Model history), got {task!r}")
        return str(task).strip()

    def model_history(self, task: str) -> ModelHistory:
        """The task's model history (``GET /mri/history/<task>``): the served checkpoint and the entries, newest first.

        Raises:
            ValueError: no task given, or the server has no model history (an older server).
            UnexpectedAnswerError: the answer is not a model history.
        """
        task = self._require_task(task)
        try:
            answer = self.client.history(task)
        except ServerHTTPError as error:
            raise _missing_route(error, "model history") from None
        return parse_history(answer, task)

    def roll_back(self, task: str) -> RollbackResult:
        """Serve the task's newest archived checkpoint again (``POST /mri/rollback/<task>``, admin).

        Raises:
            ServerHTTPError: 403 for a user who is not an admin, 409 with no archive or while a training of the task
                runs (the server's sentence says which).
        """
        task = self._require_task(task)
        try:
            answer = self.client.rollback(task)
        except ServerHTTPError as error:
            raise _missing_route(error, "rollback") from None
        return parse_rollback(answer, task)

    # --- review ----------------------------------------------------------------------------------------------

    def reviews(self, status: str = PENDING) -> List[ReviewItem]:
        """The images whose ``final`` label is in review state ``status`` (``GET /mri/review``, reviewer).

        Raises:
            ValueError: an unknown state (nothing is sent), or the server has no review (an older server).
        """
        status = review_state(status, REVIEW_STATES)
        try:
            answer = self.client.reviews(status)
        except ServerHTTPError as error:
            raise _missing_route(error, "review of final labels") from None
        return parse_reviews(answer)

    def review(self, image_id: str, status: str, comment: str = "") -> Review:
        """Approve an image's ``final`` label or ask for changes (``PUT /mri/review/<image>``, reviewer); returns the
        review the server stored.

        Raises:
            ValueError: no image, a status that is not a decision, or a comment over 2,000 characters: checked before
                anything is sent.
            ServerHTTPError: 403 for a role below reviewer, 404 for an image without a final label.
        """
        if not image_id or not str(image_id).strip():
            raise ValueError("Select an image in the review list first")
        status = review_state(status, DECISIONS)
        comment = check_comment(comment)
        try:
            answer = self.client.put_review(str(image_id).strip(), status, comment)
        except ServerHTTPError as error:
            raise _missing_route(error, "review of final labels") from None
        return parse_decision(answer)

    def fetch_for_review(
        self,
        image_id: str,
        task: Optional[str] = None,
        progress: Optional[ProgressCallback] = None,
        folder: Optional[str] = None,
    ) -> ReviewSample:
        """Download an image and its ``final`` label into ``folder`` (``work_dir`` when None), as the next sample's
        image is downloaded, with the label's value names from ``task``'s labels (none for an unknown task).

        Raises:
            ValueError: no image given, or the image has no final label on the server (any more).
        """
        if not image_id or not str(image_id).strip():
            raise ValueError("Select an image in the review list first")
        folder = folder or self.work_dir
        names: Dict[str, int] = {}
        if task and task in {t.name for t in self.tasks()}:
            names = dict(self.task(task).labels)
        _report(progress, f"Downloading {image_id}")
        image_path = self.client.download_image(image_id, folder)
        _report(progress, f"Downloading the final label of {image_id}")
        try:
            label_path = self.client.download_label(image_id, folder, "final")
        except ServerHTTPError as error:
            if error.status != 404:
                raise
            raise ValueError(
                f"{image_id} has no final label on the server (any more); refresh the review list"
            ) from None
        return ReviewSample(image_id, task or None, image_path, label_path, names)
