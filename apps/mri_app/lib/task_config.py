"""Task-config bases: one per kind of task, so each file in ``lib/configs`` only states what is its own."""

import os
from typing import Dict, List, Optional, Tuple

from monailabel.interfaces.config import TaskConfig

from lib.conf import conf_bool, conf_choice, conf_float, conf_int, conf_ints
from lib.datalists import TRAIN_ON
from lib.history import DEFAULT_KEEP
from lib.infers.classifier import ClassifierInfer
from lib.infers.segmentation import SliceSegmentationInfer, VolumeSegmentationInfer
from lib.model_card import check_checkpoint
from lib.networks import build_network, load_pretrained, pretrained_classifier, residual_unet, slice_classifier
from lib.trainers.classifier import ClassifierTrainer
from lib.trainers.segmentation import SliceSegmentationTrainer, VolumeSegmentationTrainer

NORMALIZATION = "z-score over the non-zero voxels of each image (monai NormalizeIntensity, nonzero=True)"
SLICES = "2D network; a volume runs slice by slice along its axial (closest to S) voxel axis"


RECIPE = {"max_epochs": 30, "learning_rate": 3e-4, "early_stop_patience": 10}
"""Training recipe a task starts from (``POST /train/<task>`` parameters); each task's config states its own as
``recipe`` (what ``mri-label train`` and ``benchmarks/quality.py`` run, and the shipped checkpoint was trained
with). Budgets are for this project's 2-core CPU: each fits in an hour there."""


POSTPROCESSING = "largest connected component of the mask kept (face-connected, whole volume)"
"""What ``model.json`` records of a task's ``keep_largest_component``."""
MIRRORING = "class probabilities averaged over the image and its left-right mirror"
"""What ``model.json`` records of a classifier's ``test_time_mirroring``."""
SCANNER_AUGMENTATION = "bias field, gamma, blur, 8-bit quantisation and zoom-in (mask zoomed with its image)"
"""What ``model.json`` records of a slice segmentation's ``scanner_augment`` (training only)."""
NNUNET_AUGMENTATION = (
    "nnU-Net's: rotation ±30°, scaling 0.7-1.4, noise, blur, brightness, contrast, low resolution, gamma"
)
"""What ``model.json`` records of a volume segmentation's ``nnunet_augment`` (training only)."""

EVALUATIONS = {
    "classification": "each image's class: accuracy, balanced accuracy, macro F1, per class and per subject",
    "gate": "a two-class classifier at an operating threshold (negative class first): as classification, a volume "
    "with a mask of the config's mask_task scored per slice, at the shipped and at a recall-targeted threshold",
    "segmentation": "Dice, HD95 and volume per label",
    "segmentation+union": "as segmentation, and the union of all labels (foreground, e.g. the whole hippocampus)",
    "binary segmentation": "as segmentation of the one label, every truth value > 0 counting as it (whole tumor)",
}
"""The ``evaluation`` a task config may declare: how ``mri-label evaluate`` scores it (:mod:`mri_label.evaluate`)."""

CLASS_FOLDER_CAVEAT = (
    "JPEG class-folder images carry no patient ids: subjects are near-duplicate groups "
    "(perceptual hash), which may still leave slices of one patient on both sides."
)
"""The ``caveat`` of a task whose data are class-folder pictures (``mri-label import classfolders``)."""


SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "shipped")
"""The trained checkpoints that come with the app: ``<app>/shipped/<task>/model.pt`` + ``model.json``."""


class MRITaskConfig(TaskConfig):
    """Common paths: training publishes ``<model_dir>/<task>/model.pt`` with ``model.json`` beside it; until a
    training has, the shipped checkpoint ``<app>/shipped/<task>/model.pt`` is served (``--conf shipped_models``
    or the environment variable ``MRI_LABEL_SHIPPED_MODELS``: another folder, or ``none``). Both are checked
    against this config's network, labels and input at start. Options every task reads: ``--conf train_on``
    (``all`` or ``approved``: which ``final`` labels training uses, :func:`lib.datalists.trainable_final_labels`)
    and ``--conf history_keep`` (archived checkpoints kept per task, default 5, :mod:`lib.history`)."""

    kind = ""
    description = ""
    task_labels: Dict[str, int] = {}
    recipe: Dict = RECIPE
    evaluation = ""  # how mri-label evaluate scores the task: a key of EVALUATIONS
    uncertainty = ""  # the active-learning strategy that ranks its unlabelled images (lib.activelearning.UNCERTAINTY)
    volume_only = False  # takes 3D volumes only: a 2D image is refused at infer and never proposed by active learning
    input_series: Optional[str] = None  # the series it reads (a key of the sequence config's series_classes); None: any
    caveat: Optional[str] = None  # printed with every evaluation of the task (metrics.json, report.md)
    measures: Optional[str] = None
    """What its results measure for ``output=report`` / ``mri-label report`` and change over time (a key of
    :data:`mri_label.core.change.MEASURES`: ``volumes`` or ``lesions``); None: no report, no change over time."""

    def init(self, name: str, model_dir: str, conf: Dict[str, str], planner=None, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.labels = dict(self.task_labels)
        self.task_dir = os.path.join(model_dir, name)
        self.path = os.path.join(self.task_dir, "model.pt")
        self.train_on = conf_choice(conf, "train_on", TRAIN_ON, "all")
        self.history_keep = conf_int(conf, "history_keep", DEFAULT_KEEP, low=1)
        shipped = conf.get("shipped_models", os.environ.get("MRI_LABEL_SHIPPED_MODELS", SHIPPED_DIR))
        self.shipped_path = None
        if str(shipped).lower() not in ("none", "false", ""):
            candidate = os.path.join(os.path.abspath(os.path.expanduser(str(shipped))), name, "model.pt")
            self.shipped_path = candidate if os.path.exists(candidate) else None

    def card(self) -> Dict:
        """The static part of ``model.json``."""
        return {"kind": self.kind, "description": self.description, "labels": self.labels}

    def check_checkpoints(self) -> None:
        """Raise ValueError when the shipped or the trained checkpoint's ``model.json`` does not fit this config
        (a shipped checkpoint must have one)."""
        expected = {
            "task": self.name,
            "labels": self.labels,
            "network": self.network_spec,
            "input": self.card().get("input"),
        }
        if self.shipped_path:
            check_checkpoint(
                self.shipped_path,
                expected,
                required=True,
                remedy="start with --conf shipped_models none to serve no shipped model",
            )
        if os.path.exists(self.path):
            check_checkpoint(
                self.path,
                expected,
                required=False,
                remedy=f"retrain {self.name} with these options or move {self.task_dir} away",
            )

    reads_networks_of: tuple = ()
    """Tasks whose networks this task's infer may read (:meth:`infer_in`); tools that load this task alone load
    them too."""

    def infer_in(self, configs: Dict[str, "MRITaskConfig"]):
        """This task's infer task among the app's task configs (name -> config); a task that reads another's
        network overrides it."""
        return self.infer()

    def has_checkpoint(self) -> bool:
        """Whether a trained or shipped checkpoint exists to serve."""
        return any(os.path.exists(p) for p in self.serving_paths)

    @property
    def serving_paths(self) -> List[str]:
        """Checkpoints the infer task may load; MONAI Label serves the last that exists (trained over shipped)."""
        return [self.shipped_path, self.path] if self.shipped_path else [self.path]

    def _trainer_args(self) -> tuple:
        return self.task_dir, self.name, self.network_spec, self.card(), self.path, self.description

    def _trainer_kwargs(self) -> Dict:
        """Keyword arguments every trainer of this config takes: the shipped checkpoint, ``train_on``,
        ``history_keep``."""
        return {"shipped_path": self.shipped_path, "train_on": self.train_on, "history_keep": self.history_keep}


class ClassifierConfig(MRITaskConfig):
    """Slice classifier: a 2D ResNet-18 layout. Options ``--conf <task>_image_size`` (pixels, default
    :attr:`image_size`: 128 unless the task says otherwise),
    ``<task>_widths`` (four stage widths, default [16,32,64,128]), ``<task>_slices_per_volume`` (central
    slices a class-labelled volume contributes to training, default 8) and ``<task>_pretrained`` (a torchvision
    or MONAI basic-block ResNet state dict on disk: the network takes its layout and training starts from its
    weights, see :func:`lib.networks.load_pretrained`; without it training starts from scratch)."""

    kind = "classification"
    classes: tuple = ()
    infer_class = ClassifierInfer
    mask_task: Optional[Tuple[str, Dict[str, int]]] = None
    evaluation = "classification"
    uncertainty = "entropy"
    negative_class: Optional[str] = None  # the class that means "nothing found" (None: every class is a finding)
    folder_classes: Dict[str, str] = {}  # mri-label import classfolders: folder name -> class, besides the classes
    series_classes: Dict[str, str] = {}  # series id (file suffix, channel, phantom contrast) -> class (sequence only)
    image_size = 128
    """Default of ``--conf <task>_image_size`` (pixels)."""
    test_time_mirroring = False
    """The infer averages the class probabilities over the image and its left-right mirror (declare it when it raises
    the validation figure of the shipped checkpoint; state the figures beside it). ``--conf
    <task>_test_time_mirroring`` overrides it."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.task_labels = {c: i for i, c in enumerate(cls.classes)}  # the class index of each name, from ``classes``

    def init(self, name, model_dir, conf, planner=None, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.size = conf_int(conf, f"{name}_image_size", self.image_size, low=32)
        self.slices_per_volume = conf_int(conf, f"{name}_slices_per_volume", 8, low=1)
        widths = conf_ints(conf, f"{name}_widths", (16, 32, 64, 128), length=4)
        self.pretrained = conf.get(f"{name}_pretrained") or None
        self.test_time_mirroring = conf_bool(conf, f"{name}_test_time_mirroring", type(self).test_time_mirroring)
        if self.pretrained:
            self.network_spec, self.network = self._pretrained_network(name, conf)
        else:
            self.network_spec = slice_classifier(len(self.classes), widths)
            self.network = build_network(self.network_spec)

    def _pretrained_network(self, name, conf):
        """Spec and network laid out like the state dict of ``--conf <task>_pretrained``, checked by loading it."""
        path = os.path.abspath(os.path.expanduser(str(self.pretrained)))
        option = f"--conf {name}_pretrained {self.pretrained}"
        if not os.path.isfile(path):
            raise ValueError(f"{option}: no such file {path} (a torchvision or MONAI ResNet state dict)")
        try:
            spec = pretrained_classifier(len(self.classes), path)
            # MONAI's default: the same network as the plain spec, so a checkpoint fine-tuned from a MONAI encoder
            # (mri-label pretrain) serves without this option
            if spec["args"].get("bias_downsample") is True:
                del spec["args"]["bias_downsample"]
            network = build_network(spec)
            load_pretrained(network, path)
        except ValueError as error:
            raise ValueError(f"{option}: {error}") from None
        if (
            conf.get(f"{name}_widths")
            and list(conf_ints(conf, f"{name}_widths", (), length=4)) != spec["args"]["block_inplanes"]
        ):
            raise ValueError(
                f"--conf {name}_widths differs from the stage widths {spec['args']['block_inplanes']} of {path}"
            )
        self.pretrained = path
        return spec, network

    def card(self):
        card = dict(
            super().card(), input={"layout": SLICES, "size": [self.size, self.size], "normalization": NORMALIZATION}
        )
        if self.test_time_mirroring:
            card["test_time_mirroring"] = MIRRORING
        if self.pretrained:
            card["pretrained"] = {
                "path": self.pretrained,
                "note": "training starts from these weights (see lib.networks.load_pretrained)",
            }
        return card

    def infer_kwargs(self) -> Dict:
        return {}

    def infer(self):
        return self.infer_class(
            self.serving_paths,
            self.network,
            self.labels,
            self.size,
            self.description,
            mirror=self.test_time_mirroring,
            **self.infer_kwargs(),
        )

    def trainer(self):
        return ClassifierTrainer(
            *self._trainer_args(),
            classes=self.classes,
            size=self.size,
            mask_task=self.mask_task,
            slices_per_volume=self.slices_per_volume,
            pretrained=self.pretrained,
            **self._trainer_kwargs(),
        )


class SliceSegmentationConfig(MRITaskConfig):
    """Slice-wise 2D ResUNet. Options ``--conf <task>_image_size`` (default 256), ``<task>_widths``,
    ``<task>_keep_largest_component`` and ``<task>_scanner_augment`` (defaults: the task's declarations)."""

    kind = "segmentation"
    evaluation = "segmentation"
    uncertainty = "epistemic"
    lesions: Optional[str] = None
    """The label whose connected components the infer measures as lesions (volume, RANO-style diameters)."""
    keep_largest_component = False
    """Post-processing: the infer keeps only the largest connected component of the mask (nnU-Net's rule: declare it
    when it raises the validation subjects' mean Dice of the shipped checkpoint; state the figures beside it)."""
    scanner_augment = False
    """Training adds the scanner and source appearance changes (:func:`lib.transforms.scanner_augment`) to the
    flips, affine, intensity and noise; declare it when a checkpoint trained with it wins on validation."""

    def init(self, name, model_dir, conf, planner=None, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        self.size = conf_int(conf, f"{name}_image_size", 256, low=32)
        widths = conf_ints(conf, f"{name}_widths", (16, 32, 64, 128, 256))
        if self.size % (2 ** (len(widths) - 1)):
            raise ValueError(f"--conf {name}_image_size must be divisible by {2 ** (len(widths) - 1)}, got {self.size}")
        self.network_spec = residual_unet(2, len(self.labels) + 1, widths)
        self.network = build_network(self.network_spec)
        self.keep_largest_component = conf_bool(
            conf, f"{name}_keep_largest_component", type(self).keep_largest_component
        )
        self.scanner_augment = conf_bool(conf, f"{name}_scanner_augment", type(self).scanner_augment)

    def card(self):
        card = dict(
            super().card(), input={"layout": SLICES, "size": [self.size, self.size], "normalization": NORMALIZATION}
        )
        if self.keep_largest_component:
            card["postprocessing"] = POSTPROCESSING
        if self.scanner_augment:
            card["training_augmentation"] = SCANNER_AUGMENTATION
        return card

    def infer(self):
        return SliceSegmentationInfer(
            self.serving_paths,
            self.network,
            self.labels,
            self.description,
            size=self.size,
            lesions=self.lesions,
            keep_largest=self.keep_largest_component,
        )

    def trainer(self):
        return SliceSegmentationTrainer(
            *self._trainer_args(),
            labels=self.labels,
            size=self.size,
            scanner_augment=self.scanner_augment,
            **self._trainer_kwargs(),
        )


class VolumeSegmentationConfig(MRITaskConfig):
    """3D residual U-Net. Options ``--conf <task>_spacing`` (mm, default 1.0), ``<task>_roi`` (voxels,
    default [48,48,48]), ``<task>_widths`` (default [16,32,64,128]) and ``<task>_nnunet_augment`` (default: the
    task's declaration). ``flip_axes`` (declared by the task): spatial axes mirrored at random in training and
    averaged over at inference (:mod:`lib.mirroring`)."""

    kind = "segmentation"
    infer_class = VolumeSegmentationInfer
    flip_axes: tuple = ()
    evaluation = "segmentation"
    uncertainty = "epistemic"
    volume_only = True
    nnunet_augment = False
    """Training uses nnU-Net's augmentation (:func:`lib.transforms.nnunet_augment_3d`) in place of the mild
    default; declare it when a checkpoint trained with it wins on validation."""

    def init(self, name, model_dir, conf, planner=None, **kwargs):
        super().init(name, model_dir, conf, planner, **kwargs)
        spacing = conf_float(conf, f"{name}_spacing", 1.0, low=0.1, high=10.0)
        self.spacing = (spacing, spacing, spacing)
        widths = conf_ints(conf, f"{name}_widths", (16, 32, 64, 128))
        self.roi = conf_ints(conf, f"{name}_roi", (48, 48, 48), length=3)
        step = 2 ** (len(widths) - 1)
        if any(r % step for r in self.roi):
            raise ValueError(f"--conf {name}_roi must be divisible by {step}, got {list(self.roi)}")
        self.network_spec = residual_unet(3, len(self.labels) + 1, widths)
        self.network = build_network(self.network_spec)
        self.nnunet_augment = conf_bool(conf, f"{name}_nnunet_augment", type(self).nnunet_augment)

    def card(self):
        card = dict(
            super().card(),
            input={
                "layout": "3D volume",
                "spacing_mm": list(self.spacing),
                "roi": list(self.roi),
                "normalization": NORMALIZATION,
                **({"mirrored_axes": list(self.flip_axes)} if self.flip_axes else {}),
            },
        )
        if self.nnunet_augment:
            card["training_augmentation"] = NNUNET_AUGMENTATION
        return card

    def infer(self):
        return self.infer_class(
            self.serving_paths,
            self.network,
            self.labels,
            self.description,
            spacing=self.spacing,
            roi=self.roi,
            flip_axes=self.flip_axes,
        )

    def trainer(self):
        return VolumeSegmentationTrainer(
            *self._trainer_args(),
            labels=self.labels,
            spacing=self.spacing,
            roi=self.roi,
            flip_axes=self.flip_axes,
            nnunet_augment=self.nnunet_augment,
            config={"train_batch_size": 2, "val_batch_size": 1},
            **self._trainer_kwargs(),
        )
