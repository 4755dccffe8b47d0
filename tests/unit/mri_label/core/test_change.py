"""Change over time (``mri_label.core.change``): study dates, what is compared, the previous study, the change and
its flags, on records with known volumes and dates."""

from datetime import date

import pytest

from mri_label.core.change import (
    MEASURES,
    change_lines,
    change_since,
    dicom_study_date,
    measured_record,
    parse_study_date,
    previous_record,
    quantities,
    same_checkpoint,
)

SHIPPED = {"name": "shipped/hippocampus/model.pt", "modified": "2026-01-01T10:00:00", "mtime": 1.7e9}
RETRAINED = {"name": "model/hippocampus/model.pt", "modified": "2026-02-01T10:00:00", "mtime": 1.8e9}


def whole_head(total: float, left: float, right: float) -> dict:
    """``measurements`` of a whole-head hippocampus result (left + right = total)."""
    return {"mm3": {"a": total}, "total_mm3": total, "left_mm3": left, "right_mm3": right}


def record(total, left, right, when, subject="sub-1", checkpoint=SHIPPED) -> dict:
    return measured_record("volumes", whole_head(total, left, right), checkpoint, subject, when)


# --- study dates --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("20210715", date(2021, 7, 15)),
        ("2021-07-15", date(2021, 7, 15)),
        (" 2021-07-15 ", date(2021, 7, 15)),
        (None, None),
        ("", None),
        ("UNK", None),  # MONAI Label's DICOMweb datastore: no StudyDate
    ],
)
def test_study_dates_are_read_as_dicom_da_or_iso(value, expected):
    assert parse_study_date(value) == expected


@pytest.mark.parametrize("value", ["15.07.2021", "2021-7-15", "20210230", "18991231", 20210715, "yesterday"])
def test_anything_else_is_refused_naming_the_field(value):
    with pytest.raises(ValueError, match="^params study_date"):
        parse_study_date(value, "params study_date")


def test_a_dicom_files_study_date_is_read_from_its_header(tmp_path):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def write(path, study_date):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.Modality = "MR"
        if study_date is not None:
            ds.StudyDate = study_date
        ds.save_as(str(path), write_like_original=False)

    series = tmp_path / "series"
    series.mkdir()
    (series / "0-notes.txt").write_text("not DICOM")  # skipped
    write(series / "1.dcm", "20190301")
    assert dicom_study_date(series) == "2019-03-01" and dicom_study_date(series / "1.dcm") == "2019-03-01"
    write(tmp_path / "undated.dcm", None)
    write(tmp_path / "bad.dcm", "March")
    assert dicom_study_date(tmp_path / "undated.dcm") is None and dicom_study_date(tmp_path / "bad.dcm") is None
    assert dicom_study_date(series / "0-notes.txt") is None


# --- what is compared ---------------------------------------------------------------------------------------------


def test_quantities_per_kind_of_measurement_and_scope():
    assert set(MEASURES) == {"volumes", "lesions"}
    assert quantities("volumes", whole_head(3000.0, 1400.0, 1600.0)) == (
        "left and right",
        {"total_mm3": 3000.0, "left_mm3": 1400.0, "right_mm3": 1600.0},
    )
    assert quantities("volumes", {"total_mm3": 1500.0}) == ("as given, no sides", {"total_mm3": 1500.0})
    lesions = {"volume_ml": 12.3456, "sum_of_products_mm2": 420.0, "lesions": []}
    assert quantities("lesions", {"total_mm3": 12345.6, "lesions": lesions}) == (
        "volume",
        {"volume_ml": 12.3456, "sum_of_products_mm2": 420.0},
    )
    assert quantities("lesions", {"total_mm3": 2500.0}) == ("volume", {"volume_ml": 2.5})
    assert quantities("lesions", {"total_mm2": 81.0, "lesions": lesions})[0] == "single slice"
    assert quantities("volumes", {}) == (None, {})
    with pytest.raises(ValueError, match="^measures"):
        quantities("classes", {})


# --- the change ---------------------------------------------------------------------------------------------------


def test_change_of_a_known_volume_difference_over_known_dates():
    """3200 -> 3040 mm³ from 2019-03-01 to 2020-03-01: 366 days (2020 is a leap year), -160 mm³, -5 %; per year
    (a year of 365.25 days) -160 / (366 / 365.25) = -159.67 mm³ and -4.99 %."""
    then = record(3200.0, 1500.0, 1700.0, "2019-03-01")
    now = record(3040.0, 1450.0, 1590.0, "2020-03-01")
    change = change_since(now, "sub-1_2019", then)
    assert change["computed"] and change["interval_days"] == 366 and change["interval_years"] == 1.0
    assert change["previous"] == {"image": "sub-1_2019", "study_date": "2019-03-01", "checkpoint": SHIPPED}
    assert change["changes"]["total_mm3"] == {
        "unit": "mm³",
        "previous": 3200.0,
        "current": 3040.0,
        "absolute": -160.0,
        "percent": -5.0,
        "absolute_per_year": -159.7,
        "percent_per_year": -4.99,
    }
    left, right = change["changes"]["left_mm3"], change["changes"]["right_mm3"]
    assert (left["absolute"], left["percent"], left["absolute_per_year"]) == (-50.0, -3.33, -49.9)
    assert (right["absolute"], right["percent"], right["percent_per_year"]) == (-110.0, -6.47, -6.46)
    assert change["same_checkpoint"] is True and change["notes"] == []
    lines = change_lines(change)
    assert lines[0] == "since 2019-03-01 (image sub-1_2019), 366 days (1.00 years) before this study of 2020-03-01:"
    assert "  total volume: 3200.0 -> 3040.0 mm³, -160.0 mm³ (-5.00 %); per year -159.7 mm³ (-4.99 %)" in lines
    assert "both measured by the same checkpoint" in lines
    assert change["text"].startswith(
        "since 2019-03-01 (image sub-1_2019), 366 days (1.00 years) before this study of 2020-03-01: "
        "total volume: 3200.0 -> 3040.0 mm³, -160.0 mm³ (-5.00 %); per year -159.7 mm³ (-4.99 %); left side: "
    )


def test_a_previous_result_of_another_checkpoint_is_flagged():
    then = record(3200.0, 1500.0, 1700.0, "2019-03-01", checkpoint=SHIPPED)
    now = record(3040.0, 1450.0, 1590.0, "2021-03-01", checkpoint=RETRAINED)
    change = change_since(now, "old", then)
    assert change["same_checkpoint"] is False
    assert "another checkpoint (shipped/hippocampus/model.pt, modified 2026-01-01T10:00:00)" in change["notes"][0]
    assert "than this one (model/hippocampus/model.pt" in change["notes"][0]
    # the same name retrained (a new modification time) is another checkpoint too
    same_name = dict(SHIPPED, mtime=SHIPPED["mtime"] + 60)
    assert same_checkpoint(SHIPPED, same_name) is False and same_checkpoint(SHIPPED, dict(SHIPPED)) is True
    # not known: said so, not taken for the same
    unknown = change_since(record(3040.0, 1450.0, 1590.0, "2021-03-01", checkpoint=None), "old", then)
    assert unknown["same_checkpoint"] is None and "not known" in unknown["notes"][0]


def test_lesions_change_without_a_rate_and_a_zero_previous_value_gets_no_percent():
    def tumor(ml, products, when):
        measured = {"total_mm3": ml * 1000, "lesions": {"volume_ml": ml, "sum_of_products_mm2": products}}
        return measured_record("lesions", measured, SHIPPED, "p-7", when)

    change = change_since(tumor(15.0, 0.0, "2024-02-01"), "baseline", tumor(12.0, 0.0, "2024-01-01"))
    volume = change["changes"]["volume_ml"]
    assert volume == {"unit": "mL", "previous": 12.0, "current": 15.0, "absolute": 3.0, "percent": 25.0}
    assert not change["annualised"] and "absolute_per_year" not in volume  # no per-year figures for lesions
    assert change["changes"]["sum_of_products_mm2"]["percent"] is None
    assert "percent change not computed where the previous value is 0" in change["notes"]
    short = change_since(
        record(3040.0, 1450.0, 1590.0, "2021-03-01"), "x", record(3200.0, 1500.0, 1700.0, "2021-02-01")
    )
    assert any("28 days" in note for note in short["notes"])  # a rate over four weeks: flagged


# --- the previous study -------------------------------------------------------------------------------------------


def test_the_previous_study_is_the_latest_earlier_one_of_the_subject_with_the_same_scope():
    now = record(3040.0, 1450.0, 1590.0, "2021-03-01")
    stored = [
        ("a-2018", record(3300.0, 1600.0, 1700.0, "2018-03-01")),
        ("a-2019", record(3200.0, 1500.0, 1700.0, "2019-03-01")),
        ("a-2022", record(3000.0, 1400.0, 1600.0, "2022-03-01")),  # later: not a previous study
        ("crop-2020", measured_record("volumes", {"total_mm3": 1500.0}, SHIPPED, "sub-1", "2020-03-01")),
        ("other-2020", record(3000.0, 1400.0, 1600.0, "2020-03-01", subject="sub-2")),
        ("this", record(3040.0, 1450.0, 1590.0, "2021-03-01")),  # the image itself
    ]
    found, reason = previous_record(stored, now, image="this")
    assert reason == "" and found is not None and found[0] == "a-2019"


@pytest.mark.parametrize(
    "now, stored, says",
    [
        (record(1, 1, 0, None), [("a", record(2, 1, 1, "2019-01-01"))], "no study date for this image"),
        (record(1, 1, 0, "2021-01-01", subject=None), [("a", record(2, 1, 1, "2019-01-01"))], "no subject"),
        (record(1, 1, 0, "2021-01-01"), [], "no other study of subject 'sub-1' has a stored result"),
        (
            record(1, 1, 0, "2021-01-01"),
            [("a", record(2, 1, 1, "2021-01-01")), ("b", record(2, 1, 1, None))],
            "no earlier study of subject 'sub-1' with a stored result of this task: 1 on 2021-01-01 or later; "
            "1 without a study date",
        ),
        (
            record(1, 1, 0, "2021-01-01"),
            [("crop", measured_record("volumes", {"total_mm3": 9.0}, SHIPPED, "sub-1", "2019-01-01"))],
            "measured with another scope (as given, no sides) than this one (left and right): not comparable",
        ),
    ],
    ids=["no date", "no subject", "no previous", "only the same day or undated", "another scope"],
)
def test_without_a_previous_study_or_a_date_nothing_is_computed_and_the_reason_given(now, stored, says):
    found, reason = previous_record(stored, now, image="this")
    assert found is None and says in reason


def test_change_since_refuses_records_it_cannot_compare():
    with pytest.raises(ValueError, match="dated"):
        change_since(record(1, 1, 0, None), "a", record(2, 1, 1, "2019-01-01"))
    with pytest.raises(ValueError, match="dated"):
        change_since(record(1, 1, 0, "2019-01-01"), "a", record(2, 1, 1, "2019-01-01"))
    crop = measured_record("volumes", {"total_mm3": 9.0}, SHIPPED, "sub-1", "2018-01-01")
    with pytest.raises(ValueError, match="same measures and scope"):
        change_since(record(1, 1, 0, "2019-01-01"), "a", crop)
