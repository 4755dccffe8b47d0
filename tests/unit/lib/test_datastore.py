"""Tests of lib.datastore: MRIDatastore input checks, update_info_entry, spatial_size, class_label."""

import json
import os
import pathlib
import time

import nibabel as nib
import numpy as np
import pytest
from fastapi import HTTPException
from PIL import Image

from lib.datastore import MRIDatastore, spatial_size, update_info_entry
from lib.label_info import class_label

EXTENSIONS = ["*.nii.gz", "*.nii", "*.nrrd", "*.jpg", "*.png", "*.tif"]
VOLUME_SHAPE = (10, 8, 6)  # nibabel (i, j, k) = SimpleITK size (x, y, z)
PNG_SIZE = (12, 9)  # width, height


def _nifti(path, shape, dtype=np.float32, seed=0):
    data = np.random.default_rng(seed).random(shape).astype(dtype) * (100 if dtype != np.uint8 else 2)
    nib.save(nib.Nifti1Image(data.astype(dtype), np.diag([2.0, 2.0, 3.0, 1.0])), str(path))
    return str(path)


def _png(path, size=PNG_SIZE, mode="L"):
    w, h = size
    shape = (h, w) if mode == "L" else (h, w, 3)
    Image.fromarray((np.random.default_rng(1).random(shape) * 255).astype(np.uint8), mode).save(path)
    return str(path)


def _snapshot(root):
    """Every file under ``root`` with its bytes."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if name.endswith(".lock"):
                continue
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "inputs"
    d.mkdir()
    return d


@pytest.fixture
def store(tmp_path, inputs):
    root = tmp_path / "store"
    root.mkdir()
    ds = MRIDatastore(str(root), extensions=EXTENSIONS, auto_reload=False)
    ds.add_image("vol01", _nifti(inputs / "vol.nii.gz", VOLUME_SHAPE), {"subject": "s1"})
    ds.add_image("pic01", _png(inputs / "pic.png"), {"subject": "s2"})
    return ds, root


def _refused(call, status):
    with pytest.raises(HTTPException) as info:
        call()
    assert info.value.status_code == status
    return str(info.value.detail)


# ---------------------------------------------------------------- add_image


def _not_an_image(d):
    path = d / "notes.txt"
    path.write_text("this is not an image\n" * 20)
    return str(path)


def _garbage_png(d):
    path = d / "fake.png"
    path.write_bytes(b"\x00\x01garbage" * 100)
    return str(path)


def _garbage_nifti(d):
    path = d / "fake.nii"
    path.write_bytes(os.urandom(2000))
    return str(path)


def _png_named_nifti(d):
    path = d / "mislabelled.nii.gz"
    path.write_bytes(pathlib.Path(_png(d / "real.png")).read_bytes())
    return str(path)


def _nifti_named_png(d):
    path = d / "mislabelled.png"
    path.write_bytes(pathlib.Path(_nifti(d / "real.nii", (6, 5, 4))).read_bytes())
    return str(path)


def _truncated(d, name):
    path = d / name
    _nifti(path, (32, 32, 24), seed=3)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


@pytest.mark.parametrize(
    "make, image_id, status, words",
    [
        (_not_an_image, "notes", 415, "not a readable image"),
        (_garbage_png, "fake", 415, "not a readable image"),
        (_garbage_nifti, "fake", 415, "not a readable image"),
        (_not_an_image, "", 415, "not a readable image"),  # id from the file name
        (lambda d: _truncated(d, "cut.nii.gz"), "cut", 415, "truncated"),
        (lambda d: _truncated(d, "cut.nii"), "cut", 415, "truncated"),
        (_png_named_nifti, "mislabelled", 415, "uploaded image 'mislabelled'"),
        (_nifti_named_png, "mislabelled", 415, "uploaded image 'mislabelled'"),
        (lambda d: _nifti(d / "ok.nii.gz", (4, 4, 4)), "a/b", 422, "image id"),
        (lambda d: _nifti(d / "ok.nii.gz", (4, 4, 4)), "../escape", 422, "image id"),
        (lambda d: _nifti(d / "ok.nii.gz", (4, 4, 4)), "..", 422, "image id"),
        (lambda d: _nifti(d / "ok.nii.gz", (4, 4, 4)), ".hidden", 422, "image id"),
        (lambda d: _nifti(d / "ok.nii.gz", (4, 4, 4)), "sub\\dir", 422, "image id"),
        (lambda d: _nifti(d / "ok.nii.gz", (4, 4, 4)), "two words", 422, "image id"),
        (lambda d: _nifti(d / "ok.nii.gz", (4, 4, 4)), "/abs", 422, "image id"),
    ],
)
def test_add_image_refuses_and_leaves_datastore_unchanged(store, inputs, make, image_id, status, words):
    ds, root = store
    path = make(inputs)
    before = _snapshot(root)
    images = ds.list_images()
    detail = _refused(lambda: ds.add_image(image_id, path, {"subject": "x"}), status)
    assert words in detail
    if image_id:
        assert repr(image_id) in detail
    assert _snapshot(root) == before  # datastore_v2.json byte-identical, no new file
    assert ds.list_images() == images
    assert not (root.parent / "escape.nii.gz").exists()


@pytest.mark.parametrize("image_id", ["img\n", "x.nii\n"])
def test_add_image_refuses_trailing_newline_id(store, inputs, image_id):
    ds, root = store
    path = _nifti(inputs / "ok.nii.gz", (4, 4, 4))
    before = _snapshot(root)
    _refused(lambda: ds.add_image(image_id, path, {}), 422)
    assert _snapshot(root) == before


@pytest.mark.parametrize(
    "image_id, make, ext",
    [
        ("case_01.T1-w", lambda d: _nifti(d / "a.nii.gz", (5, 6, 7)), ".nii.gz"),
        ("7", lambda d: _png(d / "b.png", mode="RGB"), ".png"),
        ("", lambda d: _nifti(d / "from_name.nii", (5, 6, 7)), ".nii"),
    ],
)
def test_add_image_valid(store, inputs, image_id, make, ext):
    ds, root = store
    path = make(inputs)
    new_id = ds.add_image(image_id, path, {"subject": "s9"})
    assert new_id == (image_id or "from_name")
    stored = root / (new_id + ext)
    assert stored.read_bytes() == pathlib.Path(path).read_bytes()
    assert ds.get_image_info(new_id)["subject"] == "s9"
    reopened = MRIDatastore(str(root), extensions=EXTENSIONS, auto_reload=False)
    assert new_id in reopened.list_images()


# ---------------------------------------------------------------- save_label


@pytest.mark.parametrize(
    "image_id, make, label_size, image_size",
    [
        ("vol01", lambda d: _nifti(d / "lab.nii.gz", (10, 8, 5), np.uint8), (10, 8, 5), (10, 8, 6)),
        ("vol01", lambda d: _nifti(d / "lab.nii.gz", (8, 10, 6), np.uint8), (8, 10, 6), (10, 8, 6)),
        ("vol01", lambda d: _png(d / "lab.png", (10, 8)), (10, 8), (10, 8, 6)),
        ("pic01", lambda d: _png(d / "lab.png", (9, 12)), (9, 12), (12, 9)),
        ("pic01", lambda d: _nifti(d / "lab.nii.gz", (12, 9, 2), np.uint8), (12, 9, 2), (12, 9)),
    ],
)
def test_save_label_wrong_shape(store, inputs, image_id, make, label_size, image_size):
    ds, root = store
    path = make(inputs)
    before = _snapshot(root)
    detail = _refused(lambda: ds.save_label(image_id, path, "final", {}), 422)
    assert str(label_size) in detail and str(image_size) in detail
    assert repr(image_id) in detail
    assert _snapshot(root) == before
    assert not ds.get_label_by_image_id(image_id, "final")


def test_save_label_unknown_image(store, inputs):
    ds, root = store
    path = _nifti(inputs / "lab.nii.gz", VOLUME_SHAPE, np.uint8)
    before = _snapshot(root)
    detail = _refused(lambda: ds.save_label("nope", path, "final", {}), 404)
    assert "'nope'" in detail
    assert _snapshot(root) == before
    assert not (root / "labels" / "final").exists() or not os.listdir(root / "labels" / "final")


@pytest.mark.parametrize(
    "tag, make, status",
    [
        ("../final", lambda d: _nifti(d / "lab.nii.gz", VOLUME_SHAPE, np.uint8), 422),
        ("", lambda d: _nifti(d / "lab.nii.gz", VOLUME_SHAPE, np.uint8), 422),
        ("final", _not_an_image, 415),
        ("final", lambda d: _truncated(d, "lab.nii.gz"), 415),
    ],
)
def test_save_label_bad_tag_or_file(store, inputs, tag, make, status):
    ds, root = store
    path = make(inputs)
    before = _snapshot(root)
    _refused(lambda: ds.save_label("vol01", path, tag, {}), status)
    assert _snapshot(root) == before


@pytest.mark.parametrize(
    "image_id, make, ext",
    [
        ("vol01", lambda d: _nifti(d / "lab.nii.gz", VOLUME_SHAPE, np.uint8), ".nii.gz"),
        ("pic01", lambda d: _png(d / "lab.png", PNG_SIZE), ".png"),
        ("pic01", lambda d: _nifti(d / "lab.nii.gz", (12, 9, 1), np.uint8), ".nii.gz"),  # 2D stored as (W, H, 1)
    ],
)
def test_save_label_stored(store, inputs, image_id, make, ext):
    ds, root = store
    path = make(inputs)
    info = {"task": "tumor_seg", "label_info": [{"name": "tumor", "idx": 1}]}
    assert ds.save_label(image_id, path, "final", dict(info)) == image_id
    stored = root / "labels" / "final" / (image_id + ext)
    assert stored.read_bytes() == pathlib.Path(path).read_bytes()
    reopened = MRIDatastore(str(root), extensions=EXTENSIONS, auto_reload=False)
    assert reopened.get_label_by_image_id(image_id, "final") == image_id
    saved = reopened.get_label_info(image_id, "final")
    assert saved["task"] == "tumor_seg" and saved["label_info"] == info["label_info"]


# ---------------------------------------------------------------- update_info_entry


def test_update_info_entry_set_and_remove(store):
    ds, root = store
    start = int(time.time())
    update_info_entry(ds, "vol01", "class_labels", "sequence", {"label": "T2", "source": "user"})
    update_info_entry(ds, "vol01", "class_labels", "tumor_gate", {"label": "tumor"})
    entries = ds.get_image_info("vol01")["class_labels"]
    assert set(entries) == {"sequence", "tumor_gate"}
    assert entries["sequence"]["label"] == "T2" and entries["sequence"]["source"] == "user"
    assert start <= entries["sequence"]["ts"] <= int(time.time())
    assert class_label(ds.get_image_info("vol01"), "sequence") == "T2"

    # replace one entry, the other stays; the change is on disk
    update_info_entry(ds, "vol01", "class_labels", "sequence", {"label": "FLAIR"})
    on_disk = json.loads((root / "datastore_v2.json").read_text())
    disk_entries = on_disk["objects"]["vol01"]["image"]["info"]["class_labels"]
    assert disk_entries["sequence"]["label"] == "FLAIR" and "source" not in disk_entries["sequence"]
    assert disk_entries["tumor_gate"]["label"] == "tumor"

    update_info_entry(ds, "vol01", "class_labels", "sequence", None)
    update_info_entry(ds, "vol01", "class_labels", "never_set", None)  # removing a missing entry is fine
    info = ds.get_image_info("vol01")
    assert set(info["class_labels"]) == {"tumor_gate"}
    assert class_label(info, "sequence") is None
    assert info["subject"] == "s1"  # other info untouched
    assert "class_labels" not in ds.get_image_info("pic01")


def test_update_info_entry_does_not_mutate_record(store):
    ds, _ = store
    record = {"label": "T1"}
    update_info_entry(ds, "pic01", "predictions", "sequence", record)
    assert record == {"label": "T1"}
    assert ds.get_image_info("pic01")["predictions"]["sequence"]["label"] == "T1"


def test_update_info_entry_unknown_image(store):
    ds, root = store
    before = _snapshot(root)
    _refused(lambda: update_info_entry(ds, "ghost", "class_labels", "sequence", {"label": "T1"}), 404)
    assert _snapshot(root) == before


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize(
    "size, expected",
    [
        ((12, 9), (12, 9)),
        ((12, 9, 1), (12, 9)),
        ((12, 9, 1, 1), (12, 9)),
        ((10, 8, 6), (10, 8, 6)),
        ((10, 1, 6), (10, 1, 6)),  # only trailing axes
        ((1, 1, 1), (1, 1)),  # never below 2 axes
        ((1, 1), (1, 1)),
        ((5,), (5,)),
        ([7, 3, 1], (7, 3)),
    ],
)
def test_spatial_size(size, expected):
    assert spatial_size(size) == expected


@pytest.mark.parametrize(
    "info, expected",
    [
        ({"class_labels": {"sequence": {"label": "T1"}}}, "T1"),
        ({"class_labels": {"sequence": "T1"}}, None),
        ({"class_labels": {"other": {"label": "T1"}}}, None),
        ({"class_labels": None}, None),
        ({}, None),
    ],
)
def test_class_label(info, expected):
    assert class_label(info, "sequence") == expected


# ---------------------------------------------------------------- crash safety


def test_partial_files_of_an_interrupted_write_are_removed_at_start(store, inputs):
    ds, root = store
    ds.save_label("vol01", _nifti(inputs / "label.nii.gz", VOLUME_SHAPE, np.uint8), "final", {})
    leftovers = [
        root / "labels" / "final" / ".vol01.nii.gz.x1.partial",
        root / ".vol02.nii.gz.x2.partial",
        root / ".datastore_v2.json.x3.partial",
    ]
    for path in leftovers:
        path.write_bytes(b"half a file")
    before = json.loads((root / "datastore_v2.json").read_text())
    MRIDatastore(str(root), extensions=EXTENSIONS, auto_reload=False)
    assert not any(path.exists() for path in leftovers)
    assert json.loads((root / "datastore_v2.json").read_text())["objects"].keys() == before["objects"].keys()
    assert (root / "labels" / "final" / "vol01.nii.gz").exists()


def test_index_and_label_writes_replace_whole_files(store, inputs, monkeypatch):
    ds, root = store

    def interrupted_copy(source, dest):
        raise OSError("disk full")

    old = _snapshot(root)
    # the globals of the module MRIDatastore came from (MONAI Label may have imported lib.datastore afresh since)
    monkeypatch.setitem(MRIDatastore._store.__globals__, "atomic_copy", interrupted_copy)
    with pytest.raises(OSError, match="disk full"):
        ds.save_label("vol01", _nifti(inputs / "label.nii.gz", VOLUME_SHAPE, np.uint8), "final", {})
    assert _snapshot(root) == old  # neither the label nor the index changed
    assert "final" not in ds.get_labels_by_image_id("vol01")


def test_log_lines_name_image_ids_only(store, inputs, caplog):
    ds, _ = store
    caplog.set_level("DEBUG")
    secret = inputs / "DOE_JANE_PID4711.nii.gz"
    ds.add_image("case07", _nifti(secret, VOLUME_SHAPE), {"patient": "DOE^JANE"})
    ds.save_label(
        "case07",
        _nifti(inputs / "DOE_JANE_label.nii.gz", VOLUME_SHAPE, np.uint8),
        "final",
        {"annotator_note": "DOE^JANE PID4711"},
    )
    assert "case07" in caplog.text
    assert "DOE" not in caplog.text and "PID4711" not in caplog.text
