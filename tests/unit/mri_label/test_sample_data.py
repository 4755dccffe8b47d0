"""Tests for the synthetic sample datastore (mri_label.sample_data)."""

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mri_label import sample_data as sd

HEAD_IDS = [f"{s}_{q.lower()}" for s in sd.HEAD_SUBJECTS for q in sd.SEQUENCE_CLASSES]
HIPPO_IDS = [f"{s}_t1" for s in sd.HIPPO_SUBJECTS]
SLICE_IDS = list(sd.SLICE_SUBJECTS)
ALL_IDS = HEAD_IDS + HIPPO_IDS + SLICE_IDS
LABELLED_IDS = [i for i in HEAD_IDS if i.endswith("_flair")] + HIPPO_IDS + SLICE_IDS
TUMOR_IDS = {"synth01_flair", "synth02_flair", "synth03_flair", "synth_slice01", "synth_slice02"}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One datastore written with seed 0, with the summary, progress messages and wall time."""
    from monailabel.datastore.local import LocalDatastore  # noqa: F401  (import cost kept out of the timing)

    dest = tmp_path_factory.mktemp("sample") / "datastore"
    messages = []
    start = time.perf_counter()
    summary = sd.write_sample_data(dest, seed=0, progress=messages.append)
    return {"dest": dest, "summary": summary, "messages": messages, "seconds": time.perf_counter() - start}


def _image_file(dest: Path, image_id: str) -> Path:
    return dest / (image_id + (".png" if image_id.startswith("synth_slice") else ".nii.gz"))


def _label_file(dest: Path, image_id: str) -> Path:
    return dest / "labels" / "final" / _image_file(dest, image_id).name


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) if path.suffix == ".png" else np.asarray(nib.load(path).dataobj)


def _reopen(dest: Path):
    from monailabel.datastore.local import LocalDatastore

    return LocalDatastore(str(dest), extensions=sd.EXTENSIONS, auto_reload=False)


def test_counts_and_summary(store):
    dest = store["dest"]
    assert store["summary"] == {"path": str(dest), "images": 26, "labels": 14}
    assert len(store["messages"]) == 26
    assert sorted(p.name for p in dest.iterdir() if p.suffix in (".gz", ".png")) == sorted(
        _image_file(dest, i).name for i in ALL_IDS
    )
    assert len(list((dest / "labels" / "final").iterdir())) == 14
    assert store["seconds"] < 10.0


def test_datastore_json_reloads(store):
    dest = store["dest"]
    objects = json.loads((dest / "datastore_v2.json").read_text())["objects"]
    assert set(objects) == set(ALL_IDS)
    ds = _reopen(dest)
    assert sorted(ds.list_images()) == sorted(ALL_IDS)
    assert sorted(ds.get_labeled_images()) == sorted(LABELLED_IDS)
    assert len(ds.datalist()) == 14
    assert Path(ds.get_label_uri("synth_hippo02_t1", "final")) == _label_file(dest, "synth_hippo02_t1").resolve()


def test_readme(store):
    lines = (store["dest"] / "SYNTHETIC_DATA.md").read_text().strip().splitlines()
    text = " ".join(lines).lower()
    assert 5 <= len(lines) <= 10
    assert "synthetic" in text and "not patient data" in text and "mri-label sample-data" in text


@pytest.mark.parametrize(
    "image_id, shape, spacing",
    [
        ("synth01_t1", (96, 96, 16), (2.0, 2.0, 6.0)),
        ("synth06_flair", (96, 96, 16), (2.0, 2.0, 6.0)),
        ("synth_hippo03_t1", (64, 48, 40), (1.0, 1.0, 1.0)),
    ],
)
def test_nifti_geometry(store, image_id, shape, spacing):
    image = nib.load(_image_file(store["dest"], image_id))
    assert image.shape == shape and image.get_data_dtype() == np.float32
    assert np.allclose(image.header.get_zooms(), spacing)
    assert np.allclose(image.affine[:3, :3], np.diag(spacing))
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")
    assert np.allclose(image.affine @ [*((np.array(shape) - 1) / 2), 1], [0, 0, 0, 1])  # centred on 0 mm
    data = np.asarray(image.dataobj)
    assert data.min() >= 0 and data.max() > 500
    label_path = _label_file(store["dest"], image_id)
    if label_path.exists():
        label = nib.load(label_path)
        assert label.shape == shape and label.get_data_dtype() == np.uint8
        assert np.allclose(label.affine, image.affine)


@pytest.mark.parametrize("image_id", [i for i in LABELLED_IDS if i not in HIPPO_IDS])
def test_tumor_masks(store, image_id):
    dest = store["dest"]
    mask = _load(_label_file(dest, image_id))
    image = _load(_image_file(dest, image_id)).astype(float)
    assert set(np.unique(mask)) <= {0, 1}
    assert bool(mask.any()) == (image_id in TUMOR_IDS)
    if image_id.startswith("synth_slice"):
        assert Image.open(_image_file(dest, image_id)).mode == "L" and image.shape == (128, 128)
        assert Image.open(_label_file(dest, image_id)).mode == "L" and mask.shape == (128, 128)
        brain = (image > 0) & (mask == 0)
    else:
        tissues = sd.head_tissue_map(image_id.split("_")[0])
        assert np.array_equal(mask, (tissues == sd.TUMOR).astype(np.uint8))  # helper matches what was written
        brain = np.isin(tissues, (sd.GM, sd.WM, sd.CSF))
        if mask.any():
            assert 2 <= len(np.unique(np.nonzero(mask)[2])) <= 4  # spans 2-4 axial slices
            x_mm = (np.nonzero(mask)[0] - 47.5) * 2.0
            assert np.all(x_mm > 0) or np.all(x_mm < 0)  # one hemisphere
    if mask.any():
        assert image[mask > 0].mean() > image[brain].mean() + 100


@pytest.mark.parametrize("subject", list(sd.HEAD_SUBJECTS))
@pytest.mark.parametrize("sequence, csf_brighter", [("T1", False), ("T2", True), ("FLAIR", False)])
def test_contrast_ordering(store, subject, sequence, csf_brighter):
    tissues = sd.head_tissue_map(subject)
    image = _load(_image_file(store["dest"], f"{subject}_{sequence.lower()}"))
    csf, wm = image[tissues == sd.CSF].mean(), image[tissues == sd.WM].mean()
    assert (csf > wm) == csf_brighter and abs(csf - wm) > 150
    assert image[tissues == sd.BACKGROUND].max() == 0 and image[tissues > 0].min() > 0


def test_atrophy_grows_ventricles():
    stages = {s: sd.HEAD_SUBJECTS[s][0] for s in ("synth01", "synth02", "synth03", "synth04")}
    assert list(stages.values()) == list(sd.DEMENTIA_CLASSES)
    volumes = [(sd.head_tissue_map(s) == sd.CSF).sum() for s in stages]
    assert volumes == sorted(volumes) and volumes[-1] > 4 * volumes[0]


def _connected(mask: np.ndarray) -> bool:
    """True if the 6-connected foreground of a 3D boolean mask is a single component (numpy flood fill)."""
    filled = np.zeros_like(mask)
    filled[tuple(np.argwhere(mask)[0])] = True
    while True:
        grown = filled.copy()
        for axis in range(3):
            for step in (1, -1):
                grown |= np.roll(filled, step, axis=axis)
        grown &= mask
        if np.array_equal(grown, filled):
            return bool(np.array_equal(filled, mask))
        filled = grown


@pytest.mark.parametrize("image_id", HIPPO_IDS)
def test_hippocampus_masks(store, image_id):
    label = _load(_label_file(store["dest"], image_id))
    image = _load(_image_file(store["dest"], image_id)).astype(float)
    assert set(np.unique(label)) == {0, 1, 2}
    assert not label[31:33].any()  # nothing on the midline (x = 0 lies between voxels 31 and 32)
    for half in (label[:32], label[32:]):  # x < 0 (left) then x > 0 (right)
        assert _connected(half > 0)
        assert 1500 <= (half > 0).sum() <= 3000  # 1 mm^3 voxels
        y1, y2 = (np.nonzero(half == k)[1].mean() for k in (1, 2))
        assert y1 > y2  # label 1 (head) is anterior
        extent = np.nonzero(half.any(axis=(0, 2)))[0]
        assert 20 <= extent.max() - extent.min() + 1 <= 32  # long axis along y, ~28 mm
    assert image[label > 0].mean() < image[label == 0].mean()


def test_hippocampi_shrink_with_stage(store):
    volumes = [(_load(_label_file(store["dest"], i)) > 0).sum() for i in HIPPO_IDS]
    assert volumes[0] > volumes[-1] and volumes == sorted(volumes, reverse=True)


_TUMOR_INFO = {"synthetic": True, "task": "tumor_seg", "label_info": [{"name": "tumor", "idx": 1}]}
_HIPPO_INFO = {
    "synthetic": True,
    "task": "hippocampus",
    "label_info": [{"name": "anterior", "idx": 1}, {"name": "posterior", "idx": 2}],
}


def _cl(label):
    return {"label": label, "source": "synthetic"}


@pytest.mark.parametrize(
    "image_id, subject, sequence, class_labels, label_info",
    [
        ("synth03_t1", "synth03", "T1", {"sequence": _cl("T1"), "dementia_stage": _cl("MildDemented")}, None),
        ("synth03_t2", "synth03", "T2", {"sequence": _cl("T2")}, None),
        (
            "synth03_flair",
            "synth03",
            "FLAIR",
            {"sequence": _cl("FLAIR"), "tumor_gate": _cl("tumor"), "tumor_type": _cl("pituitary")},
            _TUMOR_INFO,
        ),
        (
            "synth05_flair",
            "synth05",
            "FLAIR",
            {"sequence": _cl("FLAIR"), "tumor_gate": _cl("no_tumor"), "tumor_type": _cl("no_tumor")},
            _TUMOR_INFO,
        ),
        ("synth04_t1", "synth04", "T1", {"sequence": _cl("T1"), "dementia_stage": _cl("ModerateDemented")}, None),
        (
            "synth_hippo02_t1",
            "synth_hippo02",
            "T1",
            {"sequence": _cl("T1"), "dementia_stage": _cl("VeryMildDemented")},
            _HIPPO_INFO,
        ),
        (
            "synth_slice01",
            "synth_slice01",
            "FLAIR",
            {"sequence": _cl("FLAIR"), "tumor_gate": _cl("tumor"), "tumor_type": _cl("glioma")},
            _TUMOR_INFO,
        ),
        (
            "synth_slice04",
            "synth_slice04",
            "FLAIR",
            {"sequence": _cl("FLAIR"), "tumor_gate": _cl("no_tumor"), "tumor_type": _cl("no_tumor")},
            _TUMOR_INFO,
        ),
    ],
)
def test_info_schema(store, image_id, subject, sequence, class_labels, label_info):
    ds = _reopen(store["dest"])
    info = {k: v for k, v in ds.get_image_info(image_id).items() if k not in ("ts", "name", "path")}
    assert info == {"synthetic": True, "subject": subject, "sequence": sequence, "class_labels": class_labels}
    if label_info is None:
        assert "final" not in ds.get_labels_by_image_id(image_id)
    else:
        got = {k: v for k, v in ds.get_label_info(image_id, "final").items() if k not in ("ts", "name", "path")}
        assert got == label_info


def test_deterministic_per_seed(store, tmp_path):
    again = sd.write_sample_data(tmp_path / "same", seed=0)
    other = sd.write_sample_data(tmp_path / "other", seed=1)
    for image_id in ALL_IDS:
        a, b = _image_file(store["dest"], image_id), _image_file(Path(again["path"]), image_id)
        assert a.read_bytes() == b.read_bytes(), image_id
    for image_id in LABELLED_IDS:
        a, b = _label_file(store["dest"], image_id), _label_file(Path(again["path"]), image_id)
        assert a.read_bytes() == b.read_bytes(), image_id
    for image_id in ("synth01_t1", "synth_hippo01_t1", "synth_slice01"):
        a, c = _load(_image_file(store["dest"], image_id)), _load(_image_file(Path(other["path"]), image_id))
        assert a.shape == c.shape and not np.array_equal(a, c)


def test_refuses_existing_datastore(store, tmp_path):
    with pytest.raises(FileExistsError, match="datastore"):
        sd.write_sample_data(store["dest"])
    dest = tmp_path / "fresh"
    sd.write_sample_data(dest)
    with pytest.raises(FileExistsError) as err:
        sd.write_sample_data(str(dest), seed=3)
    assert str(dest) in str(err.value)
