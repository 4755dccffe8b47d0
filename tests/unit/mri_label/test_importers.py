"""Tests of mri_label.importers on small generated sources in each published layout (plus optional smoke tests
on a few real cases from /work/shared/data, skipped when it is absent)."""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from mri_label import importers, tasks
from mri_label.importers import DatasetError, dhash, import_dataset, near_duplicate_groups

# the real data sets (read-only), ../shared/data beside the repository unless MRI_LABEL_SHARED_DATA names another folder
REAL = Path(os.environ.get("MRI_LABEL_SHARED_DATA") or Path(__file__).resolve().parents[4] / "shared" / "data")
LGG_SLICES = (1, 2, 10, 11)  # lexicographic order would be 1, 10, 11, 2
PATIENT_A, PATIENT_B = "TCGA_AA_0001_20000101", "TCGA_BB_0002_20010202"  # B: channel 0 is a FLAIR copy


# ------------------------------------------------------------------------------------------- fake sources
def _lgg_slice(patient: str, n: int):
    """The (32, 32, 3) uint8 slice and (32, 32) 0/255 mask that the fake LGG source holds for slice ``n``."""
    rng = np.random.default_rng([sum(map(ord, patient)), n])
    rgb = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    if patient == PATIENT_B:
        rgb[..., 0] = rgb[..., 1]
    mask = np.zeros((32, 32), np.uint8)
    if patient == PATIENT_A and n == 10:
        mask[4:9, 20:30] = 255  # not symmetric: catches a transposition error
    return rgb, mask


@pytest.fixture
def lgg_src(tmp_path) -> Path:
    src = tmp_path / "kaggle_3m"
    for patient in (PATIENT_A, PATIENT_B):
        (src / patient).mkdir(parents=True)
        for n in LGG_SLICES:
            rgb, mask = _lgg_slice(patient, n)
            Image.fromarray(rgb).save(src / patient / f"{patient}_{n}.tif")
            Image.fromarray(mask).save(src / patient / f"{patient}_{n}_mask.tif")
    (src / "data.csv").write_text("Patient\n")  # a file beside the folders, as in the real set
    return src


def _smooth(seed: int, size=(64, 64)) -> np.ndarray:
    """A smooth random grey picture (uint8), different for each seed."""
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 6), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC))


def _noisy(picture: np.ndarray, seed: int) -> np.ndarray:
    return np.clip(picture + np.random.default_rng(seed).normal(0, 2.0, picture.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def alzheimer_src(tmp_path) -> Path:
    """Class folders: NonDemented holds a picture and a noisy copy of it (one group), the rest distinct pictures."""
    src = tmp_path / "alzheimer"
    for k, name in enumerate(["NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"]):
        (src / name).mkdir(parents=True)
        Image.fromarray(_smooth(10 + k)).save(src / name / f"{name[:4].lower()}1.jpg", quality=95)
    Image.fromarray(_noisy(_smooth(10), 1)).save(src / "NonDemented" / "nond2.jpg", quality=95)
    Image.fromarray(_smooth(20)).save(src / "NonDemented" / "nond3.png")
    return src


@pytest.fixture
def tumor_src(tmp_path) -> Path:
    """brain_tumor_4class layout: file names with spaces and brackets, the same name in two folders."""
    src = tmp_path / "Training"
    for k, name in enumerate(["glioma_tumor", "meningioma_tumor", "pituitary_tumor", "no_tumor"]):
        (src / name).mkdir(parents=True)
        Image.fromarray(np.stack([_smooth(30 + k)] * 3, -1)).save(src / name / f"p ({k}).jpg")
        Image.fromarray(_smooth(40 + k)).save(src / name / "image(1).jpg")
    return src


def _nifti(array, path: Path, affine=None) -> None:
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))


@pytest.fixture
def decathlon_src(tmp_path) -> Path:
    src = tmp_path / "Task04_Hippocampus"
    (src / "imagesTr").mkdir(parents=True)
    (src / "labelsTr").mkdir()
    training = []
    for k, case in enumerate(["hippocampus_001", "hippocampus_004", "hippocampus_006"]):
        rng = np.random.default_rng(k)
        shape = (10 + k, 12, 9)
        image = rng.random(shape).astype(np.float32) if k else rng.integers(0, 255, shape).astype(np.uint8)
        label = rng.integers(0, 3, shape).astype(np.uint8)
        _nifti(image, src / "imagesTr" / f"{case}.nii.gz")
        _nifti(label, src / "labelsTr" / f"{case}.nii.gz")
        training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    (src / "imagesTr" / "._hippocampus_001.nii.gz").write_bytes(b"\0\5\26\7")  # macOS resource fork
    meta = {
        "name": "Hippocampus",
        "labels": {"0": "background", "1": "Anterior", "2": "Posterior"},
        "training": training,
    }
    (src / "dataset.json").write_text(json.dumps(meta))
    return src


BRATS_AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.fixture
def brats_src(tmp_path) -> Path:
    src = tmp_path / "brats2018"
    for k, case in enumerate(["Brats18_X_1", "Brats18_Y_2"]):
        (src / case).mkdir(parents=True)
        rng = np.random.default_rng(k)
        for series in ("flair", "t1", "t1ce", "t2"):
            _nifti(
                rng.integers(0, 900, (8, 9, 6)).astype(np.int16), src / case / f"{case}_{series}.nii.gz", BRATS_AFFINE
            )
        seg = np.zeros((8, 9, 6), np.int16)
        seg[2:5, 3:6, 1:4] = [[[1, 2, 4]]]
        _nifti(seg, src / case / f"{case}_seg.nii.gz", BRATS_AFFINE)
    return src


# ------------------------------------------------------------------------------------------- helpers
def _objects(dest: Path) -> dict:
    return json.loads((dest / "datastore_v2.json").read_text())["objects"]


def _info(dest: Path, image_id: str) -> dict:
    return _objects(dest)[image_id]["image"]["info"]


def _volume(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj)


def _snapshot(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture
def out(tmp_path, monkeypatch) -> Path:
    """An empty parent folder for ``dest``; the system temp folder is redirected to an empty one as well,
    so the tests can check that nothing is left behind in either."""
    (tmp_path / "systmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "systmp"))
    (tmp_path / "out").mkdir()
    return tmp_path / "out"


def _nothing_left(out: Path, dest_exists: bool) -> None:
    assert sorted(p.name for p in out.iterdir()) == (["store"] if dest_exists else [])
    assert [p for p in (out.parent / "systmp").iterdir() if p.name.startswith("mri_label_import_")] == []


# ------------------------------------------------------------------------------------------- lgg
def test_lgg_one_volume_per_patient_in_slice_number_order(lgg_src, out):
    messages = []
    summary = import_dataset("lgg", lgg_src, out / "store", progress=messages.append)
    dest = out / "store"
    assert (summary["images"], summary["labels"], summary["subjects"]) == (5, 2, 2)
    assert summary["class_counts"] == {"sequence": {"FLAIR": 2, "T1": 3}, "tumor_gate": {"tumor": 1, "no_tumor": 1}}
    assert [s["item"] for s in summary["skipped"]] == [f"{PATIENT_B} T1 pre-contrast (channel 0)"]
    assert messages == [f"lgg: 1/2 {PATIENT_A}", f"lgg: 2/2 {PATIENT_B}"]
    assert set(_objects(dest)) == {
        f"{PATIENT_A}_flair",
        f"{PATIENT_A}_t1",
        f"{PATIENT_A}_t1ce",
        f"{PATIENT_B}_flair",
        f"{PATIENT_B}_t1ce",
    }
    flair = _volume(dest / f"{PATIENT_A}_flair.nii.gz")
    mask = _volume(dest / "labels" / "final" / f"{PATIENT_A}_flair.nii.gz")
    t1ce = _volume(dest / f"{PATIENT_A}_t1ce.nii.gz")
    assert flair.shape == mask.shape == (32, 32, 4) and mask.dtype == np.uint8
    for k, n in enumerate(LGG_SLICES):
        rgb, m = _lgg_slice(PATIENT_A, n)
        assert np.array_equal(flair[:, :, k], rgb[..., 1].T) and np.array_equal(t1ce[:, :, k], rgb[..., 2].T)
        assert np.array_equal(mask[:, :, k], (m > 0).T.astype(np.uint8))
    assert set(np.unique(mask)) == {0, 1} and mask[:, :, 2].sum() == 50 and mask.sum() == 50
    assert nib.aff2axcodes(nib.load(str(dest / f"{PATIENT_A}_flair.nii.gz")).affine) == ("L", "P", "S")
    info = _info(dest, f"{PATIENT_A}_flair")
    assert info["subject"] == PATIENT_A and info["sequence"] == "FLAIR" and info["spacing_known"] is False
    assert info["class_labels"] == {
        "sequence": {"label": "FLAIR", "source": "lgg"},
        "tumor_gate": {"label": "tumor", "source": "lgg"},
    }
    assert _info(dest, f"{PATIENT_B}_flair")["class_labels"]["tumor_gate"]["label"] == "no_tumor"
    assert _info(dest, f"{PATIENT_A}_t1")["class_labels"] == {"sequence": {"label": "T1", "source": "lgg"}}
    assert _info(dest, f"{PATIENT_B}_t1ce")["subject"] == PATIENT_B
    label = _objects(dest)[f"{PATIENT_A}_flair"]["labels"]["final"]["info"]
    assert {k: label[k] for k in ("task", "label_info", "source")} == {
        "task": "tumor_seg",
        "label_info": [{"name": "tumor", "idx": 1}],
        "source": "lgg",
    }
    _nothing_left(out, True)


def test_lgg_accepts_the_parent_of_kaggle_3m(lgg_src, out):
    assert import_dataset("lgg", lgg_src.parent, out / "store")["subjects"] == 2


# ------------------------------------------------------------------------------------------- class folders
def test_class_folders_group_near_duplicates_and_copy_the_pictures(alzheimer_src, out):
    summary = import_dataset("classfolders", alzheimer_src, out / "store", task="dementia_stage")
    dest = out / "store"
    assert (summary["images"], summary["labels"], summary["subjects"]) == (6, 0, 5)
    assert summary["class_counts"] == {
        "dementia_stage": {"MildDemented": 1, "ModerateDemented": 1, "NonDemented": 3, "VeryMildDemented": 1}
    }
    assert summary["groups"] == {
        "count": 5,
        "with_several_images": 1,
        "largest": 2,
        "hash_threshold": 4,
        "mixed_class": [],
    }
    infos = {i: o["image"]["info"] for i, o in _objects(dest).items()}
    assert (
        infos["nond1"]["group"]
        == infos["nond2"]["group"]
        == infos["nond1"]["subject"]
        == infos["nond2"]["subject"]
        == "nond1"
    )
    assert infos["nond3"]["group"] == infos["nond3"]["subject"] == "nond3"
    assert infos["mild1"]["class_labels"] == {"dementia_stage": {"label": "MildDemented", "source": "classfolders"}}
    assert infos["nond2"]["original"] == "NonDemented/nond2.jpg" and "sequence" not in infos["nond2"]
    assert (dest / "nond2.jpg").read_bytes() == (alzheimer_src / "NonDemented" / "nond2.jpg").read_bytes()
    assert (dest / "nond3.png").is_file()
    _nothing_left(out, True)


@pytest.mark.parametrize(
    "task, classes",
    [
        ("tumor_type", {"glioma": 2, "meningioma": 2, "pituitary": 2, "no_tumor": 2}),
        ("tumor_gate", {"tumor": 6, "no_tumor": 2}),
    ],
)
def test_class_folders_map_published_names_and_make_safe_unique_ids(tumor_src, out, task, classes):
    summary = import_dataset("classfolders", tumor_src, out / "store", task=task)
    assert summary["class_counts"] == {task: classes}
    ids = set(_objects(out / "store"))
    assert {"p_0", "p_1", "p_2", "p_3", "glioma_tumor_image_1", "no_tumor_image_1"} <= ids and len(ids) == 8


def test_alzheimer_slices_import_as_t1_for_sequence(alzheimer_src, out):
    summary = import_dataset("classfolders", alzheimer_src, out / "store", task="sequence")
    assert summary["class_counts"] == {"sequence": {"T1": 6}}
    infos = {i: o["image"]["info"] for i, o in _objects(out / "store").items()}
    assert infos["mild1"]["class_labels"] == {"sequence": {"label": "T1", "source": "classfolders"}}


def test_tumor_type_near_duplicates_land_in_one_group_and_one_split_side(tmp_path, out):
    """brain_tumor_4class layout with one 256x256 glioma picture four times (exact copy, noisy re-encoded JPEG,
    half-size PNG): the four share a group (= subject, the smallest id), distinct pictures stay alone, and the
    subject split keeps the group on one side while the random image split (split_random.json) does not look at
    groups."""
    from mri_label.core.splits import ensure_split, split_of

    src = tmp_path / "Training"
    for k, name in enumerate(["glioma_tumor", "meningioma_tumor", "pituitary_tumor", "no_tumor"]):
        (src / name).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(_smooth(60 + 5 * k + j, (120, 100))).save(src / name / f"{name[:4]}_{j}.jpg", quality=95)
    glioma, base = src / "glioma_tumor", _smooth(99, (256, 256))
    Image.fromarray(base).save(glioma / "dup_a.jpg", quality=95)
    shutil.copyfile(glioma / "dup_a.jpg", glioma / "dup_b.jpg")
    Image.fromarray(_noisy(base, 5)).save(glioma / "dup_c.jpg", quality=75)
    Image.fromarray(base).resize((128, 128)).save(glioma / "dup_d.png")
    summary = import_dataset("classfolders", src, out / "store", task="tumor_type")
    infos = {i: o["image"]["info"] for i, o in _objects(out / "store").items()}
    duplicates = ["dup_a", "dup_b", "dup_c", "dup_d"]
    assert {infos[i]["group"] for i in duplicates} == {infos[i]["subject"] for i in duplicates} == {"dup_a"}
    others = [i for i in infos if i not in duplicates]
    assert len(others) == 12 and {infos[i]["group"] for i in others} == set(others)
    assert summary["groups"] == {
        "count": 13,
        "with_several_images": 1,
        "largest": 4,
        "hash_threshold": 4,
        "mixed_class": [],
    }
    assert summary["class_counts"] == {"tumor_type": {"glioma": 7, "meningioma": 3, "pituitary": 3, "no_tumor": 3}}
    assert {infos[i]["class_labels"]["tumor_type"]["label"] for i in duplicates} == {"glioma"}
    split = ensure_split(out / "store")
    assert len({split_of(split, infos[i]["subject"]) for i in duplicates}) == 1 and len(split["subjects"]) == 13
    before = (out / "store" / "split.json").read_bytes()
    random = ensure_split(out / "store", unit="image")
    assert random["unit"] == "image" and set(random["subjects"]) == set(infos)
    assert (out / "store" / "split.json").read_bytes() == before and (out / "store" / "split_random.json").is_file()


def test_dhash_ignores_noise_and_rescaling_but_not_content():
    picture = _smooth(3, (176, 208))
    base = dhash(Image.fromarray(picture))
    assert base.shape == (256,) and base.dtype == bool
    assert (dhash(Image.fromarray(_noisy(picture, 2))) != base).sum() <= 4
    assert (dhash(Image.fromarray(picture).resize((88, 104))) != base).sum() <= 4
    assert (dhash(Image.fromarray(_smooth(4, (176, 208)))) != base).sum() > 40


def test_near_duplicate_groups_join_chains_within_the_threshold():
    hashes = np.zeros((5, 256), bool)
    hashes[1, :3] = True  # 3 from 0
    hashes[2, :6] = True  # 3 from 1, 6 from 0: chained into 0's group
    hashes[3, 100:110] = True  # 10 from 0
    hashes[4, 100:112] = True  # 2 from 3
    assert near_duplicate_groups(hashes, 4).tolist() == [0, 0, 0, 1, 1]
    assert near_duplicate_groups(hashes, 0).tolist() == [0, 1, 2, 3, 4]


def test_class_folders_need_a_known_task_and_classes(alzheimer_src, out):
    with pytest.raises(ValueError, match="task"):
        import_dataset("classfolders", alzheimer_src, out / "store")
    with pytest.raises(ValueError, match="not a dementia_stage class"):
        import_dataset("classfolders", alzheimer_src, out / "store", task="dementia_stage", class_map={"x": "y"})
    summary = import_dataset(
        "classfolders",
        alzheimer_src,
        out / "store",
        task="tumor_gate",
        class_map={
            "NonDemented": "no_tumor",
            "VeryMildDemented": "no_tumor",
            "MildDemented": "tumor",
            "ModerateDemented": "tumor",
        },
    )
    assert summary["class_counts"] == {"tumor_gate": {"no_tumor": 4, "tumor": 2}}


# ------------------------------------------------------------------------------------------- decathlon, brats
def test_decathlon_images_and_labels(decathlon_src, out):
    summary = import_dataset("decathlon", decathlon_src, out / "store")
    dest = out / "store"
    assert (summary["images"], summary["labels"], summary["subjects"]) == (3, 3, 3)
    assert summary["class_counts"] == {"sequence": {"T1": 3}}
    assert [s["reason"][:11] for s in summary["skipped"]] == ["hidden file"]
    assert set(_objects(dest)) == {"hippocampus_001", "hippocampus_004", "hippocampus_006"}
    info = _info(dest, "hippocampus_004")
    assert info["subject"] == "hippocampus_004" and info["class_labels"] == {
        "sequence": {"label": "T1", "source": "decathlon"}
    }
    label = _objects(dest)["hippocampus_004"]["labels"]["final"]["info"]
    assert label["task"] == "hippocampus" and label["source"] == "decathlon"
    assert label["label_info"] == [{"name": "anterior", "idx": 1}, {"name": "posterior", "idx": 2}]
    source = _volume(decathlon_src / "labelsTr" / "hippocampus_004.nii.gz")
    assert np.array_equal(_volume(dest / "labels" / "final" / "hippocampus_004.nii.gz"), source)
    assert (dest / "hippocampus_004.nii.gz").read_bytes() == (
        decathlon_src / "imagesTr" / "hippocampus_004.nii.gz"
    ).read_bytes()


def test_brats_four_sequences_and_whole_tumor_mask(brats_src, out):
    summary = import_dataset("brats", brats_src, out / "store")
    dest = out / "store"
    assert (summary["images"], summary["labels"], summary["subjects"]) == (8, 2, 2)
    assert summary["class_counts"] == {"sequence": {"FLAIR": 2, "T1": 4, "T2": 2}, "tumor_gate": {"tumor": 2}}
    sequences = {i: o["image"]["info"]["sequence"] for i, o in _objects(dest).items() if i.startswith("Brats18_X_1")}
    assert sequences == {
        "Brats18_X_1_flair": "FLAIR",
        "Brats18_X_1_t1": "T1",
        "Brats18_X_1_t1ce": "T1",
        "Brats18_X_1_t2": "T2",
    }
    assert {_info(dest, i)["subject"] for i in sequences} == {"Brats18_X_1"}
    mask_image = nib.load(str(dest / "labels" / "final" / "Brats18_X_1_flair.nii.gz"))
    mask = np.asarray(mask_image.dataobj)
    assert mask.dtype == np.uint8 and mask.sum() == 27 and set(np.unique(mask)) == {0, 1}
    assert np.allclose(mask_image.affine, BRATS_AFFINE)
    assert _objects(dest)["Brats18_X_1_flair"]["labels"]["final"]["info"]["task"] == "tumor_seg"
    assert _info(dest, "Brats18_X_1_flair")["class_labels"]["tumor_gate"] == {"label": "tumor", "source": "brats"}
    assert "tumor_gate" not in _info(dest, "Brats18_X_1_t2")["class_labels"]
    assert list(_objects(dest)["Brats18_X_1_t1"]["labels"]) == []


# ------------------------------------------------------------------------------------------- adding to a datastore
def test_a_second_import_adds_to_the_datastore_and_a_repeat_is_refused(decathlon_src, brats_src, out):
    dest = out / "store"
    import_dataset("decathlon", decathlon_src, dest)
    import_dataset("brats", brats_src, dest)
    assert len(_objects(dest)) == 11
    before = _snapshot(dest)
    with pytest.raises(DatasetError, match="hippocampus_001.*already in the datastore"):
        import_dataset("decathlon", decathlon_src, dest)
    assert _snapshot(dest) == before
    _nothing_left(out, True)


# ------------------------------------------------------------------------------------------- malformed sources
def _lgg_missing_mask(src):
    (src / PATIENT_B / f"{PATIENT_B}_10_mask.tif").unlink()
    return "lgg", {}, f"{PATIENT_B}_10.tif"


def _lgg_orphan_mask(src):
    (src / PATIENT_B / f"{PATIENT_B}_2.tif").unlink()
    return "lgg", {}, f"{PATIENT_B}_2_mask.tif"


def _lgg_unreadable(src):  # in the second patient: the first is already written when it fails
    (src / PATIENT_B / f"{PATIENT_B}_11.tif").write_bytes(b"II*\0 not a tiff")
    return "lgg", {}, f"{PATIENT_B}_11.tif"


def _unknown_class_folder(src):
    (src / "SevereDemented").mkdir()
    return "classfolders", {"task": "dementia_stage"}, "SevereDemented"


def _unreadable_picture(src):
    path = src / "ModerateDemented" / "mode1.jpg"
    path.write_bytes(path.read_bytes()[:200])
    return "classfolders", {"task": "dementia_stage"}, "mode1.jpg"


def _missing_dataset_json(src):
    (src / "dataset.json").unlink()
    return "decathlon", {}, "dataset.json"


def _decathlon_orphan_label(src):
    (src / "imagesTr" / "hippocampus_004.nii.gz").unlink()
    return "decathlon", {}, "labelsTr/hippocampus_004.nii.gz"


def _decathlon_missing_label(src):
    (src / "labelsTr" / "hippocampus_006.nii.gz").unlink()
    return "decathlon", {}, "imagesTr/hippocampus_006.nii.gz"


def _decathlon_unreadable(src):
    path = src / "imagesTr" / "hippocampus_006.nii.gz"
    path.write_bytes(path.read_bytes()[:60])
    return "decathlon", {}, "hippocampus_006.nii.gz"


def _brats_missing_seg(src):
    (src / "Brats18_Y_2" / "Brats18_Y_2_seg.nii.gz").unlink()
    return "brats", {}, "Brats18_Y_2_seg.nii.gz"


def _brats_unreadable(src):
    path = src / "Brats18_Y_2" / "Brats18_Y_2_t2.nii.gz"
    path.write_bytes(path.read_bytes()[:100])
    return "brats", {}, "Brats18_Y_2_t2.nii.gz"


BREAKS = [  # (source fixture, breakage)
    ("lgg_src", _lgg_missing_mask),
    ("lgg_src", _lgg_orphan_mask),
    ("lgg_src", _lgg_unreadable),
    ("alzheimer_src", _unknown_class_folder),
    ("alzheimer_src", _unreadable_picture),
    ("decathlon_src", _missing_dataset_json),
    ("decathlon_src", _decathlon_orphan_label),
    ("decathlon_src", _decathlon_missing_label),
    ("decathlon_src", _decathlon_unreadable),
    ("brats_src", _brats_missing_seg),
    ("brats_src", _brats_unreadable),
]


@pytest.mark.parametrize("existing", [False, True], ids=["new-dest", "existing-dest"])
@pytest.mark.parametrize("source, breakage", BREAKS, ids=[b.__name__[1:] for _, b in BREAKS])
def test_malformed_source_names_the_file_and_writes_nothing(request, out, brats_src, source, breakage, existing):
    fmt, options, culprit = breakage(request.getfixturevalue(source))
    src = request.getfixturevalue(source)
    dest = out / "store"
    if existing:
        other = request.getfixturevalue("decathlon_src") if fmt == "brats" else brats_src
        import_dataset("decathlon" if fmt == "brats" else "brats", other, dest)
        before = _snapshot(dest)
    with pytest.raises(DatasetError) as error:
        import_dataset(fmt, src, dest, **options)
    assert culprit in str(error.value)
    if existing:
        assert _snapshot(dest) == before
    _nothing_left(out, existing)


def test_missing_source_folder_and_unknown_format(tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        import_dataset("lgg", tmp_path / "nowhere", tmp_path / "store")
    with pytest.raises(ValueError, match="unknown format"):
        import_dataset("dicom", tmp_path, tmp_path / "store")
    assert not (tmp_path / "store").exists()


# ------------------------------------------------------------------------------------------- the app reads it
def test_the_app_draws_training_items_from_an_imported_datastore(lgg_src, alzheimer_src, out):
    from lib.datalists import classification_items, segmentation_items
    from lib.datastore import MRIDatastore

    import_dataset("lgg", lgg_src, out / "store")
    import_dataset("classfolders", alzheimer_src, out / "store", task="dementia_stage")
    ds = MRIDatastore(str(out / "store"), extensions=importers.EXTENSIONS, auto_reload=False)
    seg = segmentation_items(ds, "tumor_seg", {"tumor_seg": {"tumor": 1}}, slicewise=True)
    assert {i["subject"] for i in seg} == {PATIENT_A, PATIENT_B}
    assert 2 in {i["slice"] for i in seg if i["subject"] == PATIENT_A}  # slice 10 holds the tumor
    stages = classification_items(ds, "dementia_stage", list(tasks.classes("dementia_stage")))
    assert len(stages) == 6 and len({i["subject"] for i in stages}) == 5


# ------------------------------------------------------------------------------------------- real data (optional)
def _copy_some(src: Path, dest: Path, folders=None, per_folder=None) -> Path:
    for folder in sorted(p for p in src.iterdir() if p.is_dir())[:folders]:
        (dest / folder.name).mkdir(parents=True)
        for path in sorted(folder.iterdir())[:per_folder]:
            shutil.copyfile(path, dest / folder.name / path.name)
    return dest


def _real(path: str):
    return pytest.mark.skipif(
        not (REAL / path).is_dir(), reason=f"real data {REAL / path} absent (optional smoke test)"
    )


@_real("lgg_kaggle_3m/kaggle_3m")
def test_real_lgg_two_patients(tmp_path):
    src = _copy_some(REAL / "lgg_kaggle_3m" / "kaggle_3m", tmp_path / "src", folders=2)
    summary = import_dataset("lgg", src, tmp_path / "store")
    assert (summary["subjects"], summary["labels"]) == (2, 2) and summary["images"] == 6 - len(summary["skipped"])
    volume = _volume(tmp_path / "store" / "TCGA_CS_4942_19970222_flair.nii.gz")
    tif = np.asarray(Image.open(src / "TCGA_CS_4942_19970222" / "TCGA_CS_4942_19970222_10.tif"))
    assert volume.shape == (256, 256, 20) and np.array_equal(volume[:, :, 9], tif[..., 1].T)


@_real("alzheimer_4class/train")
@_real("brain_tumor_4class/Training")
def test_real_class_folders_five_per_class(tmp_path):
    for name, task, src in [
        ("alz", "dementia_stage", REAL / "alzheimer_4class" / "train"),
        ("bt", "tumor_type", REAL / "brain_tumor_4class" / "Training"),
    ]:
        summary = import_dataset(
            "classfolders", _copy_some(src, tmp_path / name, per_folder=5), tmp_path / f"store_{name}", task=task
        )
        assert summary["images"] == 20 and sorted(summary["class_counts"][task].values()) == [5, 5, 5, 5]


@_real("Task04_Hippocampus")
def test_real_decathlon_three_cases(tmp_path):
    src = REAL / "Task04_Hippocampus"
    meta = json.loads((src / "dataset.json").read_text())
    meta["training"] = meta["training"][:3]
    for entry in meta["training"]:
        for key in ("image", "label"):
            (tmp_path / "src" / entry[key]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / entry[key], tmp_path / "src" / entry[key])
    (tmp_path / "src" / "dataset.json").write_text(json.dumps(meta))
    summary = import_dataset("decathlon", tmp_path / "src", tmp_path / "store")
    assert (summary["images"], summary["labels"], summary["subjects"]) == (3, 3, 3)


@_real("brats2018")
def test_real_brats_one_case(tmp_path):
    summary = import_dataset("brats", _copy_some(REAL / "brats2018", tmp_path / "src", folders=1), tmp_path / "store")
    assert (summary["images"], summary["labels"], summary["subjects"]) == (4, 1, 1)
    assert summary["class_counts"]["tumor_gate"] == {"tumor": 1}


def test_cli_import_writes_a_datastore_and_reports_a_bad_source(decathlon_src, tmp_path, capsys):
    from mri_label import cli

    dest = tmp_path / "cli_store"
    assert cli.main(["import", "decathlon", str(decathlon_src), str(dest)]) == 0
    assert (dest / "datastore_v2.json").exists() and "'images'" in capsys.readouterr().out
    (decathlon_src / "dataset.json").unlink()
    assert cli.main(["import", "decathlon", str(decathlon_src), str(tmp_path / "other")]) == 1
    assert "dataset.json" in capsys.readouterr().err and not (tmp_path / "other").exists()
