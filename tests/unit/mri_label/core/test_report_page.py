"""The one-page report (``mri_label.core.report_page``): key slice, numbers, change over time and model card, read
back from the PDF it writes."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from lib.lesion_measures import lesion_measurements
from mri_label.core.change import change_since, measured_record
from mri_label.core.report_page import (
    A4_INCHES,
    NO_EARLIER_STUDY,
    PERCENTILES_NOT_COMPUTED,
    RESEARCH_USE,
    build_report,
    check_subject,
    key_slice,
    oriented_slice,
    render,
)
from tests.helpers.app import SHIPPED_DIR

SHAPE = (24, 20, 16)


def pdf_text(path) -> tuple:
    """(number of pages, the first page's text with its white space collapsed)."""
    reader = PdfReader(str(path))
    return len(reader.pages), " ".join(reader.pages[0].extract_text().split())


def card(task: str) -> dict:
    return json.loads((SHIPPED_DIR / task / "model.json").read_text(encoding="utf-8"))


def whole_head_result() -> tuple:
    """(image, mask, result) of a whole-head hippocampus answer (as ``HippocampusInfer.whole_head`` gives it): two
    labels on both sides, the largest labelled area on slice 9, eTIV present."""
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, SHAPE).astype(np.float32)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[4:8, 5:9, 7:11] = 1  # right anterior
    mask[14:18, 5:9, 8:12] = 2  # left posterior
    mask[14:19, 10:14, 9] = 1
    measured = {
        "mm3": {"anterior": 84.0, "posterior": 64.0},
        "total_mm3": 148.0,
        "voxel_mm3": 1.0,
        "right": {"anterior_mm3": 64.0, "posterior_mm3": 0.0, "total_mm3": 64.0},
        "left": {"anterior_mm3": 20.0, "posterior_mm3": 64.0, "total_mm3": 84.0},
        "right_mm3": 64.0,
        "left_mm3": 84.0,
        "volume_check": {
            "range_mm3": [2397.0, 4401.0],
            "range_from": "foreground volume of each training label",
            "status": "check the segmentation",
            "reason": "left hippocampus 84.0 mm³ is outside 2397-4401 mm³",
        },
        "head_size": {
            "etiv_ml": 1523.4,
            "template_icv_ml": 1884.5,
            "method": "MNI152 template intracranial volume x |det| of the affine registration",
            "per_mille_of_etiv": {"total": 0.0971, "left": 0.0551, "right": 0.042},
        },
    }
    result = {
        "measurements": measured,
        "checkpoint": {"name": "shipped/hippocampus/model.pt", "modified": "2026-12-01T11:27:13", "mtime": 1.5e9},
        "label_names": {"anterior": 1, "posterior": 2},
        "input": "whole head: affine registration to the MNI152 template, a box per hippocampus",
    }
    return image, mask, result


def tumor_result() -> tuple:
    """(image, mask, result) of a tumor_seg answer with ``measurements["lesions"]`` measured on the mask (2 mm x
    2 mm x 5 mm voxels)."""
    affine = np.diag([2.0, 2.0, 5.0, 1.0])
    image = np.random.default_rng(1).normal(50, 5, SHAPE).astype(np.float32)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[3:11, 3:9, 2:5] = 1  # the largest lesion: 144 voxels on slices 2-4
    mask[14:23, 10:19, 12] = 1  # a smaller one, but the largest area of a slice (81 px)
    lesions = lesion_measurements(mask, affine, axis=2)
    result = {
        "measurements": {
            "mm3": {"tumor": float(mask.sum() * 20)},
            "total_mm3": float(mask.sum() * 20),
            "lesions": lesions,
        },
        "checkpoint": {"name": "shipped/tumor_seg/model.pt", "modified": "2026-12-01T10:49:28", "mtime": 1.5e9},
        "label_names": {"tumor": 1},
    }
    return image, mask, result, (2.0, 2.0, 5.0)


# --- the key slice ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("k", [0, 5, 11])
def test_key_slice_is_the_slice_with_the_largest_labelled_area(axis, k):
    shape = (12, 12, 12)
    mask = np.zeros(shape, dtype=np.uint8)
    for index, side in ((2, 3), (7, 4), (k, 6), (9, 5)):  # slice k holds the largest area (6 x 6)
        plane = np.zeros(shape[:2], dtype=np.uint8)
        plane[1 : 1 + side, 2 : 2 + side] = 2 if index == k else 1
        np.moveaxis(mask, axis, 0)[index] = np.maximum(np.moveaxis(mask, axis, 0)[index], plane)
    assert key_slice(mask, axis)[0] == k
    report = build_report(
        {"measurements": {"mm3": {"anterior": 1.0}, "total_mm3": 1.0}},
        "hippocampus",
        np.ones(shape),
        mask,
        (1.0, 1.0, 1.0),
        axis,
        None,
        "phantom.nii.gz",
        measures="volumes",
    )
    assert report["key_slice"]["index"] == k and report["key_slice"]["axis"] == axis
    assert report["key_slice"]["labelled_area_mm2"] == 36.0


def test_key_slice_of_a_tumor_is_where_the_largest_lesion_was_measured():
    image, mask, result, spacing = tumor_result()
    lesions = result["measurements"]["lesions"]["lesions"]
    areas = mask.sum(axis=(0, 1))
    assert int(np.argmax(areas)) == 12  # the largest area lies on the smaller lesion's slice
    index, why = key_slice(mask, 2, lesions)
    assert index == lesions[0]["slice"] and 2 <= index <= 4 and "largest lesion" in why
    # without lesion measurements: the largest tumor area
    assert key_slice(mask, 2, None)[0] == 12
    # nothing segmented: the middle slice
    assert key_slice(np.zeros(SHAPE), 2, [])[0] == SHAPE[2] // 2
    with pytest.raises(ValueError, match="slice"):
        key_slice(mask, 2, [{"slice": 40}])


@pytest.mark.parametrize(
    "rotation, marker_at",
    [
        # i towards L, j towards P (a DICOM series' LPS grid in RAS): voxel (0, 0) is right-anterior: top left
        (np.diag([-1.0, -1.0, 1.0]), (0, -1)),
        # i towards R, j towards A (RAS NIfTI): voxel (0, 0) is left-posterior: bottom right
        (np.diag([1.0, 1.0, 1.0]), (-1, 0)),
        # i towards A, j towards R (axes swapped): voxel (0, 0) is posterior-left: bottom right
        (np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), (-1, 0)),
    ],
)
def test_key_slice_is_shown_in_radiological_view(rotation, marker_at):
    affine = np.eye(4)
    affine[:3, :3] = rotation * np.array([2.0, 3.0, 5.0])  # anisotropic: the pixel sizes follow the axes
    mask = np.zeros((6, 4, 3), dtype=np.uint8)
    mask[0, 0, 1] = 1
    image2d, mask2d, pixel, letters = oriented_slice(mask.astype(float), mask, 2, 1, (2.0, 3.0, 5.0), affine)
    assert letters == ("R", "L", "P", "A") and mask2d[marker_at] == 1 and mask2d.sum() == 1
    swapped = rotation[1, 0] != 0
    assert pixel == ((3.0, 2.0) if swapped else (2.0, 3.0)) and mask2d.shape == ((4, 6) if swapped else (6, 4))
    # without an affine: as stored, no letters
    assert oriented_slice(mask, mask, 2, 1, (2.0, 3.0, 5.0), None)[3] is None


# --- the page, read back ------------------------------------------------------------------------------------------


def test_hippocampus_page_pdf_png_and_json_hold_the_same_numbers(tmp_path):
    image, mask, result = whole_head_result()
    report = build_report(
        result,
        "hippocampus",
        image,
        mask,
        (1.0, 1.0, 1.0),
        2,
        card("hippocampus"),
        "head.nii.gz",
        measures="volumes",
        checkpoint_sha256="ab" * 32,
    )
    files = render(report, image, mask, (1.0, 1.0, 1.0), tmp_path / "out", affine=np.eye(4))
    assert sorted(Path(f).name for f in files.values()) == ["report.json", "report.pdf", "report.png"]
    assert json.loads(Path(files["json"]).read_text(encoding="utf-8")) == report

    pages, text = pdf_text(files["pdf"])
    assert pages == 1
    box = PdfReader(files["pdf"]).pages[0].mediabox
    assert (float(box.width), float(box.height)) == pytest.approx((A4_INCHES[0] * 72, A4_INCHES[1] * 72), abs=1)
    measured = report["measurements"]
    assert RESEARCH_USE in text and "mri-label report: hippocampus" in text
    assert measured["total_mm3"] == 148.0 and f"both sides {measured['total_mm3']:.1f} mm³" in text
    volumes = measured["volumes_mm3"]
    assert volumes["anterior"] == {"left": 20.0, "right": 64.0, "total": 84.0}
    assert f"left {volumes['total']['left']:.1f} mm³, right {volumes['total']['right']:.1f} mm³" in text
    assert measured["head_size"]["etiv_ml"] == 1523.4 and f"eTIV): {measured['head_size']['etiv_ml']:.1f} mL" in text
    assert measured["head_size"]["per_mille_of_etiv"]["total"] == 0.1 and "total 0.10" in text
    assert f"volume check: {measured['volume_check']['status']}" in text and "2397-4401" in text
    assert report["key_slice"]["index"] == 9 and "slice 9 of 16" in text
    assert PERCENTILES_NOT_COMPUTED in text and NO_EARLIER_STUDY in text
    # the model's card: checkpoint, held-out metrics and training data of model.json
    held_out = card("hippocampus")["metrics"]["held_out"]
    assert "shipped/hippocampus/model.pt" in text and "ab" * 32 in text
    assert report["model"]["held_out"]["metrics"]["dice_foreground_mean"] == held_out["metrics"]["dice_foreground_mean"]
    assert f"dice_foreground_mean {held_out['metrics']['dice_foreground_mean']:.3f}" in text
    assert f"{held_out['subjects']} subjects" in text and "decathlon 210" in text

    with Image.open(files["png"]) as png:
        width, height = png.size
    assert height / width == pytest.approx(A4_INCHES[1] / A4_INCHES[0], rel=0.01)  # A4: sqrt(2)
    assert height / width == pytest.approx(2**0.5, rel=0.01)


def test_tumor_page_holds_volume_lesions_diameters_and_slices(tmp_path):
    image, mask, result, spacing = tumor_result()
    report = build_report(
        result,
        "tumor_seg",
        image,
        mask,
        spacing,
        2,
        card("tumor_seg"),
        "flair.nii.gz",
        measures="lesions",
        age=64,
        sex="m",
    )
    render(report, image, mask, spacing, tmp_path)
    pages, text = pdf_text(tmp_path / "report.pdf")
    assert pages == 1 and RESEARCH_USE in text
    measured = report["measurements"]
    lesion = measured["largest_lesion"]
    raw = result["measurements"]["lesions"]
    assert (
        measured["volume_ml"] == round(raw["volume_ml"], 2) and f"tumor volume: {measured['volume_ml']:.2f} mL" in text
    )
    assert measured["lesions"] == 2 and "lesions (connected components): 2" in text
    assert lesion["slices"] == [2, 4] and "slices spanned: 2-4 (3 slices)" in text
    assert lesion["largest_diameter_mm"] == raw["lesions"][0]["largest_diameter_mm"]
    assert f"diameters {lesion['largest_diameter_mm']:.1f} x {lesion['perpendicular_diameter_mm']:.1f} mm" in text
    assert f"bidimensional product: {lesion['product_mm2']:.1f} mm²" in text
    assert report["key_slice"]["index"] == lesion["slice"]
    # age and sex recorded, percentiles still not computed: never guessed
    assert report["subject"] == {"age_years": 64.0, "sex": "M"}
    assert report["normative_percentiles"] == {"computed": False, "text": PERCENTILES_NOT_COMPUTED}
    assert PERCENTILES_NOT_COMPUTED in text and "age 64 years, sex M" in text
    assert "percentile:" not in text.lower() and "th percentile" not in text.lower()
    assert f"dice_tumor_mean {card('tumor_seg')['metrics']['held_out']['metrics']['dice_tumor_mean']:.3f}" in text


@pytest.mark.parametrize(
    "change, parameter",
    [
        ({"sex": "X"}, "sex"),
        ({"age": 300}, "age"),
        ({"age": -1}, "age"),
        ({"age": float("nan")}, "age"),
        ({"measures": "classes"}, "measures"),
        ({"image": np.zeros((24, 20, 15))}, "image"),
        ({"spacing": (1.0, 1.0)}, "spacing"),
    ],
)
def test_bad_arguments_are_refused_naming_the_parameter(change, parameter, tmp_path):
    image, mask, result = whole_head_result()
    arguments = dict(
        result=result,
        task="hippocampus",
        image=image,
        mask=mask,
        spacing=(1.0, 1.0, 1.0),
        axis=2,
        card=None,
        image_name="x.nii.gz",
        measures="volumes",
    )
    arguments.update(change)
    with pytest.raises(ValueError, match=rf"^{parameter}\b"):
        build_report(**arguments)
    if parameter in ("image", "spacing"):
        good = build_report(**{**arguments, parameter: image if parameter == "image" else (1.0, 1.0, 1.0)})
        with pytest.raises(ValueError, match=rf"^{parameter}\b"):
            render(good, arguments["image"], mask, arguments["spacing"], tmp_path)
        assert not (tmp_path / "report.pdf").exists()


def test_subject_check_accepts_the_documented_values():
    assert check_subject(0, "f") == "F" and check_subject(120.0, None) is None and check_subject() is None
    with pytest.raises(ValueError, match="^age"):
        check_subject(True)


# --- change over time on the page ---------------------------------------------------------------------------------


def test_the_change_over_time_is_on_the_page_with_the_numbers_of_the_json(tmp_path):
    image, mask, result = whole_head_result()
    now = measured_record("volumes", result["measurements"], result["checkpoint"], "sub-1", "2021-07-01")
    before = dict(result["measurements"], total_mm3=160.0, left_mm3=90.0, right_mm3=70.0)
    other = {"name": "model/hippocampus/model.pt", "modified": "2020-01-01T00:00:00", "mtime": 1.4e9}
    then = measured_record("volumes", before, other, "sub-1", "2020-07-01")
    change = change_since(now, "sub-1_2020", then)
    result["change_over_time"] = change
    report = build_report(
        result, "hippocampus", image, mask, (1.0, 1.0, 1.0), 2, None, "head.nii.gz", measures="volumes"
    )
    assert report["change_over_time"] == change  # the result's own change, when none is passed
    render(report, image, mask, (1.0, 1.0, 1.0), tmp_path)
    pages, text = pdf_text(tmp_path / "report.pdf")
    assert pages == 1 and NO_EARLIER_STUDY not in text
    total = report["change_over_time"]["changes"]["total_mm3"]
    assert (total["previous"], total["current"], total["absolute"]) == (160.0, 148.0, -12.0)
    assert total["percent"] == -7.5 and total["percent_per_year"] == round(-7.5 * 365.25 / 365, 2) == -7.51
    for number in (total["previous"], total["current"]):
        assert f"{number:.1f}" in text
    assert f"{total['absolute']:+.1f} mm³ ({total['percent']:+.2f} %)" in text
    assert f"per year {total['absolute_per_year']:+.1f} mm³ ({total['percent_per_year']:+.2f} %)" in text
    assert "since 2020-07-01 (image sub-1_2020), 365 days" in text
    assert "another checkpoint (model/hippocampus/model.pt" in text
    # without one: not computed, with the reason
    del result["change_over_time"]
    plain = build_report(result, "hippocampus", image, mask, (1.0, 1.0, 1.0), 2, None, "h.nii", measures="volumes")
    assert plain["change_over_time"] == {
        "computed": False,
        "reason": NO_EARLIER_STUDY,
        "text": f"not computed: {NO_EARLIER_STUDY}",
    }
