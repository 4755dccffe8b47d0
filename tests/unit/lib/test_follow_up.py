"""Change over time on the server (``lib.follow_up``): a pair of generated images of one subject in a real datastore,
measured as the hippocampus infer measures (``LabelVolumesd``), linked by subject and study date; the results
stored in the image info; what is not computed and why."""

import json

import nibabel as nib
import numpy as np
import pytest

from lib.datastore import MRIDatastore
from lib.follow_up import FIELD, follow_up, study_of
from lib.transforms import LabelVolumesd
from mri_label import tasks

TASK = "hippocampus"
SPACING = (1.0, 1.0, 1.2)
AFFINE = np.diag([*SPACING, 1.0])
VOXEL_MM3 = 1.0 * 1.0 * 1.2
SHAPE = (40, 24, 20)
SHIPPED = {"name": "shipped/hippocampus/model.pt", "modified": "2026-01-01T10:00:00", "mtime": 1.7e9}
RETRAINED = {"name": "model/hippocampus/model.pt", "modified": "2026-03-01T10:00:00", "mtime": 1.8e9}


def hippocampi(right_depth: int, left_depth: int) -> np.ndarray:
    """A label map with one hippocampus each side of the field's centre (x), anterior and posterior parts: on the
    right (x index > centre, +x is R in this RAS affine) 8 x 6 x ``right_depth`` voxels, on the left 8 x 6 x
    ``left_depth``."""
    values = list(tasks.labels(TASK).values())
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[26:30, 8:14, 2 : 2 + right_depth] = values[0]
    mask[30:34, 8:14, 2 : 2 + right_depth] = values[1]
    mask[6:10, 8:14, 2 : 2 + left_depth] = values[0]
    mask[10:14, 8:14, 2 : 2 + left_depth] = values[1]
    return mask


def measure(mask: np.ndarray) -> dict:
    """``measurements`` as the infer's ``LabelVolumesd`` writes them (volumes per label, total, left and right)."""
    data = {"pred": mask, "pred_meta_dict": {"affine": AFFINE}}
    return LabelVolumesd(keys="pred", labels=tasks.labels(TASK))(data)["result"]["measurements"]


@pytest.fixture
def store(tmp_path):
    """A datastore with two generated T1-like images of subject ``sub-7`` and one of ``sub-8``."""
    root = tmp_path / "store"
    root.mkdir()
    ds = MRIDatastore(str(root), extensions=["*.nii.gz"], auto_reload=False)
    for image_id, info in (
        ("sub-7_2019", {"subject": "sub-7", "study_date": "2019-03-01"}),
        ("sub-7_2020", {"subject": "sub-7", "study_date": "20200301"}),  # DICOM DA spelling
        ("sub-8_2018", {"subject": "sub-8", "study_date": "2018-01-01"}),
    ):
        path = tmp_path / f"{image_id}.nii.gz"
        nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(100, 5, SHAPE).astype(np.float32), AFFINE), path)
        ds.add_image(image_id, str(path), info)
    return ds, root


def run(ds, image_id, mask, checkpoint=SHIPPED, params=None, image=True):
    """What the app's infer does for one result: the study before, the change and the stored record after."""
    params = params or {}
    study = study_of(ds, image_id if image else None, ds.get_image_uri(image_id), params)
    result = {"measurements": measure(mask), "checkpoint": checkpoint}
    return follow_up(ds, TASK, tasks.measures(TASK), image_id if image else None, study, result, params)


def test_a_second_study_of_the_subject_gets_the_change_since_the_first(store):
    ds, root = store
    first = run(ds, "sub-7_2019", hippocampi(right_depth=10, left_depth=12))
    assert first["computed"] is False
    assert first["reason"] == "no other study of subject 'sub-7' has a stored result of this task"
    assert first["text"] == "not computed: " + first["reason"]
    run(ds, "sub-8_2018", hippocampi(right_depth=3, left_depth=3))  # another subject: never compared

    change = run(ds, "sub-7_2020", hippocampi(right_depth=9, left_depth=12))
    # known volumes: each side 2 x (4 x 6) voxels per slice of depth; 1.2 mm³ voxels
    right_before, left = 48 * 10 * VOXEL_MM3, 48 * 12 * VOXEL_MM3
    right_after = 48 * 9 * VOXEL_MM3
    years = 366 / 365.25  # 2019-03-01 .. 2020-03-01 spans 29 February 2020
    assert change["computed"] and change["interval_days"] == 366 and change["subject"] == "sub-7"
    assert change["previous"]["image"] == "sub-7_2019" and change["previous"]["study_date"] == "2019-03-01"
    assert change["study_date"] == "2020-03-01" and change["study_date_from"] == "image info study_date"
    right = change["changes"]["right_mm3"]
    assert (right["previous"], right["current"]) == (round(right_before, 1), round(right_after, 1)) == (576.0, 518.4)
    assert right["absolute"] == -57.6 and right["percent"] == -10.0
    assert right["absolute_per_year"] == round(-57.6 / years, 1) == -57.5
    assert right["percent_per_year"] == round(-10.0 / years, 2) == -9.98
    assert change["changes"]["left_mm3"]["absolute"] == 0.0 and change["changes"]["left_mm3"]["previous"] == 691.2
    assert left == pytest.approx(691.2)
    total = change["changes"]["total_mm3"]
    assert total["absolute"] == -57.6 and total["percent"] == round(-57.6 / (right_before + left) * 100, 2)
    assert change["same_checkpoint"] is True

    # each result is stored in its image's info, in datastore_v2.json
    saved = json.loads((root / "datastore_v2.json").read_text())["objects"]
    record = saved["sub-7_2020"]["image"]["info"][FIELD][TASK]
    assert record["subject"] == "sub-7" and record["study_date"] == "2020-03-01" and record["checkpoint"] == SHIPPED
    assert record["values"]["right_mm3"] == pytest.approx(right_after) and record["scope"] == "left and right"
    assert record["ts"] > 0 and set(saved["sub-7_2019"]["image"]["info"][FIELD]) == {TASK}


def test_a_previous_result_of_another_checkpoint_is_flagged(store):
    ds, _ = store
    run(ds, "sub-7_2019", hippocampi(10, 12), checkpoint=SHIPPED)
    change = run(ds, "sub-7_2020", hippocampi(9, 12), checkpoint=RETRAINED)
    assert change["computed"] and change["same_checkpoint"] is False
    assert change["previous"]["checkpoint"] == SHIPPED
    assert "another checkpoint (shipped/hippocampus/model.pt" in change["notes"][0]


def test_without_a_date_nothing_is_computed_and_the_result_is_still_stored_for_later(store):
    ds, _ = store
    run(ds, "sub-7_2019", hippocampi(10, 12))
    ds.update_image_info("sub-7_2020", {"study_date": ""})
    undated = run(ds, "sub-7_2020", hippocampi(9, 12))
    assert undated["computed"] is False and "no study date for this image" in undated["reason"]
    assert ds.get_image_info("sub-7_2020")[FIELD][TASK]["study_date"] is None
    # a date written into the info later links both: a third image compares with the latest earlier study
    ds.update_image_info("sub-7_2020", {"study_date": "2020-03-01"})
    ds.update_image_info("sub-8_2018", {"subject": "sub-7", "study_date": "2021-03-01"})
    later = run(ds, "sub-8_2018", hippocampi(8, 12))
    assert later["computed"] and later["previous"]["image"] == "sub-7_2020" and later["interval_days"] == 365


def test_a_date_in_the_info_that_is_no_date_is_not_used(store):
    ds, _ = store
    run(ds, "sub-7_2019", hippocampi(10, 12))
    ds.update_image_info("sub-7_2020", {"study_date": "last spring"})
    change = run(ds, "sub-7_2020", hippocampi(9, 12))
    assert change["computed"] is False
    assert change["reason"] == (
        "no study date for this image: "
        "image info study_date must be a date as YYYY-MM-DD or YYYYMMDD, got 'last spring'"
    )


def test_a_dicom_study_date_in_the_info_links_the_series(store):
    """MONAI Label's DICOMweb datastore records each series' ``StudyDate`` (``UNK`` when missing)."""
    ds, _ = store
    ds.update_image_info("sub-7_2019", {"study_date": "", "StudyDate": "20190301"})
    ds.update_image_info("sub-7_2020", {"study_date": "", "StudyDate": "20200301"})
    run(ds, "sub-7_2019", hippocampi(10, 12))
    change = run(ds, "sub-7_2020", hippocampi(9, 12))
    assert change["computed"] and change["study_date_from"] == "image info StudyDate"
    ds.update_image_info("sub-7_2020", {"StudyDate": "UNK"})
    assert "no study date" in run(ds, "sub-7_2020", hippocampi(9, 12))["reason"]


def test_params_give_an_upload_its_subject_and_date_and_may_not_contradict_the_info(store):
    ds, _ = store
    run(ds, "sub-7_2019", hippocampi(10, 12))
    params = {"subject": "sub-7", "study_date": "2019-09-01"}
    uploaded = run(ds, "sub-8_2018", hippocampi(10, 11), params=params, image=False)  # as an upload: no image id
    assert uploaded["computed"] and uploaded["interval_days"] == 184
    assert uploaded["study_date_from"] == "params study_date"
    assert FIELD not in ds.get_image_info("sub-8_2018")  # an upload is compared, never stored
    with pytest.raises(ValueError, match=r"params subject 'sub-9' differs from the subject recorded"):
        study_of(ds, "sub-7_2020", None, {"subject": "sub-9"})
    with pytest.raises(ValueError, match=r"params study_date 2020-03-02 differs from image info study_date"):
        study_of(ds, "sub-7_2020", None, {"study_date": "2020-03-02"})
    with pytest.raises(ValueError, match="^params study_date must be a date"):
        study_of(ds, "sub-7_2020", None, {"study_date": "1.3.2020"})
    with pytest.raises(ValueError, match="^params subject must be"):
        study_of(ds, None, None, {"subject": "a\nb"})
    assert study_of(ds, "sub-7_2020", None, {"subject": "sub-7", "study_date": "2020-03-01"})["subject"] == "sub-7"


def test_a_result_of_some_slices_only_is_neither_compared_nor_stored(store):
    ds, _ = store
    change = run(ds, "sub-7_2019", hippocampi(10, 12), params={"slices": [3]})
    assert change["computed"] is False and "params slices" in change["reason"]
    assert FIELD not in ds.get_image_info("sub-7_2019")
