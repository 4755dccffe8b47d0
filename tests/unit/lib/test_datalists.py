"""Tests of lib.datalists: subject split, label task, and items drawn from the synthetic datastore."""

import os

import nibabel as nib
import numpy as np
import pytest

from lib.datalists import classification_items, final_label, segmentation_items, split_by_subject
from lib.datastore import MRIDatastore, update_info_entry
from lib.label_info import label_task
from mri_label.sample_data import write_sample_data

EXTENSIONS = ["*.nii.gz", "*.nii", "*.nrrd", "*.jpg", "*.png", "*.tif"]
SEQUENCES = ["T1", "T2", "FLAIR"]
GATE = ["no_tumor", "tumor"]
TASK_LABELS = {"tumor_seg": {"tumor": 1}, "hippocampus": {"anterior": 1, "posterior": 2}}
HEAD = [f"synth0{i}" for i in range(1, 7)]
HIPPO_IDS = [f"synth_hippo0{i}_t1" for i in range(1, 5)]
SLICE_IDS = [f"synth_slice0{i}" for i in range(1, 5)]
TUMOR_VOLUMES = ["synth01_flair", "synth02_flair", "synth03_flair"]


# ---------------------------------------------------------------- split_by_subject


def _items(n_subjects=10):
    """Items of ``n_subjects`` subjects, subject i having (i % 3) + 1 items."""
    return [{"image": f"s{i}_{j}", "subject": f"s{i}"} for i in range(n_subjects) for j in range(i % 3 + 1)]


def _subjects(items):
    return {i["subject"] for i in items}


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize(
    "n_subjects, fraction, n_val",
    [(10, 0.2, 2), (10, 0.5, 5), (10, 0.01, 1), (10, 0.99, 9), (3, 0.5, 2), (2, 0.1, 1), (2, 0.9, 1), (7, 0.3, 3)],
)
def test_split_by_subject_sizes_and_disjoint(seed, n_subjects, fraction, n_val):
    items = _items(n_subjects)
    train, val = split_by_subject(items, fraction, seed=seed)
    assert len(_subjects(val)) == n_val
    assert len(_subjects(train)) == n_subjects - n_val
    assert not _subjects(train) & _subjects(val)
    # every item is on exactly one side, in its original order
    assert sorted(map(id, train + val)) == sorted(map(id, items))
    assert train == [i for i in items if i in train] and val == [i for i in items if i in val]
    # all items of a subject go together
    for subject in _subjects(val):
        assert sum(i["subject"] == subject for i in val) == sum(i["subject"] == subject for i in items)


@pytest.mark.parametrize("seed", [0, 3])
def test_split_by_subject_uses_the_split_hash_of_split_json(seed):
    """One subject hash: the per-run split holds out the first subjects of the order split.json is cut in."""
    from mri_label.core.splits import new_split, subject_key

    items = _items(12)
    _, val = split_by_subject(items, 0.25, seed)
    order = sorted(_subjects(items), key=lambda s: subject_key(seed, s))
    assert _subjects(val) == set(order[:3])
    cut = new_split(_subjects(items), fractions=(0.75, 0.25, 0.0), seed=seed)
    assert [cut["subjects"][s] for s in order] == ["train"] * 9 + ["val"] * 3  # split.json: the same order


@pytest.mark.parametrize("seed", [0, 3])
def test_split_by_subject_deterministic(seed):
    items = _items(12)
    assert split_by_subject(items, 0.25, seed) == split_by_subject(list(items), 0.25, seed)
    # input order does not change which subjects are held out
    _, val_reversed = split_by_subject(items[::-1], 0.25, seed)
    assert _subjects(val_reversed) == _subjects(split_by_subject(items, 0.25, seed)[1])


def test_split_by_subject_seeds_differ():
    items = _items(12)
    held_out = {frozenset(_subjects(split_by_subject(items, 0.25, seed)[1])) for seed in range(10)}
    assert len(held_out) > 1


@pytest.mark.parametrize("n_subjects", [1, 5])
def test_split_by_subject_zero_fraction(n_subjects):
    items = _items(n_subjects)
    train, val = split_by_subject(items, 0.0)
    assert val == [] and train == items


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_split_by_subject_one_subject_all_train(fraction):
    items = [{"image": f"a{j}", "subject": "only"} for j in range(4)]
    train, val = split_by_subject(items, fraction, seed=5)
    assert train == items and val == []


def test_split_by_subject_numeric_and_string_subject_match():
    items = [{"subject": 1}, {"subject": "1"}, {"subject": 2}]
    train, val = split_by_subject(items, 0.5)
    assert {str(i["subject"]) for i in train}.isdisjoint({str(i["subject"]) for i in val})
    assert len(train) + len(val) == 3


def test_split_by_subject_empty():
    assert split_by_subject([], 0.3) == ([], [])


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_split_by_subject_bad_fraction(fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        split_by_subject(_items(4), fraction)


# ---------------------------------------------------------------- label_task


def _seg(*names):
    return [{"name": n, "idx": i} for i, n in enumerate(names)]


@pytest.mark.parametrize(
    "info, expected",
    [
        ({"task": "tumor_seg"}, "tumor_seg"),
        ({"task": "hippocampus", "label_info": _seg("tumor")}, "hippocampus"),  # an explicit task wins
        ({"task": "old_task", "label_info": _seg("tumor")}, "tumor_seg"),  # unknown task: fall back to names
        ({"label_info": _seg("background", "tumor")}, "tumor_seg"),
        ({"label_info": _seg("background", "anterior", "posterior")}, "hippocampus"),
        ({"label_info": _seg("posterior")}, "hippocampus"),  # a subset of one task's labels
        ({"label_info": _seg("tumor", "anterior")}, None),  # labels of two tasks
        ({"label_info": _seg("background")}, None),  # background alone names no task
        ({"label_info": _seg("edema")}, None),
        ({"label_info": ["tumor"]}, None),  # not dicts
        ({"label_info": [{"idx": 1}]}, None),  # no names
        ({"label_info": None}, None),
        ({"task": "old_task"}, None),
        ({}, None),
    ],
)
def test_label_task(info, expected):
    assert label_task(info, TASK_LABELS) == expected


def test_label_task_only_known_tasks():
    assert label_task({"task": "hippocampus"}, {"tumor_seg": {"tumor": 1}}) is None
    assert label_task({"label_info": _seg("anterior")}, {"tumor_seg": {"tumor": 1}}) is None


# ---------------------------------------------------------------- items from the synthetic datastore


def _open(path):
    return MRIDatastore(str(path), extensions=EXTENSIONS, auto_reload=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("datalists") / "store"
    write_sample_data(path, seed=0)
    return _open(path)


@pytest.fixture
def fresh_store(tmp_path):
    path = tmp_path / "store"
    write_sample_data(path, seed=0)
    return _open(path)


def _mask_slices(path):
    """Indices of the axial (axis 2) slices of a NIfTI mask that hold foreground."""
    mask = np.asarray(nib.load(path).dataobj) > 0
    return [int(k) for k in np.nonzero(mask.any(axis=(0, 1)))[0]]


def _id_of(store, path):
    return os.path.basename(path).replace(".nii.gz", "").replace(".png", "")


def _tumor_masks(store):
    def masks(image_id):
        path, info = final_label(store, image_id)
        return path if path and label_task(info, {"tumor_seg": {"tumor": 1}}) == "tumor_seg" else None

    return masks


def test_sequence_items_cover_all_classes(store):
    items = classification_items(store, "sequence", SEQUENCES)
    by_image = {}
    for item in items:
        by_image.setdefault(_id_of(store, item["image"]), []).append(item)
    assert set(by_image) == set(store.list_images())  # every sample image carries a sequence label
    assert {i["label"] for i in items} == {0, 1, 2}
    for image_id, its in by_image.items():
        info = store.get_image_info(image_id)
        expected = SEQUENCES.index(info["class_labels"]["sequence"]["label"])
        assert all(i["label"] == expected for i in its)
        assert all(i["subject"] == info["subject"] for i in its)
        slices = [i["slice"] for i in its]
        if image_id in SLICE_IDS:
            assert slices == [-1]
        else:
            assert slices == sorted(set(slices)) and all(s >= 0 for s in slices)
            if image_id.startswith("synth0"):  # head phantoms: the central head slices only
                assert 0 < len(slices) < 16 and max(slices) < 16
            else:  # hippocampus phantoms fill their field of view: every slice
                assert slices == list(range(40))


def test_sequence_items_only_labelled_known_classes(fresh_store):
    update_info_entry(fresh_store, "synth05_t2", "class_labels", "sequence", None)  # no label any more
    update_info_entry(fresh_store, "synth06_t2", "class_labels", "sequence", {"label": "PD"})  # unknown class
    update_info_entry(fresh_store, "synth_slice03", "class_labels", "sequence", {"label": "T2"})  # relabelled
    items = classification_items(fresh_store, "sequence", SEQUENCES)
    ids = {_id_of(fresh_store, i["image"]) for i in items}
    assert ids == set(fresh_store.list_images()) - {"synth05_t2", "synth06_t2"}
    assert [i["label"] for i in items if i["image"].endswith("synth_slice03.png")] == [1]


def test_dementia_items_only_t1(store):
    classes = ["NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"]
    items = classification_items(store, "dementia_stage", classes)
    ids = {_id_of(store, i["image"]) for i in items}
    assert ids == {f"{s}_t1" for s in HEAD} | set(HIPPO_IDS)
    for item in items:
        info = store.get_image_info(_id_of(store, item["image"]))
        assert item["label"] == classes.index(info["class_labels"]["dementia_stage"]["label"])


def test_tumor_gate_items_from_masks(store):
    items = classification_items(store, "tumor_gate", GATE, mask_labels=_tumor_masks(store))
    ids = {_id_of(store, i["image"]) for i in items}
    assert ids == {f"{s}_flair" for s in HEAD} | set(SLICE_IDS)  # T1/T2 and hippocampus images have neither
    for image_id in sorted(ids):
        its = [i for i in items if _id_of(store, i["image"]) == image_id]
        if image_id in SLICE_IDS:
            assert [(i["slice"], i["label"]) for i in its] == [
                (-1, int(image_id in ("synth_slice01", "synth_slice02")))
            ]
            continue
        label_path = store.get_label_uri(image_id, "final")
        tumor = set(_mask_slices(label_path))
        assert (len(tumor) > 0) == (image_id in TUMOR_VOLUMES)
        for item in its:
            assert item["label"] == int(item["slice"] in tumor), (image_id, item["slice"])
        # every tumor slice is a training slice, and there are healthy slices as well
        assert tumor <= {i["slice"] for i in its}
        assert sum(i["label"] == 0 for i in its) >= 5


def test_tumor_gate_mask_wins_over_volume_class(fresh_store):
    # a wrong volume-level class: the per-slice labels still come from the mask
    update_info_entry(fresh_store, "synth01_flair", "class_labels", "tumor_gate", {"label": "no_tumor"})
    items = classification_items(fresh_store, "tumor_gate", GATE, mask_labels=_tumor_masks(fresh_store))
    tumor = set(_mask_slices(fresh_store.get_label_uri("synth01_flair", "final")))
    its = [i for i in items if i["image"].endswith("synth01_flair.nii.gz")]
    assert {i["slice"] for i in its if i["label"] == 1} == tumor


def test_tumor_gate_class_labels_without_masks(store):
    items = classification_items(store, "tumor_gate", GATE)
    ids = {_id_of(store, i["image"]) for i in items}
    assert ids == {f"{s}_flair" for s in HEAD} | set(SLICE_IDS)
    for item in items:
        image_id = _id_of(store, item["image"])
        positive = image_id in TUMOR_VOLUMES or image_id in ("synth_slice01", "synth_slice02")
        assert item["label"] == int(positive)


def test_segmentation_items_tumor(store):
    items = segmentation_items(store, "tumor_seg", TASK_LABELS, slicewise=True)
    ids = {_id_of(store, i["image"]) for i in items}
    assert ids == {f"{s}_flair" for s in HEAD} | set(SLICE_IDS)  # no hippocampus, no T1/T2
    for image_id in sorted(ids):
        its = [i for i in items if _id_of(store, i["image"]) == image_id]
        label_path = store.get_label_uri(image_id, "final")
        assert all(i["label"] == label_path for i in its)
        assert all(i["subject"] == store.get_image_info(image_id)["subject"] for i in its)
        if image_id in SLICE_IDS:
            assert [i["slice"] for i in its] == [-1]
            continue
        slices = [i["slice"] for i in its]
        tumor = _mask_slices(label_path)
        assert slices == sorted(set(slices))
        assert set(tumor) <= set(slices)  # every tumor slice
        healthy = [s for s in slices if s not in tumor]
        assert len(healthy) == max(1, len(tumor))  # as many healthy slices (at least one)
    n_tumor = sum(len(_mask_slices(store.get_label_uri(v, "final"))) for v in TUMOR_VOLUMES)
    assert len(items) == 2 * n_tumor + 3 + len(SLICE_IDS)


def test_segmentation_items_hippocampus_volumes(store):
    items = segmentation_items(store, "hippocampus", TASK_LABELS, slicewise=False)
    assert [_id_of(store, i["image"]) for i in items] == HIPPO_IDS
    for item, image_id in zip(items, HIPPO_IDS):
        assert item["slice"] == -1
        assert item["label"] == store.get_label_uri(image_id, "final")
        assert item["image"] == store.get_image_uri(image_id)
        assert item["subject"] == image_id[:-3]


def test_segmentation_items_hippocampus_only_its_own_task(store):
    assert segmentation_items(store, "hippocampus", {"hippocampus": TASK_LABELS["hippocampus"]}, slicewise=False)
    assert segmentation_items(store, "unknown", TASK_LABELS, slicewise=False) == []


def test_segmentation_items_viewer_label_without_task(fresh_store, tmp_path):
    """A label saved by a viewer names its segments only; its task is found from them."""
    mask = np.zeros((96, 96, 16), np.uint8)
    mask[40:50, 40:50, 8] = 1
    path = tmp_path / "viewer_label.nii.gz"
    affine = np.diag([2.0, 2.0, 6.0, 1.0])
    nib.save(nib.Nifti1Image(mask, affine), str(path))
    fresh_store.save_label("synth05_t2", str(path), "final", {"label_info": _seg("background", "tumor")})
    items = segmentation_items(fresh_store, "tumor_seg", TASK_LABELS, slicewise=True)
    its = [i for i in items if i["image"].endswith("synth05_t2.nii.gz")]
    assert 8 in [i["slice"] for i in its] and len(its) == 2


@pytest.mark.parametrize("limit", [1, 3, 5])
def test_classification_items_limit_slices_per_volume_evenly(store, limit):
    ds = store
    every = classification_items(ds, "sequence", ["T1", "T2", "FLAIR"])
    limited = classification_items(ds, "sequence", ["T1", "T2", "FLAIR"], slices_per_volume=limit)
    for image in {i["image"] for i in every if i["slice"] >= 0}:
        full = sorted(i["slice"] for i in every if i["image"] == image)
        kept = sorted(i["slice"] for i in limited if i["image"] == image)
        assert len(kept) == min(limit, len(full)) and set(kept) <= set(full)
        if limit > 1:
            assert kept[0] == full[0] and kept[-1] == full[-1]  # spread over the whole central range
    pictures = lambda items: sorted(i["image"] for i in items if i["slice"] == -1)  # noqa: E731
    assert pictures(limited) == pictures(every)
