"""``hippocampus`` infer: a Decathlon-like crop goes straight to the 3D U-Net; a whole-head (or whole-brain) T1
is registered to the MNI152 template, each hippocampus is cropped from a fixed box in template space,
segmented, and pasted back into the input's grid. A request may give the boxes itself (RAS corners, mm):
``{"boxes": {"left": [[x, y, z], [x, y, z]], "right": [...]}}``; registration is then skipped.

The training crops (Decathlon Task04) all look like right hippocampi in RAS voxel order (the head lies
lateral of the body), so a left crop is mirrored before the network and its mask mirrored back.

Result JSON ``measurements``: ``mm3`` per label (anterior, posterior) and ``total_mm3``; for a whole head or
boxes also ``left`` / ``right`` each with ``anterior_mm3``, ``posterior_mm3``, ``total_mm3``, plus
``left_mm3`` / ``right_mm3``; ``volume_check`` compares each hippocampus with the range of the training
labels recorded in ``model.json`` (``ok``, or ``check the segmentation`` with the reason).
"""

import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from typing import Any, Dict, Optional, Sequence, Tuple, cast

import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import NormalizeIntensity
from monailabel.utils.others.generic import name_to_device

from lib import registration, stock
from lib.errors import bad_input
from lib.infers import checkpoint_info
from lib.infers.segmentation import VolumeSegmentationInfer
from lib.model_card import read_card
from lib.transforms import LabelVolumesd, axial_axis, measure_label_file
from lib.uncertainty import normalised_entropy, uncertain_slices, wants_uncertainty

logger = logging.getLogger(__name__)

SIDES = ("left", "right")
REMEMBERED_REGISTRATIONS = 8
"""Registrations an infer task keeps (the latest images it registered), for :meth:`HippocampusInfer.measure_label`."""


class HippocampusInfer(VolumeSegmentationInfer):
    """Hippocampus on a crop (MONAI Label's hooks, as any volume task) or on a whole head (registration path)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._registrations: "OrderedDict[tuple, sitk.Transform]" = OrderedDict()
        self._registrations_lock = threading.Lock()

    def post_transforms(self, data=None) -> Sequence:
        chain = list(super().post_transforms(data))
        if not wants_uncertainty(data):
            chain[-1] = LabelVolumesd(keys="pred", labels=self.labels, sides=False)  # a crop's side is not known
        return chain

    def __call__(self, request, callbacks=None):
        boxes = request.get("boxes")
        path = request.get("image")
        image = None
        if not boxes and isinstance(path, str):
            geometry = _geometry(path)
            if geometry is None and os.path.isdir(path):  # a DICOM series: read it to know its extent
                image = _read(path)
                geometry = (image.GetSize(), image.GetSpacing())
            if geometry is None or registration.is_crop(*geometry):
                file, result = super().__call__(request, callbacks)
                result["input"] = "hippocampus crop: segmented as given"
                if not wants_uncertainty(request):
                    result.setdefault("measurements", {})
                    result["measurements"]["volume_check"] = self.volume_check(
                        {"crop": result["measurements"].get("total_mm3")}
                    )
                return file, result
        return self.whole_head(request, image, boxes)

    def whole_head(self, request: Dict, image: Optional[sitk.Image], boxes) -> tuple:
        """Registration (or the request's boxes), crop per side, segment, paste back; MONAI Label's return shape."""
        begin = time.time()
        uncertainty = wants_uncertainty(request)
        if image is None:
            image = _read(request["image"])
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise bad_input(
                422,
                f"hippocampus needs a 3D grey-level volume, got {image.GetDimension()}D with "
                f"{image.GetNumberOfComponentsPerPixel()} component(s)",
            )
        regions = self._regions(image, boxes)
        if not boxes:
            self._remember(request["image"], regions[SIDES[0]][2])
        latency_pre = time.time() - begin

        start = time.time()
        device = name_to_device(request.get("device", "cuda"))  # cuda where present, else cpu
        network = stock.infer_network(self, device, request)
        answers = {side: self._segment(network, crop, side, device) for side, (crop, _, _) in regions.items()}
        latency_infer = time.time() - start

        start = time.time()
        extra: Dict[str, Any] = {}
        if uncertainty:  # the normalised entropy of each crop, pasted back (linear); elsewhere 0 (nothing segmented)
            values = np.zeros(image.GetSize(), dtype=np.float32)
            for side, (_, grid, transform) in regions.items():
                values = np.maximum(values, registration.paste_values(answers[side][1], grid, image, transform))
            extra["uncertainty"] = uncertain_slices(values, axial_axis(_direction_matrix(image)))
            output = sitk.GetImageFromArray(np.ascontiguousarray(values.transpose(2, 1, 0)))
        else:
            pasted = {
                side: registration.paste(answers[side][0], grid, image, transform)
                for side, (_, grid, transform) in regions.items()
            }
            labels = np.zeros(image.GetSize(), dtype=np.uint8)
            for side_labels in pasted.values():  # template boxes do not overlap; where user boxes do, the right wins
                labels[side_labels > 0] = side_labels[side_labels > 0]
            extra["measurements"] = self.measure(image, labels, pasted)
            extra["measurements"]["head_size"] = head_size(extra["measurements"], regions, boxes)
            output = sitk.GetImageFromArray(np.ascontiguousarray(labels.transpose(2, 1, 0)))
        latency_post = time.time() - start

        start = time.time()
        output.CopyInformation(image)
        handle, file = tempfile.mkstemp(suffix=".nii.gz")
        os.close(handle)
        sitk.WriteImage(output, file, useCompression=True)
        latency_write = time.time() - start
        result = {
            **extra,
            "input": "whole head: hippocampus boxes given in the request"
            if boxes
            else "whole head: affine registration to the MNI152 template, a box per hippocampus",
            "checkpoint": checkpoint_info(self.get_path()),
            "label_names": self.labels,
            "latencies": {
                "pre": round(latency_pre, 2),
                "infer": round(latency_infer, 2),
                "invert": 0.0,
                "post": round(latency_post, 2),
                "write": round(latency_write, 2),
                "total": round(time.time() - begin, 2),
            },
        }
        return file, result

    def measure_label(self, image_path: str, label_path: str) -> Dict:
        """``measurements`` of a label map on the image as :meth:`__call__` gives them for its own answer (for a final
        label: the model's answer or a person's correction, e.g. its DICOM SR, :mod:`lib.dicom_sr`).

        A crop: volumes per label and the volume check. A whole head: volumes per label and per side, the volume
        check and the head size, sides split by the template's hippocampus boxes mapped through the image's
        registration: the one this task's infer made of the same file when it is among the
        :data:`REMEMBERED_REGISTRATIONS` latest (so an unchanged answer measures exactly as it was answered), else a
        new one. Boxes a request gave are not known here. Without a registration (the image does not register) the
        sides and the head size are "not computed".

        Raises:
            BadInput: 415 when the image cannot be read.
            ValueError: the label map is not of the image's size.
        """
        geometry = _geometry(image_path)
        image = None
        if geometry is None and os.path.isdir(image_path):
            image = _read(image_path)
            geometry = (image.GetSize(), image.GetSpacing())
        if geometry is None or registration.is_crop(*geometry):
            measured = measure_label_file(image_path, label_path, self.labels, sides=False)
            measured["volume_check"] = self.volume_check({"crop": measured.get("total_mm3")})
            return measured
        image = image or _read(image_path)
        labels = sitk.GetArrayFromImage(registration.read_image(label_path)).transpose(2, 1, 0)
        if labels.shape != tuple(image.GetSize()):
            raise ValueError(f"the label map's size {labels.shape} is not the image's {tuple(image.GetSize())}")
        transform = self._remembered(image_path)
        if transform is None:
            try:
                transform = registration.register_to_template(image)
            except RuntimeError:
                measured = self.measure(image, labels, {})
                measured["head_size"] = {
                    "etiv_ml": None,
                    "note": "not computed: the image could not be registered to the MNI152 template",
                }
                return measured
        sides = {}
        for side in SIDES:
            box = registration.HIPPOCAMPUS_BOXES_MNI[side]
            grid = registration.box_grid(box["center"], box["size"], float(self.spacing[0]))
            inside = registration.paste(np.ones(grid.GetSize(), np.uint8), grid, image, transform) > 0
            sides[side] = np.where(inside, labels, 0)
        measured = self.measure(image, labels, sides)
        measured["head_size"] = head_size(measured, {side: (None, None, transform) for side in SIDES}, None)
        return measured

    def _remember(self, path: Any, transform: Optional[sitk.Transform]) -> None:
        """Keep the registration of the image file at ``path`` (the latest :data:`REMEMBERED_REGISTRATIONS`)."""
        key = _file_key(path)
        if key is None or transform is None:
            return
        with self._registrations_lock:
            self._registrations[key] = transform
            self._registrations.move_to_end(key)
            while len(self._registrations) > REMEMBERED_REGISTRATIONS:
                self._registrations.popitem(last=False)

    def _remembered(self, path: str) -> Optional[sitk.Transform]:
        """The kept registration of the image file at ``path`` when the file is unchanged since, else None."""
        key = _file_key(path)
        with self._registrations_lock:
            return None if key is None else self._registrations.get(key)

    def _regions(self, image: sitk.Image, boxes) -> Dict[str, tuple]:
        """side -> (crop array in RAS voxel order, its grid, grid-to-image transform or None)."""
        spacing = float(self.spacing[0])
        if boxes:
            if not isinstance(boxes, dict) or not boxes or set(boxes) - set(SIDES):
                raise bad_input(422, f"boxes must map 'left' and/or 'right' to two RAS corners (mm), got {boxes!r}")
            regions: Dict[str, tuple] = {}
            for side, corners in boxes.items():
                try:
                    center, size = registration.box_from_corners(*corners)
                except (TypeError, ValueError) as error:
                    raise bad_input(422, f"boxes.{side}: {error}") from None
                grid = registration.box_grid(center, size, spacing)
                regions[side] = (registration.crop(image, grid), grid, None)
            return regions
        try:
            transform = registration.register_to_template(image)
        except RuntimeError as error:  # SimpleITK: the images share too little to register
            raise bad_input(
                422,
                f"could not register the image to the MNI152 template ({str(error).splitlines()[0]}); "
                "give boxes instead",
            ) from None
        regions = {}
        for side in SIDES:
            box = registration.HIPPOCAMPUS_BOXES_MNI[side]
            grid = registration.box_grid(box["center"], box["size"], spacing)
            regions[side] = (registration.crop(image, grid, transform), grid, transform)
        return regions

    def _segment(self, network, crop: np.ndarray, side: str, device) -> Tuple[np.ndarray, np.ndarray]:
        """Label map and normalised entropy (:mod:`lib.uncertainty`) of one crop (RAS voxel order); a left crop runs
        mirrored (see the module docstring)."""
        array = crop[::-1] if side == "left" else crop
        # a tensor in, a tensor out (MONAI annotates the array union)
        tensor = cast(
            torch.Tensor, NormalizeIntensity(nonzero=True)(torch.as_tensor(np.ascontiguousarray(array))[None])
        )
        with torch.inference_mode():
            probabilities = torch.softmax(self.inferer()(tensor[None].float().to(device), network), dim=1)[0]
        labels = probabilities.argmax(0).cpu().numpy().astype(np.uint8)
        entropy = normalised_entropy(probabilities)[0].cpu().numpy()
        if side == "left":
            return labels[::-1], entropy[::-1]
        return labels, entropy

    def measure(self, image: sitk.Image, labels: np.ndarray, sides: Dict[str, np.ndarray]) -> Dict:
        """Volumes (mm³) per label, per side, and the sanity check, from the label maps in the input's grid
        (``labels``: both sides; ``sides``: side -> that side's pasted label map)."""
        voxel = float(np.prod(image.GetSpacing()))
        per_label = {name: round(float((labels == value).sum() * voxel), 2) for name, value in self.labels.items()}
        measured: Dict[str, Any] = {
            "mm3": per_label,
            "total_mm3": round(sum(per_label.values()), 2),
            "voxel_mm3": round(voxel, 4),
        }
        for side, side_labels in sides.items():
            side_volumes = {
                f"{name}_mm3": round(float((side_labels == value).sum() * voxel), 2)
                for name, value in self.labels.items()
            }
            side_volumes["total_mm3"] = round(sum(side_volumes.values()), 2)
            measured[side] = side_volumes
            measured[f"{side}_mm3"] = side_volumes["total_mm3"]
        measured["volume_check"] = self.volume_check({side: measured[side]["total_mm3"] for side in sides})
        return measured

    def volume_check(self, volumes: Dict[str, Optional[float]]) -> Dict:
        """Each hippocampus volume (mm³) against the range of the training labels in ``model.json``."""
        reference = reference_volumes(self.get_path())
        if not reference:
            return {
                "status": "not checked",
                "reason": "model.json beside the checkpoint records no training volume range",
            }
        low, high = float(reference["min"]), float(reference["max"])
        outside = {side: v for side, v in volumes.items() if v is None or not low <= float(v) <= high}
        check = {"range_mm3": [low, high], "range_from": reference.get("source", "training labels")}
        if not outside:
            return dict(check, status="ok")
        reasons = [
            f"{side + ' ' if side in SIDES else ''}hippocampus {v} mm³ is outside {low:.0f}-{high:.0f} mm³"
            for side, v in outside.items()
        ]
        return dict(check, status="check the segmentation", reason="; ".join(reasons))


def reference_volumes(checkpoint: Optional[str]) -> Optional[Dict]:
    """``training.reference_volume_mm3`` of the ``model.json`` beside ``checkpoint`` (None when absent)."""
    try:
        card = read_card(checkpoint) if checkpoint else None
    except ValueError:
        return None
    return ((card or {}).get("training") or {}).get("reference_volume_mm3")


def _read(path: str) -> sitk.Image:
    try:
        return registration.read_image(path)
    except (RuntimeError, ValueError) as error:
        raise bad_input(
            415, f"cannot read the image {os.path.basename(path)!r}: {str(error).splitlines()[0]}"
        ) from None


def _file_key(path: Any) -> Optional[tuple]:
    """(real path, modification time ns, size) of an image file or series folder; None for what is neither."""
    if not isinstance(path, str):
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return os.path.realpath(path), stat.st_mtime_ns, stat.st_size


def _geometry(path: str) -> Optional[tuple]:
    """``(size, spacing)`` of the 3D image file at ``path`` from its header, or None (folder, 2D, unknown format)."""
    if os.path.isdir(path):
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return (reader.GetSize(), reader.GetSpacing()) if reader.GetDimension() == 3 else None


def _direction_matrix(image: sitk.Image) -> np.ndarray:
    """4x4 index-to-physical matrix of a SimpleITK image (LPS; its superior row equals RAS's, as
    :func:`lib.transforms.axial_axis` needs)."""
    matrix = np.eye(4)
    matrix[:3, :3] = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3) * np.asarray(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def head_size(measured: Dict[str, Any], regions: Dict[str, tuple], boxes) -> Dict[str, Any]:
    """Estimated total intracranial volume (:func:`lib.registration.etiv_ml`) from the registration this result
    already made, and the hippocampal volumes as a fraction of it (per mille); "not computed" when the request gave
    boxes (no registration ran)."""
    transforms = [transform for _, _, transform in regions.values() if transform is not None]
    if boxes or not transforms:
        return {"etiv_ml": None, "note": "not computed: boxes were given, so no registration to the template ran"}
    etiv = registration.etiv_ml(transforms[0])
    fractions = {"total": measured.get("total_mm3")}
    fractions.update({side: (measured.get(side) or {}).get("total_mm3") for side in SIDES})
    return {
        "etiv_ml": round(etiv, 1),
        "template_icv_ml": round(registration.template_intracranial_ml(), 1),
        "method": "MNI152 template intracranial volume x |det| of the affine registration (FreeSurfer-style eTIV)",
        "per_mille_of_etiv": {
            name: round(float(volume) / (etiv * 1000.0) * 1000.0, 4) if volume is not None and etiv > 0 else None
            for name, volume in fractions.items()
        },
    }
