"""Slice-wise 2D classifiers on a 2D image or a volume (sequence, dementia_stage, tumor_gate, tumor_type)."""

import tempfile
from typing import Dict, List, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.transforms import Activationsd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from lib import stock
from lib.cam import cam_volume
from lib.conf import conf_bool
from lib.datalists import CLASS_SLICE_FRACTION, GATE_SLICE_FRACTION
from lib.errors import bad_input
from lib.infers import checkpoint_info
from lib.mirroring import MirrorAveragingInferer
from lib.slicewise import SliceScoreInferer, SlicewiseInferer
from lib.transforms import MIRROR_AXIS_2D, axial_axis, brain_slices, infer_slices_pre


class ClassifierInfer(BasicInferTask):
    """Class probabilities of a slice, or of a volume aggregated over its slices.

    A volume is classified slice by slice over its central head slices (head area at least
    ``slice_fraction`` of the largest slice's); the volume answer is the mean of those slices'
    softmax probabilities. ``{"slices": [k, ...]}`` in the request names the slices of a volume to look at
    instead (``tumor_pipeline`` passes the slices where the gate fired); indices outside the volume are ignored.
    The result JSON holds ``label``, ``probabilities`` (class -> p, summing to 1), ``aggregation`` and ``slices``
    (per-slice index and probabilities). With ``{"cam": true}`` in the request it also returns a Grad-CAM of
    the predicted class as a float NIfTI in the input's grid.
    """

    aggregation = "mean of the softmax probabilities of the central head slices"
    slice_fraction = CLASS_SLICE_FRACTION

    def __init__(
        self, path: str, network, labels: Dict[str, int], size: int, description: str, mirror: bool = False, **kwargs
    ):
        super().__init__(
            path=path,
            network=network,
            type=InferType.CLASSIFICATION,
            labels=labels,
            dimension=3,
            description=description,
            **kwargs,
        )
        self.size = size
        self.classes = [name for name, _ in sorted(labels.items(), key=lambda kv: kv[1])]
        self.mirror = bool(mirror)

    def pre_transforms(self, data=None) -> Sequence:
        return infer_slices_pre()

    def inferer(self, data=None):
        """The slice inferer; with ``mirror``, averaged over the image and its mirror along
        :data:`lib.transforms.MIRROR_AXIS_2D` (the flip of the training augmentation)."""
        plain = self.slice_inferer(data)
        return MirrorAveragingInferer(plain, (MIRROR_AXIS_2D,), segmentation=False) if self.mirror else plain

    def slice_inferer(self, data) -> SlicewiseInferer:
        """One pass over the slices to classify (``data["slices_run"]`` records which)."""
        image = data["image"]
        if image.ndim == 3:
            data["slices_run"] = [0]
            return SlicewiseInferer(self.size, segmentation=False)
        axis = axial_axis(image.affine)
        chosen = requested_slices(data.get("slices"), image.shape[axis + 1])
        data["slices_run"] = brain_slices(image, axis, self.slice_fraction) if chosen is None else chosen
        return SlicewiseInferer(self.size, axis=axis, segmentation=False, slices=data["slices_run"])

    def inverse_transforms(self, data=None):
        # None, not []: MONAI Label deep-copies the whole data dict (the image included) before an inverse run,
        # and none of these pre-transforms is invertible
        return None

    def post_transforms(self, data=None) -> Sequence:
        return [Activationsd(keys="pred", softmax=True, dim=-1)]

    def aggregate(self, probabilities: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` slice probabilities -> ``(K,)`` volume probabilities."""
        return probabilities.mean(dim=0)

    def summarise(self, probabilities: torch.Tensor, slices: List[int], data: Dict) -> Dict:
        volume = self.aggregate(probabilities)
        as_dict = lambda p: {c: round(float(v), 6) for c, v in zip(self.classes, p)}  # noqa: E731
        return {
            "task": data.get("model"),
            "label": self.classes[int(torch.argmax(volume))],
            "probabilities": as_dict(volume),
            "aggregation": self.aggregation if len(slices) > 1 else "single slice",
            "slices": [{"index": k, "probabilities": as_dict(p)} for k, p in zip(slices, probabilities)],
            "checkpoint": checkpoint_info(self.get_path()),
        }

    def writer(self, data, extension=None, dtype=None):
        probabilities = torch.as_tensor(data["pred"]).float().reshape(-1, len(self.classes))
        result = self.summarise(probabilities, data.get("slices_run", [0]), data)
        if not conf_bool(data, "cam", False, where="params"):
            return None, result
        return self.write_cam(data, self.classes.index(result["label"])), dict(result, cam={"class": result["label"]})

    def write_cam(self, data, class_index: int) -> str:
        """Grad-CAM of ``class_index`` as a float NIfTI in the input's grid (values 0..1); returns its path."""
        image = data["image"]
        axis = axial_axis(image.affine) if image.ndim == 4 else 2
        network = stock.infer_network(self, data.get("device", "cpu"), data)
        heat = cam_volume(
            network, image.to(next(network.parameters()).device), axis, data["slices_run"], self.size, class_index
        )
        return save_like(image, heat.numpy())


def save_like(image, values: np.ndarray) -> str:
    """``values`` (the input's grid, float) as a float32 NIfTI with the input's original affine; returns its path."""
    affine = image.meta.get("original_affine", image.affine) if hasattr(image, "meta") else None
    affine = np.asarray(affine, dtype=float) if affine is not None and np.asarray(affine).shape == (4, 4) else np.eye(4)
    path = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
    nib.save(nib.Nifti1Image(np.asarray(values, dtype=np.float32), affine), path)
    return path


def requested_slices(value, depth: int):
    """The request's ``slices`` (a list of slice indices) within ``0..depth-1``, sorted; None when not given.

    Raises:
        HTTPException 422: not a list of integers, or no index inside the volume.
    """
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or any(isinstance(k, bool) or not isinstance(k, int) for k in value):
        raise bad_input(422, f"slices must be a list of slice indices (integers), got {value!r:.80}")
    chosen = sorted({int(k) for k in value if 0 <= int(k) < depth})
    if not chosen:
        raise bad_input(422, f"slices {list(value)[:10]} name no slice of this volume (0..{depth - 1})")
    return chosen


class TumorGateInfer(ClassifierInfer):
    """Binary tumor gate: a volume is positive if any head slice reaches the operating threshold.

    Adds ``probability`` (max slice p(tumor)), ``threshold``, ``tumor`` (bool) and ``fired_slices``.
    ``threshold`` comes from ``--conf tumor_gate_threshold`` or the request's ``threshold`` (0..1).
    """

    aggregation = "max over head slices of p(tumor); the other classes' probabilities are its complement"
    slice_fraction = GATE_SLICE_FRACTION

    def __init__(self, *args, threshold: float = 0.5, **kwargs):
        super().__init__(*args, config={"threshold": threshold}, **kwargs)
        self.threshold = threshold

    def aggregate(self, probabilities: torch.Tensor) -> torch.Tensor:
        return probabilities[torch.argmax(probabilities[:, 1])]

    def summarise(self, probabilities: torch.Tensor, slices: List[int], data: Dict) -> Dict:
        try:
            threshold = float(data.get("threshold", self.threshold))
        except (TypeError, ValueError):
            threshold = float("nan")
        if not 0.0 <= threshold <= 1.0:
            raise bad_input(422, f"threshold must be a number in [0, 1], got {data.get('threshold')!r}")
        result = super().summarise(probabilities, slices, data)
        probability = float(probabilities[:, 1].max()) if len(slices) else 0.0
        result.update(
            {
                "probability": round(probability, 6),
                "threshold": threshold,
                "tumor": probability >= threshold,
                "label": self.classes[int(probability >= threshold)],
                "fired_slices": [k for k, p in zip(slices, probabilities[:, 1]) if float(p) >= threshold],
            }
        )
        return result


class SegmentationGateInfer(TumorGateInfer):
    """The tumor gate read off a slice segmentation network (``tumor_seg``'s): p(tumor) of a slice is the mean of
    its ``area_fraction`` highest tumor probabilities (:class:`lib.slicewise.SliceScoreInferer`), so the gate fires
    where the segmentation finds a lesion of about that area, and the pipeline's mask follows. Same answer as
    :class:`TumorGateInfer`; with ``cam`` the evidence map is the segmentation's tumor probability (0..1) on the
    slices looked at, as a float NIfTI in the input's grid.

    Args:
        path, network: the segmentation network's checkpoints and module (shared with its own infer).
        size: the segmentation network's input side (pixels).
        area_fraction: 0 < f <= 1 of the slice's pixels.
    """

    aggregation = "max over head slices of p(tumor) from the segmentation network; the other class is its complement"

    def __init__(self, *args, area_fraction: float, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 < area_fraction <= 1.0:
            raise ValueError(f"area_fraction must be in (0, 1], got {area_fraction}")
        self.area_fraction = area_fraction

    def inferer(self, data=None):
        plain = self.slice_inferer(data)
        data["score_inferer"] = SliceScoreInferer(self.size, self.area_fraction, axis=plain.axis, slices=plain.slices)
        return data["score_inferer"]

    def writer(self, data, extension=None, dtype=None):
        path, result = super().writer(data, extension=extension, dtype=dtype)
        result["source"] = {"network": "segmentation", "area_fraction": self.area_fraction}
        if path:
            result["cam"] = {"class": "tumor", "map": "tumor probability of the segmentation network"}
        return path, result

    def write_cam(self, data, class_index: int) -> str:
        return save_like(data["image"], data["score_inferer"].foreground.numpy())
