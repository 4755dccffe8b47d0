"""Infer latency and server memory of every task through the real server, beside MONAI Label's stock radiology
``segmentation_spleen`` infer as a reference (loopback only, bounded number of calls).

    .venv/bin/python benchmarks/latency.py [--calls 10] [--reference-calls 3] [--skip-reference]
                                           [--json latency.json] [--data ../shared/data] [--timeout 900]
                                           [--threads N] [--work DIR]

What it does, in one run on one machine:

1. Writes a datastore: the synthetic sample data (``mri_label.sample_data``) plus the benchmark inputs, generated
   with numpy/nibabel/Pillow before any server starts:

   * ``bench_slice_256``: a 256x256 8-bit PNG axial flair slice (an LGG tumor slice's flair channel where
     ``<data>/lgg_kaggle_3m`` is present, else a synthetic head slice);
   * ``bench_flair_256x256x30``: a 256x256x30 flair volume of 1 x 1 x 5 mm, axial (a BraTS ``_flair`` volume averaged
     into 5 mm slabs and padded to 256x256 where ``<data>/brats2018`` is present, else a synthetic head with a
     tumor);
   * ``bench_t1_182x218x182``: a real T1 of 182x218x182 at 1 mm: the MNI152 template bundled with nilearn resampled
     onto the standard MNI grid (brain-extracted; the hippocampus task registers it like any whole head);
   * ``bench_hippo_crop``: a Decathlon Task04 hippocampus crop (about 35x51x35, 1 mm) copied from
     ``<data>/Task04_Hippocampus`` where present, else a 35x51x35 crop of that T1 around the right hippocampus.

2. Starts ``monailabel start_server`` with the MRI app (``--conf models all``), every task given a checkpoint (the
   networks' initial weights: timing does not depend on the weights), and times each task on the inputs its config's
   declarations say it takes (:func:`task_inputs`: the 2D slice, or the crop for a task of 3D volumes only, and the
   whole-head volumes of the series it reads; a task of 3D volumes only refuses 2D input: checked once, a 422 is
   expected), plus each pipeline (``tumor_pipeline``) on its reference task's inputs twice: with ``threshold`` 0 (the
   gate fires on every head slice: segmentation and typing run on all of them, the upper bound) and 1 (the gate fires
   on none: gate cost only). Per row: first infer, warm p50/p95 over ``--calls`` calls
   (client wall time of ``POST /infer/<task>?image=ID&output=all``), and MONAI Label's own split of the p50 call:
   read (``LoadImaged``), pre-processing (the other pre-transforms), model (``infer``), post (``invert`` + ``post``),
   write, and ``other`` = client wall time minus the server's ``total`` (HTTP, the app's checks, sending the file).

3. Starts a second server on another port with ``benchmarks/reference_app`` (a faithful copy of MONAI Label 0.8.5's
   radiology ``segmentation_spleen`` infer, random initial weights) and times it on the 256x256x30 flair, the
   182x218x182 T1 and the hippocampus crop (``--reference-calls`` warm calls each; it is slow on a CPU).

4. Samples the RSS of each server process and its children every 0.25 s (psutil) and reads the server process's
   ``VmHWM`` (peak RSS) from ``/proc`` before stopping it.

Prints one table and the targets (2-core CPU, warm p50): 2D slice classification < 50 ms; a pipeline
(``tumor_pipeline``) on the 256x256x30 volume < 3 s; a task of 3D volumes only (``hippocampus``) < 1 s on the
Decathlon crop and < 10 s on the whole-head T1; every task faster than the reference on an input of the same size;
peak server memory < 4 GB with all tasks loaded.
Timings taken while other work runs on the machine are upper bounds: the load average is printed with them.
"""

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, cast

from machine import machine, machine_line

ROOT = Path(__file__).resolve().parents[1]
APP_DIR = ROOT / "apps" / "mri_app"
REFERENCE_APP_DIR = ROOT / "benchmarks" / "reference_app"
DEFAULT_DATA = ROOT.parent / "shared" / "data"

# ------------------------------------------------------------------------------------------------ pure helpers


def check_count(value, name: str = "--calls", low: int = 1, high: int = 100) -> int:
    """``value`` as an int in ``low..high``; ValueError naming ``name`` otherwise (booleans and floats with a
    fractional part are refused)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}") from None
    if isinstance(value, float) and number != value:
        raise ValueError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    if not low <= number <= high:
        raise ValueError(f"{name} must lie in {low}..{high}, got {number}")
    return number


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation between closest ranks (numpy's
    default), so the p50 of an even count is the mean of the middle two. NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"q must lie in 0..100, got {q}")
    data = sorted(float(v) for v in values)
    if not data:
        return float("nan")
    position = (len(data) - 1) * q / 100.0
    below = math.floor(position)
    above = min(below + 1, len(data) - 1)
    return data[below] + (data[above] - data[below]) * (position - below)


def median_index(values: Sequence[float]) -> int:
    """Index in ``values`` of its lower median (the call whose split is shown for the p50)."""
    if not values:
        raise ValueError("no values")
    order = sorted(range(len(values)), key=lambda i: values[i])
    return order[(len(values) - 1) // 2]


SPLIT_KEYS = ("read", "pre", "model", "post", "write", "other")


def latency_split(latencies: Optional[Dict], wall_s: float) -> Dict[str, Optional[float]]:
    """MONAI Label's ``latencies`` of one infer result (seconds) -> milliseconds per stage.

    ``read`` is the ``LoadImaged`` pre-transform (summed over pipeline stages where a pipeline reports them),
    ``pre`` the other pre-transforms, ``model`` the inferer, ``post`` invert + post transforms, ``write`` the
    writer, ``other`` the client's wall time minus the server's ``total`` (HTTP, the app's own checks, sending the
    result). A stage the result does not report is None. MONAI Label rounds its stage times to 10 ms; the
    per-transform times it keeps under ``transform`` are to 0.1 ms.
    """
    latencies = latencies or {}
    ms = lambda s: None if s is None else round(1000.0 * float(s), 1)  # noqa: E731
    number = lambda k: latencies.get(k) if isinstance(latencies.get(k), (int, float)) else None  # noqa: E731
    transforms: Any = latencies.get("transform") if isinstance(latencies.get("transform"), dict) else {}
    pre_transforms: Any = transforms.get("pre") if isinstance(transforms.get("pre"), dict) else {}
    read = pre_transforms.get("LoadImaged")
    pre_total = number("pre")
    if pre_total is not None and read is None and pre_transforms:
        read = 0.0
    pre = None if pre_total is None else max(0.0, pre_total - (read or 0.0))
    post = None
    if number("post") is not None or number("invert") is not None:
        post = (number("post") or 0.0) + (number("invert") or 0.0)
    total = number("total")
    other = None if total is None else max(0.0, wall_s - total)
    return {
        "read": ms(read) if pre_total is not None else None,
        "pre": ms(pre),
        "model": ms(number("infer")),
        "post": ms(post),
        "write": ms(number("write")),
        "other": ms(other),
    }


def format_table(headers: Sequence[str], rows: Iterable[Sequence], right: Optional[Sequence[bool]] = None) -> str:
    """A plain-text table: one header line, a rule, then the rows; None prints as ``-``, floats with no
    decimals at 100 or more, one decimal below. ``right[i]`` right-aligns column ``i`` (default: numbers right)."""

    def cell(value) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            if math.isnan(value):
                return "-"
            return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}"
        return str(value)

    rows = [list(r) for r in rows]
    for r in rows:
        if len(r) != len(headers):
            raise ValueError(f"row has {len(r)} cells, the header {len(headers)}: {r}")
    if right is None:
        right = [
            bool(rows) and all(isinstance(r[i], (int, float)) or r[i] is None for r in rows)
            for i in range(len(headers))
        ]
    text = [[cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(t[i]) for t in text]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.rjust(w) if right[i] else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(t) for t in text])


def evaluate_targets(rows: List[Dict], reference_rows: List[Dict], peak_rss_mb: Optional[float]) -> List[Dict]:
    """The targets of issue 10 against measured rows.

    Args:
        rows: our rows, each ``{"task", "input", "p50_ms", ...}``; ``input`` is a key of the benchmark inputs
            (``slice``, ``flair30``, ``t1``, ``hippo_crop``) and ``variant`` optionally names a request variant
            (``tumor_pipeline`` ``all_fire``/``none_fire``).
        reference_rows: the reference's rows (same keys); empty when it was skipped.
        peak_rss_mb: the MRI server's peak RSS (sampled over the process and its children, or VmHWM, whichever is
            larger), MB; None when not measured.

    Returns:
        ``[{"target", "measured", "limit", "unit", "met"}]``; ``met`` is None where nothing was measured.
    """
    out = []

    def add(target, measured, limit, unit="ms"):
        met = None if measured is None or (isinstance(measured, float) and math.isnan(measured)) else measured < limit
        out.append({"target": target, "measured": measured, "limit": limit, "unit": unit, "met": met})

    from mri_label import tasks as registry

    for r in rows:
        if r.get("input") == "slice" and r.get("kind") == "classification" and r.get("p50_ms") is not None:
            add(f"{r['task']} on a 2D slice < 50 ms", r["p50_ms"], 50.0)
    for name in registry.pipeline_names():
        pipeline = [r for r in rows if r["task"] == name and r.get("input") == "flair30"]
        worst = [r for r in pipeline if r.get("variant") == "all_fire"] or pipeline
        add(
            f"{name} on 256x256x30 < 3 s (gate fires on every head slice)",
            worst[0]["p50_ms"] if worst else None,
            3000.0,
        )
    for task in [t for t in registry.task_names() if registry.volume_only(t)]:  # the 3D networks (hippocampus)
        for input_key, limit, what in (
            ("hippo_crop", 1000.0, "Decathlon crop < 1 s"),
            ("t1", 10000.0, "whole-head T1 < 10 s"),
        ):
            found = [r for r in rows if r["task"] == task and r.get("input") == input_key]
            add(f"{task} on a {what}", found[0]["p50_ms"] if found else None, limit)
    reference = {r["input"]: r for r in reference_rows if r.get("p50_ms") is not None}
    for r in rows:
        ref = reference.get(r.get("input"))
        if ref is not None and r.get("p50_ms") is not None:
            name = r["task"] + (f" ({r['variant']})" if r.get("variant") else "")
            add(
                f"{name} on {r['input']} faster than the reference ({ref['p50_ms']:.0f} ms)", r["p50_ms"], ref["p50_ms"]
            )
    add("peak server RSS with all tasks loaded < 4 GB", peak_rss_mb, 4096.0, "MB")
    return out


# --------------------------------------------------------------------------------------------- benchmark inputs


def _mesh(shape, spacing):
    import numpy as np

    return np.ix_(*[(np.arange(n) - (n - 1) / 2.0) * s for n, s in zip(shape, spacing)])


def _smooth_field(x, y, z, rng, waves: int = 6, shortest_mm: float = 12.0, longest_mm: float = 45.0):
    """A smooth random field in [-1, 1] (sum of random plane waves) on the open mesh ``x, y, z``."""
    import numpy as np

    field = 0.0
    for _ in range(waves):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        k = 2 * np.pi / rng.uniform(shortest_mm, longest_mm) * direction
        field = field + np.cos(k[0] * x + k[1] * y + k[2] * z + rng.uniform(0, 2 * np.pi))
    return field / waves


#: relative intensity per tissue (background, scalp, skull, CSF, GM, WM, tumor, oedema) per contrast, by series id
#: (the sequence config's ``series_classes`` names each one's sequence class)
_TISSUES = ("background", "scalp", "skull", "csf", "gm", "wm", "tumor", "oedema")
_CONTRAST = {
    "t1": (0.0, 0.85, 0.08, 0.18, 0.55, 0.80, 0.42, 0.50),
    "t2": (0.0, 0.40, 0.05, 1.00, 0.55, 0.35, 0.85, 0.90),
    "flair": (0.0, 0.45, 0.06, 0.07, 0.62, 0.48, 1.00, 0.85),
}


def _mni_t1_on_fsl_grid(path: Path) -> None:
    """The MNI152 T1 template bundled with nilearn (a real T1), resampled onto the standard 182x218x182 1 mm
    MNI grid (RAS, corner voxel at (-90, -126, -72) mm), as int16."""
    import SimpleITK as sitk

    from mri_label.core.templates import template_path

    grid = sitk.Image([182, 218, 182], sitk.sitkInt16)
    grid.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    grid.SetOrigin((90.0, 126.0, -72.0))  # LPS of the RAS corner (-90, -126, -72)
    template = sitk.Cast(sitk.ReadImage(template_path()), sitk.sitkFloat32)
    t1 = sitk.Resample(template * 4.0, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkInt16)
    sitk.WriteImage(t1, str(path))


def synthetic_head(
    shape,
    spacing,
    contrast: str,
    seed: int = 0,
    tumor: bool = True,
    z_offset_mm: float = 0.0,
    centre_mm=(0.0, 0.0, 0.0),
    with_labels: bool = False,
):
    """A synthetic head in scanner-like units (float32, 0..~1100) on a RAS grid whose centre voxel lies at
    ``centre_mm`` (+ ``z_offset_mm`` in z) in head coordinates.

    Scalp, skull, a folded cortex, white matter, ventricles, two hippocampi (left at about (-28, -18, -20) mm),
    optionally a tumor with oedema (right hemisphere), a smooth bias field and noise. Not a phantom for accuracy,
    only realistic content (edges, texture, background) for timing. ``shape`` may be 2D-thin (``(H, W, 1)``).
    ``contrast``: a series id of :data:`_CONTRAST` (``t1``, ``t2``, ``flair``; any case). With ``with_labels`` returns
    ``(image, tumor_mask, hippocampus_labels)`` (uint8: tumor + oedema = 1; hippocampus 1 = the front half, 2 = the
    back half, as the hippocampus task's labels).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    x, y, z = _mesh(shape, spacing)
    x, y, z = x + centre_mm[0], y + centre_mm[1], z + centre_mm[2] + z_offset_mm
    ell = lambda c, r: ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2  # noqa: E731
    fold = _smooth_field(x, y, z, rng, waves=8, shortest_mm=8.0, longest_mm=20.0)
    head_r = np.array([76.0, 96.0, 88.0])
    tissue = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), np.uint8)
    tissue[ell((0, 0, -5), head_r) <= 1] = 1
    tissue[ell((0, 0, -5), head_r - 5) <= 1] = 2
    tissue[ell((0, 0, -5), head_r - 11) <= 1] = 3
    brain = ell((0, 0, -5), head_r - 13) + 0.06 * fold <= 1
    tissue[brain] = 4
    tissue[brain & (ell((0, 0, -5), head_r - 20) + 0.12 * fold <= 1)] = 5
    hippocampi = np.zeros(tissue.shape, np.uint8)
    for side in (-1, 1):
        tissue[ell((side * 9, 5, 10), (6, 22, 11)) <= 1] = 3  # lateral ventricles
        bent = z + 20 - 3.0 * ((y + 18) / 18.0) ** 2
        hippo = ((x - side * 28) / 5.0) ** 2 + ((y + 18) / 19.0) ** 2 + (bent / 7.0) ** 2 <= 1
        hippo = hippo & (tissue > 3)
        tissue[hippo] = 4
        hippocampi[hippo] = np.where(np.broadcast_to(y > -18, tissue.shape)[hippo], 1, 2)
    if tumor:
        lesion = ell((38, 15, 22), (16, 19, 15)) + 0.15 * fold
        tissue[brain & (lesion <= 1.9)] = 7
        tissue[brain & (lesion <= 1)] = 6
    image = np.asarray(_CONTRAST[contrast.lower()], np.float32)[tissue] * 1000.0
    texture = 1.0 + 0.05 * _smooth_field(x, y, z, rng, waves=6, shortest_mm=4.0, longest_mm=10.0)
    bias = 1.0 + 0.12 * _smooth_field(x, y, z, rng, waves=3, shortest_mm=150.0, longest_mm=300.0)
    image = image * texture * bias
    image = image + rng.normal(0.0, 12.0, image.shape).astype(np.float32)
    image = np.where(tissue > 0, image, np.abs(rng.normal(0.0, 6.0, image.shape)))  # Rayleigh-like air
    image = np.clip(image, 0, None).astype(np.float32)
    if with_labels:
        return image, (tissue >= 6).astype(np.uint8), hippocampi
    return image


def _affine(shape, spacing):
    import numpy as np

    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2.0 * np.asarray(spacing, dtype=float)
    return affine


def _save_nifti(array, affine, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def _to_uint8(image):
    import numpy as np

    high = np.percentile(image[image > 0], 99.5) if (image > 0).any() else 1.0
    return np.clip(image / max(high, 1e-6) * 255.0, 0, 255).round().astype(np.uint8)


def _lgg_slice(data: Path):
    """The flair channel (uint8, 256x256) of the first LGG slice with a tumor, and its name; None if absent."""
    import numpy as np
    from PIL import Image

    root = data / "lgg_kaggle_3m" / "kaggle_3m"
    if not root.is_dir():
        return None
    for patient in sorted(p for p in root.iterdir() if p.is_dir()):
        for mask in sorted(patient.glob("*_mask.tif"), key=lambda p: int(p.stem.split("_")[-2])):
            if np.asarray(Image.open(mask)).max() > 0:
                image = np.asarray(Image.open(str(mask).replace("_mask.tif", ".tif")))
                flair = image[..., 1] if image.ndim == 3 else image
                if flair.shape == (256, 256):
                    return flair.astype(np.uint8), mask.name.replace("_mask", "")
    return None


def _brats_flair_slabs(data: Path):
    """A BraTS ``_flair`` volume averaged into 5 mm slabs and padded to 256x256x30 (int16), its affine and its name."""
    import nibabel as nib
    import numpy as np
    from nibabel.spatialimages import SpatialImage

    root = data / "brats2018"
    found = sorted(root.glob("*/*_flair.nii.gz")) if root.is_dir() else []
    if not found:
        return None
    img = cast(SpatialImage, nib.load(str(found[0])))  # a NIfTI image (load() is annotated with the base class)
    volume = np.asarray(img.dataobj).astype(np.float32)
    nx, ny, nz = volume.shape
    first = (nz - 150) // 2
    slabs = volume[:, :, first : first + 150].reshape(nx, ny, 30, 5).mean(-1)
    px, py = (256 - nx) // 2, (256 - ny) // 2
    out = np.zeros((256, 256, 30), np.float32)
    out[max(px, 0) : max(px, 0) + min(nx, 256), max(py, 0) : max(py, 0) + min(ny, 256)] = slabs[
        max(-px, 0) : max(-px, 0) + min(nx, 256), max(-py, 0) : max(-py, 0) + min(ny, 256)
    ]
    # new voxel (i, j, k) = old voxel (i - px, j - py, first + 5 k + 2)
    step = np.array([[1, 0, 0, -px], [0, 1, 0, -py], [0, 0, 5, first + 2], [0, 0, 0, 1]], float)
    return np.round(out).astype(np.int16), img.affine @ step, found[0].name


def _decathlon_crop(data: Path):
    root = data / "Task04_Hippocampus" / "imagesTr"
    found = sorted(root.glob("hippocampus_*.nii.gz")) if root.is_dir() else []
    return found[0] if found else None


#: input key -> datastore image id, what it is
INPUTS = {
    "slice": ("bench_slice_256", "256x256 PNG slice"),
    "flair30": ("bench_flair_256x256x30", "256x256x30 flair 1x1x5mm"),
    "t1": ("bench_t1_182x218x182", "182x218x182 T1 1mm"),
    "hippo_crop": ("bench_hippo_crop", "hippocampus crop 1mm"),
}


def write_inputs(dest: Path, data: Optional[Path], seed: int = 0) -> Dict[str, Dict]:
    """Write the benchmark inputs into ``dest`` (a folder of files) and return ``key -> {"file", "id", "what",
    "source", "shape"}``; real data from ``data`` where present, else synthetic."""
    import nibabel as nib
    import numpy as np
    from nibabel.spatialimages import SpatialImage
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    out = {}

    def record(key, path, source, shape):
        image_id, what = INPUTS[key]
        out[key] = {"file": str(path), "id": image_id, "what": what, "source": source, "shape": list(shape)}

    real = _lgg_slice(data) if data else None
    if real is not None:
        slice_, source = real[0], f"LGG {real[1]} (flair channel)"
    else:
        head = synthetic_head((256, 256, 1), (0.9, 0.9, 1.0), "flair", seed, z_offset_mm=20.0)[:, :, 0]
        slice_, source = _to_uint8(head.T[::-1]), "synthetic"
    path = dest / "bench_slice_256.png"
    Image.fromarray(slice_, "L").save(path)
    record("slice", path, source, slice_.shape)

    real = _brats_flair_slabs(data) if data else None
    if real is not None:
        volume, affine, name = real
        source = f"BraTS {name}, 5 mm slabs, padded"
    else:
        shape, spacing = (256, 256, 30), (1.0, 1.0, 5.0)
        volume, affine, source = (
            np.round(synthetic_head(shape, spacing, "flair", seed + 1)).astype(np.int16),
            _affine(shape, spacing),
            "synthetic",
        )
    path = dest / "bench_flair_256x256x30.nii.gz"
    _save_nifti(volume, affine, path)
    record("flair30", path, source, volume.shape)

    shape, spacing = (182, 218, 182), (1.0, 1.0, 1.0)
    path = dest / "bench_t1_182x218x182.nii.gz"
    _mni_t1_on_fsl_grid(path)
    record("t1", path, "MNI152 T1 (nilearn) on the 182x218x182 1 mm MNI grid", shape)

    real = _decathlon_crop(data) if data else None
    path = dest / "bench_hippo_crop.nii.gz"
    if real is not None:
        shutil.copyfile(real, path)
        record("hippo_crop", path, f"Decathlon Task04 {real.name}", cast(SpatialImage, nib.load(str(path))).shape)
    else:
        # 35x51x35 around the right hippocampus of the MNI T1 (centre (28, -18, -16) mm: the 1 mm grid's voxel
        # (118, 108, 56), since its corner voxel lies at (-90, -126, -72) mm)
        t1 = np.asarray(cast(SpatialImage, nib.load(str(dest / "bench_t1_182x218x182.nii.gz"))).dataobj)
        centre = (118, 108, 56)
        lo = [c - s // 2 for c, s in zip(centre, (35, 51, 35))]
        crop = t1[lo[0] : lo[0] + 35, lo[1] : lo[1] + 51, lo[2] : lo[2] + 35]
        _save_nifti(crop.astype(np.int16), _affine((35, 51, 35), spacing), path)
        record("hippo_crop", path, "35x51x35 crop of the MNI T1", crop.shape)
    return out


def add_to_datastore(studies: Path, inputs: Dict[str, Dict]) -> None:
    """Add the benchmark inputs as images of a MONAI Label local datastore at ``studies``."""
    from monailabel.datastore.local import LocalDatastore

    from mri_label.sample_data import EXTENSIONS

    store = LocalDatastore(str(studies), extensions=EXTENSIONS, auto_reload=False)
    for item in inputs.values():
        store.add_image(item["id"], item["file"], {"benchmark": True, "source": item["source"]})


def write_checkpoints(models_dir: Path) -> List[str]:
    """Every task's initial weights as its checkpoint; returns the task names."""
    import torch

    sys.path.insert(0, str(APP_DIR))
    from main import discover_configs

    names = []
    for name, cls in discover_configs().items():
        config = cls()
        config.init(name, str(models_dir), {}, None)
        Path(config.path).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": config.network.state_dict()}, config.path)
        names.append(name)
    return names


# -------------------------------------------------------------------------------------------------- the servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MemorySampler(threading.Thread):
    """Peak RSS (MB) of a process and all its children, sampled every ``interval`` s until ``stop()``."""

    def __init__(self, pid: int, interval: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_mb = 0.0
        self.samples = 0
        self._stop_event = threading.Event()

    def sample(self) -> float:
        import psutil

        try:
            process = psutil.Process(self.pid)
            family = [process] + process.children(recursive=True)
        except psutil.Error:
            return 0.0
        total = 0
        for p in family:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def run(self):
        while not self._stop_event.is_set():
            self.peak_mb = max(self.peak_mb, self.sample())
            self.samples += 1
            self._stop_event.wait(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join(timeout=5)


def vm_hwm_mb(pid: int) -> Optional[float]:
    """``VmHWM`` (peak resident set) of a process from ``/proc``, MB; None where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


@contextlib.contextmanager
def server(
    app_dir: Path,
    studies: Path,
    conf: Dict[str, str],
    log_path: Path,
    timeout: float = 300,
    threads: Optional[int] = None,
):
    """``monailabel start_server`` on a free loopback port; yields ``{"url", "pid", "startup_s", "memory"}``
    (``memory``: a running :class:`MemorySampler`); stops the server (its whole process group) on exit.
    ``threads`` sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (torch's intra-op threads) of the server."""
    import requests

    # here, not at the top: benchmarks/train_throughput.py imports this module before it puts a reference checkout's
    # mri_label on the path
    from mri_label.launch import start_server_command

    port = free_port()
    command = start_server_command(app_dir, studies, "127.0.0.1", port, conf)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with open(log_path, "w") as log:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent, env=env, start_new_session=True
        )
        sampler = MemorySampler(process.pid)
        sampler.start()
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"server did not answer within {timeout} s; log: {log_path}")
                try:
                    if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.2)
            yield {"url": url, "pid": process.pid, "startup_s": time.perf_counter() - started, "memory": sampler}
        finally:
            sampler.stop()
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def _result_json(response) -> Dict:
    """The result JSON of an infer answer (plain JSON, or the ``params`` part of a multipart answer)."""
    kind = response.headers.get("content-type", "")
    if kind.startswith("application/json"):
        return response.json()
    from requests_toolbelt.multipart.decoder import MultipartDecoder

    for part in MultipartDecoder.from_response(response).parts:
        if b'name="params"' in part.headers.get(b"Content-Disposition", b""):
            return json.loads(part.text)
    return {}


def infer_once(url: str, task: str, image_id: str, params: Optional[Dict], timeout: float):
    """One ``POST /infer/<task>``; returns (wall seconds, status code, result JSON, answer bytes)."""
    import requests

    started = time.perf_counter()
    response = requests.post(
        f"{url}/infer/{task}",
        params={"image": image_id, "output": "all"},
        data={"params": json.dumps(params)} if params else None,
        timeout=timeout,
    )
    wall = time.perf_counter() - started
    body = _result_json(response) if response.ok else {"detail": response.text[:300]}
    return wall, response.status_code, body, len(response.content)


def cpu_seconds(pid: Optional[int]) -> Optional[float]:
    """User + system CPU seconds used so far by a process and its threads (psutil); None where unknown."""
    if pid is None:
        return None
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


def measure(
    url: str,
    task: str,
    image_id: str,
    calls: int,
    timeout: float,
    params: Optional[Dict] = None,
    pid: Optional[int] = None,
) -> Dict:
    """First call, then ``calls`` warm calls of one task on one image. With the server's ``pid``, also the server's
    CPU time per warm call (user + system over all its threads: robust to other load on the machine, unlike wall
    time; it counts all threads, so on an idle machine it can exceed the wall time)."""
    first_s, status, body, _ = infer_once(url, task, image_id, params, timeout)
    if status != 200:
        raise RuntimeError(f"{task} on {image_id}: HTTP {status}: {body.get('detail')}")
    walls, bodies, sizes, cpus = [], [], [], []
    for _ in range(calls):
        cpu_before = cpu_seconds(pid)
        wall, status, body, size = infer_once(url, task, image_id, params, timeout)
        cpu_after = cpu_seconds(pid)
        if status != 200:
            raise RuntimeError(f"{task} on {image_id}: HTTP {status}: {body.get('detail')}")
        walls.append(wall)
        bodies.append(body)
        sizes.append(size)
        if cpu_before is not None and cpu_after is not None:
            cpus.append(cpu_after - cpu_before)
    middle = median_index(walls)
    split = latency_split(bodies[middle].get("latencies"), walls[middle])
    fired = bodies[middle].get("fired_slices")
    return {
        "first_ms": round(first_s * 1000, 1),
        "p50_ms": round(percentile(walls, 50) * 1000, 1),
        "p95_ms": round(percentile(walls, 95) * 1000, 1),
        "cpu_p50_ms": round(percentile(cpus, 50) * 1000, 1) if cpus else None,
        "calls": calls,
        "walls_ms": [round(w * 1000, 1) for w in walls],
        "split_ms": split,
        "latencies": bodies[middle].get("latencies"),
        "answer_bytes": sizes[middle],
        "fired_slices": None if fired is None else len(fired),
    }


# ------------------------------------------------------------------------------------------------------- cases

#: benchmark input (a key of :data:`INPUTS`) -> (the series id it is, its form: ``slice`` a 2D picture, ``head`` a
#: whole-head volume, ``crop`` a volume cropped around a structure, as a 3D network trained on crops reads it)
INPUT_FORMS = {
    "slice": ("flair", "slice"),
    "flair30": ("flair", "head"),
    "t1": ("t1", "head"),
    "hippo_crop": ("t1", "crop"),
}
PIPELINE_VARIANTS = (("all_fire", {"threshold": 0.0}), ("none_fire", {"threshold": 1.0}))
REFERENCE_TASK = "segmentation_spleen"
REFERENCE_INPUTS = ("flair30", "t1", "hippo_crop")


def timed_series(task: str) -> Optional[str]:
    """The series id whose volumes a task is timed on: the one its config reads (``input_series``), else the one read
    by the reference task of a pipeline it is a stage of (``tumor_gate``, ``tumor_type``: FLAIR, as in
    ``tumor_pipeline``); None: any."""
    from mri_label import tasks as registry

    references = [registry.pipeline_reference(pipeline) for pipeline in registry.pipelines_running(task)]
    return registry.input_series(task) or next(filter(None, map(registry.input_series, references)), None)


def task_inputs(task: str) -> Tuple[str, ...]:
    """The benchmark inputs a task is timed on, from its config's declarations: the 2D slice, or, for a task of 3D
    volumes only (``volume_only``), the crops of its series instead; then the whole-head volumes of the series it is
    timed on (:func:`timed_series`; every one where that is any)."""
    from mri_label import tasks as registry

    series, volume_only = timed_series(task), registry.volume_only(task)
    first = [
        key
        for key, (of, form) in INPUT_FORMS.items()
        if (form == "slice" and not volume_only) or (form == "crop" and volume_only and series in (None, of))
    ]
    return tuple(first + [key for key, (of, form) in INPUT_FORMS.items() if form == "head" and series in (None, of)])


def timed_tasks(served: Iterable[str]) -> List[str]:
    """The served tasks in table order: classifiers, then segmenters, those of 3D volumes only last."""
    from mri_label import tasks as registry

    return sorted(served, key=lambda t: (registry.kind(t) != "classification", registry.volume_only(t)))


def _row(task, input_key, inputs, measured, kind, variant=None) -> Dict:
    return {
        "task": task,
        "variant": variant,
        "input": input_key,
        "what": inputs[input_key]["what"],
        "shape": inputs[input_key]["shape"],
        "source": inputs[input_key]["source"],
        "kind": kind,
        **measured,
    }


def run_mri(work: Path, studies: Path, inputs: Dict, calls: int, timeout: float, log=print, threads=None) -> Dict:
    from mri_label import tasks as registry

    models = work / "mri_model"
    tasks = write_checkpoints(models)
    rows, notes = [], []
    with server(
        APP_DIR, studies, {"models": "all", "model_dir": str(models)}, work / "mri_server.log", threads=threads
    ) as srv:
        log(f"mri-label server ready in {srv['startup_s']:.1f} s ({srv['url']}); tasks {tasks}")
        for task in timed_tasks(tasks):
            for input_key in task_inputs(task):
                log(f"  {task} on {input_key} ...")
                kind = registry.kind(task)
                rows.append(
                    _row(
                        task,
                        input_key,
                        inputs,
                        measure(srv["url"], task, inputs[input_key]["id"], calls, timeout, pid=srv["pid"]),
                        kind,
                    )
                )
        for task in [t for t in tasks if registry.volume_only(t)]:
            _, status, body, _ = infer_once(srv["url"], task, inputs["slice"]["id"], None, timeout)
            notes.append(
                f"{task} on the 2D slice: HTTP {status} ({str(body.get('detail'))[:90]})"
                + ("" if status == 422 else "  <-- expected 422")
            )
        pipelines = [p for p in registry.pipeline_names() if set(registry.pipeline_required_stages(p)) <= set(tasks)]
        for pipeline in pipelines:  # served where its required stages are
            for variant, params in PIPELINE_VARIANTS:
                for input_key in task_inputs(registry.pipeline_reference(pipeline)):
                    log(f"  {pipeline} ({variant}) on {input_key} ...")
                    measured = measure(
                        srv["url"], pipeline, inputs[input_key]["id"], calls, timeout, params, srv["pid"]
                    )
                    rows.append(_row(pipeline, input_key, inputs, measured, "pipeline", variant))
        peak = srv["memory"].peak_mb
        hwm = vm_hwm_mb(srv["pid"])
        return {
            "startup_s": round(srv["startup_s"], 2),
            "rows": rows,
            "notes": notes,
            "peak_rss_mb": round(peak, 1),
            "vm_hwm_mb": None if hwm is None else round(hwm, 1),
            "memory_samples": srv["memory"].samples,
        }


def run_reference(work: Path, studies: Path, inputs: Dict, calls: int, timeout: float, log=print, threads=None) -> Dict:
    models = work / "reference_model"
    conf = {
        "models": REFERENCE_TASK,
        "use_pretrained_model": "false",
        "random_init_weights": "true",
        "model_dir": str(models),
    }
    rows = []
    with server(REFERENCE_APP_DIR, studies, conf, work / "reference_server.log", threads=threads) as srv:
        log(f"reference server ready in {srv['startup_s']:.1f} s ({srv['url']})")
        for input_key in REFERENCE_INPUTS:
            log(f"  {REFERENCE_TASK} on {input_key} ...")
            measured = measure(srv["url"], REFERENCE_TASK, inputs[input_key]["id"], calls, timeout, pid=srv["pid"])
            rows.append(_row(f"REF {REFERENCE_TASK}", input_key, inputs, measured, "reference"))
        hwm = vm_hwm_mb(srv["pid"])
        return {
            "startup_s": round(srv["startup_s"], 2),
            "rows": rows,
            "peak_rss_mb": round(srv["memory"].peak_mb, 1),
            "vm_hwm_mb": None if hwm is None else round(hwm, 1),
        }


def table(rows: List[Dict], reference: Dict[str, Dict]) -> str:
    headers = [
        "task",
        "input",
        "n",
        "first ms",
        "p50 ms",
        "p95 ms",
        "cpu ms",
        "read",
        "pre",
        "model",
        "post",
        "write",
        "other",
        "ref p50",
        "x ref",
    ]
    lines = []
    for r in rows:
        name = r["task"] + (f" [{r['variant']}]" if r.get("variant") else "")
        what = r["what"] + (
            f", {r['fired_slices']} fired" if r.get("fired_slices") is not None and r.get("kind") == "pipeline" else ""
        )
        ref = reference.get(r["input"]) if not r["task"].startswith("REF") else None
        ratio = None if ref is None else round(r["p50_ms"] / ref["p50_ms"], 3)
        split = r["split_ms"]
        lines.append(
            [
                name,
                what,
                r["calls"],
                r["first_ms"],
                r["p50_ms"],
                r["p95_ms"],
                r.get("cpu_p50_ms"),
                *[split[k] for k in SPLIT_KEYS],
                None if ref is None else ref["p50_ms"],
                None if ratio is None else f"{ratio:.3f}",
            ]
        )
    right = [False, False] + [True] * (len(headers) - 2)
    return format_table(headers, lines, right)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", default=10, help="warm calls per task and input (1..100, default 10)")
    parser.add_argument(
        "--reference-calls",
        default=3,
        help="warm calls per input for the reference (1..100, default 3; "
        "at most --calls): it takes tens of seconds a call on a CPU",
    )
    parser.add_argument("--skip-reference", action="store_true", help="do not start the reference server")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="real data folder (default ../shared/data; synthetic inputs where absent)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds allowed per request (default 900)")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of both servers (OMP_NUM_THREADS; default: torch's "
        "own choice, one per core); 1 is steadier on a machine shared with other work",
    )
    parser.add_argument(
        "--work",
        type=Path,
        help="keep the datastore, checkpoints and server logs here (default: a temporary folder, removed at the end)",
    )
    args = parser.parse_args(argv)
    try:
        calls = check_count(args.calls, "--calls")
        ref_calls = min(calls, check_count(args.reference_calls, "--reference-calls"))
    except ValueError as error:
        parser.error(str(error))
    if not 1 <= args.timeout <= 3600:
        parser.error(f"--timeout must lie in 1..3600 s, got {args.timeout}")
    if args.threads is not None and not 1 <= args.threads <= 256:
        parser.error(f"--threads must lie in 1..256, got {args.threads}")
    try:
        import psutil  # noqa: F401
    except ImportError:
        parser.error("psutil is needed to sample the servers' memory (pip install psutil)")
    data = args.data if args.data and args.data.is_dir() else None

    sys.path.insert(0, str(ROOT))
    from mri_label.sample_data import write_sample_data

    load_before = os.getloadavg()
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mri-latency-")))
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        template = work / "template"
        if template.exists():
            shutil.rmtree(template)
        write_sample_data(template)
        inputs = write_inputs(work / "inputs", data)
        add_to_datastore(template, inputs)
        print(f"inputs written in {time.perf_counter() - started:.1f} s (real data: {data or 'none'})")
        for key, item in inputs.items():
            print(f"  {item['id']:<26} {'x'.join(map(str, item['shape'])):<12} {item['source']}")

        studies = work / "mri_studies"
        shutil.rmtree(studies, ignore_errors=True)
        shutil.copytree(template, studies)
        mri = run_mri(work, studies, inputs, calls, args.timeout, threads=args.threads)
        reference = None
        if not args.skip_reference:
            ref_studies = work / "reference_studies"
            shutil.rmtree(ref_studies, ignore_errors=True)
            shutil.copytree(template, ref_studies)
            reference = run_reference(work, ref_studies, inputs, ref_calls, args.timeout, threads=args.threads)
    load_after = os.getloadavg()

    ref_rows = reference["rows"] if reference else []
    by_input = {r["input"]: r for r in ref_rows}
    print()
    host = machine(load_before[0], load_after[0])
    print(machine_line(host, f"server threads {args.threads or 'default'}") + " (above ~0.5: upper bounds)")
    print(
        f"server start to ready: mri-label {mri['startup_s']:.1f} s"
        + (f", reference {reference['startup_s']:.1f} s" if reference else "")
    )
    print(
        "times in ms; p50/p95: client wall time of the warm calls; cpu: the server's CPU time per call (p50; all "
        "threads); read/pre/model/post/write/other: MONAI Label's split of the p50 call (its stage times are rounded "
        "to 10 ms); x ref: p50 / reference p50 on an input of the same size"
    )
    print(table(mri["rows"] + ref_rows, by_input))
    for note in mri["notes"]:
        print(note)
    print(
        "peak RSS, mri-label server and children (sampled every 0.25 s, all tasks loaded): "
        f"{mri['peak_rss_mb']:.0f} MB; "
        f"VmHWM of the server process: {mri['vm_hwm_mb']} MB"
    )
    if reference:
        print(f"peak RSS, reference server: {reference['peak_rss_mb']:.0f} MB; VmHWM {reference['vm_hwm_mb']} MB")
    targets = evaluate_targets(mri["rows"], ref_rows, max(mri["peak_rss_mb"], mri["vm_hwm_mb"] or 0.0))
    print()
    print(
        format_table(
            ["target", "measured", "limit", "met"],
            [
                [
                    t["target"],
                    None if t["measured"] is None else f"{t['measured']:.0f} {t['unit']}",
                    f"{t['limit']:.0f} {t['unit']}",
                    {True: "MET", False: "NOT MET", None: "not measured"}[t["met"]],
                ]
                for t in targets
            ],
            [False, True, True, False],
        )
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": host,
                    "calls": calls,
                    "reference_calls": ref_calls,
                    "threads": args.threads,
                    "inputs": inputs,
                    "mri": mri,
                    "reference": reference,
                    "targets": targets,
                },
                indent=1,
                default=str,
            )
        )
        print(f"numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
