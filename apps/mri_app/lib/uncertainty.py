"""Voxel uncertainty of a segmentation, on request (infer ``params`` ``{"uncertainty": true}``).

The answer is then the **normalised predictive entropy** of the network's softmax in the input's own grid instead of
the label map: ``H(p) / log K`` per voxel, 0 where one class has all the probability, 1 where the K classes are
equally likely (float32 NIfTI). For a task served with test-time mirrors (:mod:`lib.mirroring`) the entropy is that
of the mirror-averaged probabilities, so disagreement between the mirrors counts too. The JSON lists the axial
slices with the most uncertain voxels first, so that a clinician corrects those first.
"""

import math
from typing import Any, Dict, Hashable, List, Mapping, Optional

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from lib.request_checks import RequestError
from lib.transforms import axial_axis

MEASURE = "normalised predictive entropy H(p) / log K of the softmax (0 certain, 1 all classes equally likely)"
#: A voxel counts as uncertain from this normalised entropy on (two classes at about 0.89 / 0.11).
UNCERTAIN_FROM = 0.5
#: How many slices the answer lists.
TOP_SLICES = 5


def wants_uncertainty(data: Optional[Mapping[str, Any]]) -> bool:
    """Whether a request asks for the uncertainty map (``params`` ``uncertainty``: true or false).

    Raises:
        RequestError: 422 when ``uncertainty`` is not a JSON boolean.
    """
    value = (data or {}).get("uncertainty", False)
    if not isinstance(value, bool):
        raise RequestError(f"params uncertainty must be true or false, got {value!r}")
    return value


def normalised_entropy(probabilities: torch.Tensor) -> torch.Tensor:
    """``(K, *S)`` class probabilities (summing to 1 over K >= 2) -> ``(1, *S)`` entropy / log K in [0, 1]."""
    if probabilities.shape[0] < 2:
        raise ValueError(f"probabilities must hold K >= 2 classes on axis 0, got shape {tuple(probabilities.shape)}")
    p = probabilities.float().clamp_min(1e-12)
    return (-(p * p.log()).sum(0, keepdim=True) / math.log(probabilities.shape[0])).clamp(0.0, 1.0)


def uncertain_slices(entropy: np.ndarray, axis: int, top: int = TOP_SLICES) -> Dict[str, Any]:
    """Summary of an entropy map ``(H, W[, D])`` in the input grid: ``{"measure", "mean", "max",
    "uncertain_fraction", "uncertain_from", "slices": [{"slice": k, "uncertain_voxels": n, "mean": m}, ...]}`` with
    the ``top`` slices along voxel ``axis`` that hold the most voxels at or above :data:`UNCERTAIN_FROM` (ties and
    slices without such voxels ordered by mean entropy); a 2D map is one slice (0)."""
    values = np.asarray(entropy, dtype=np.float32)
    if values.ndim == 2:
        values, axis = values[..., None], 2
    if values.ndim != 3 or axis not in (0, 1, 2):
        raise ValueError(f"entropy must be a 2D or 3D map and axis 0, 1 or 2, got shape {values.shape}, axis {axis}")
    others = tuple(d for d in range(3) if d != axis)
    counts = (values >= UNCERTAIN_FROM).sum(axis=others)
    means = values.mean(axis=others)
    order = sorted(range(values.shape[axis]), key=lambda k: (-int(counts[k]), -float(means[k]), k))[:top]
    slices: List[Dict[str, Any]] = [
        {"slice": int(k), "uncertain_voxels": int(counts[k]), "mean": round(float(means[k]), 4)} for k in order
    ]
    return {
        "measure": MEASURE,
        "mean": round(float(values.mean()), 4),
        "max": round(float(values.max()), 4) if values.size else 0.0,
        "uncertain_fraction": round(float((values >= UNCERTAIN_FROM).mean()), 6) if values.size else 0.0,
        "uncertain_from": UNCERTAIN_FROM,
        "axis": int(axis),
        "slices": slices,
    }


class PredictiveEntropyd(MapTransform):
    """``data[key]``: softmax probabilities ``(K, *S)`` -> normalised entropy ``(1, *S)`` (:func:`normalised_entropy`),
    keeping its meta data."""

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d: Dict[Hashable, Any] = dict(data)
        for key in self.key_iterator(d):
            d[key] = normalised_entropy(d[key])
        return d


class UncertainSlicesd(MapTransform):
    """Writes :func:`uncertain_slices` of ``data[key]`` (an entropy map ``(H, W[, D])`` in the input grid) into
    ``data[result_key]["uncertainty"]``; the axial axis is taken from the input's affine
    (``data[key + "_meta_dict"]["affine"]``)."""

    def __init__(self, keys: KeysCollection, result_key: str = "result"):
        super().__init__(keys)
        self.result_key = result_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d: Dict[Hashable, Any] = dict(data)
        for key in self.key_iterator(d):
            entropy = np.asarray(torch.as_tensor(d[key]).detach().cpu().float().numpy())
            affine = (d.get(f"{key}_meta_dict") or {}).get("affine")
            axis = axial_axis(affine) if entropy.ndim == 3 and affine is not None else 2
            result = dict(d.get(self.result_key) or {})
            result["uncertainty"] = uncertain_slices(entropy, axis)
            d[self.result_key] = result
        return d
