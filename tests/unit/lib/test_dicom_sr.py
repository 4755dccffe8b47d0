"""The DICOM SR of a final label's measurements, without a PACS: built from a DICOM-SEG written as the PACS datastore
writes one (MONAI Label's pydicom-seg conversion of a generated MR series), written to bytes, read back; the numbers,
their UCUM units, the references to the SEG's segments and to the source series."""

import io
import math

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from monailabel.datastore.utils.convert import nifti_to_dicom_seg

from lib import dicom_sr
from lib.dicom_sr import (
    COMPREHENSIVE_3D_SR,
    PRODUCT,
    SERIES_NUMBER,
    carried,
    measurement_report,
    read_report,
)
from lib.transforms import measure_label_file
from tests.helpers import orthanc_server

TUMOR = {"tumor": 1}
HIPPOCAMPUS = {"anterior": 1, "posterior": 2}

# a whole-head hippocampus result's measurements as the infer answers them (lib.infers.hippocampus), extra keys and all
HIPPOCAMPUS_RESULT = {
    "mm3": {"anterior": 1834.5, "posterior": 1512.25},
    "total_mm3": 3346.75,
    "voxel_mm3": 1.0,
    "left": {"anterior_mm3": 901.5, "posterior_mm3": 760.25, "total_mm3": 1661.75},
    "right": {"anterior_mm3": 933.0, "posterior_mm3": 752.0, "total_mm3": 1685.0},
    "left_mm3": 1661.75,
    "right_mm3": 1685.0,
    "volume_check": {"status": "ok", "range_mm3": [2000.0, 5000.0], "range_from": "training labels"},
    "head_size": {
        "etiv_ml": 1534.2,
        "template_icv_ml": 1886.6,
        "method": "MNI152 template intracranial volume x |det| of the affine registration (FreeSurfer-style eTIV)",
        "per_mille_of_etiv": {"total": 2.1814, "left": 1.0832, "right": 1.0983},
    },
}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A generated MR series (8 slices of 64x64, 1 x 1 x 3 mm) and its NIfTI conversion."""
    root = tmp_path_factory.mktemp("series")
    made = orthanc_server.mr_series(root / "dicom")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(root / "dicom")))
    image = reader.Execute()
    sitk.WriteImage(image, str(root / "image.nii.gz"))
    return dict(made, root=root, dicom=root / "dicom", image=image, nifti=root / "image.nii.gz")


def write_seg(series, mask: np.ndarray, names: dict, name: str):
    """The DICOM-SEG of ``mask`` ``(slices, rows, cols)`` as lib.dicomweb writes it (segments named by ``names``)."""
    label = sitk.GetImageFromArray(mask.astype(np.uint16))
    label.CopyInformation(series["image"])
    path = series["root"] / f"{name}.nii.gz"
    sitk.WriteImage(label, str(path), True)
    values = [int(v) for v in np.unique(mask) if v]
    by_value = {v: n for n, v in names.items()}
    info = [{"name": by_value[v], "description": by_value[v], "model_name": "test"} for v in values]
    seg_file = nifti_to_dicom_seg(str(series["dicom"]), str(path), info, use_itk=False)
    return pydicom.dcmread(seg_file), path


def round_trip(report) -> pydicom.Dataset:
    """The report as stored and read back: written to DICOM bytes and parsed again."""
    buffer = io.BytesIO()
    report.save_as(buffer, write_like_original=False)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


def measurement_items(dataset: pydicom.Dataset):
    """Every NUM content item of the SR's tree: (concept code, value, unit code, unit scheme)."""

    def walk(items):
        for item in items:
            if item.ValueType == "NUM":
                value = item.MeasuredValueSequence[0]
                unit = value.MeasurementUnitsCodeSequence[0]
                yield (
                    item.ConceptNameCodeSequence[0].CodeValue,
                    float(value.NumericValue),
                    unit.CodeValue,
                    unit.CodingSchemeDesignator,
                )
            yield from walk(getattr(item, "ContentSequence", []))

    return list(walk(dataset.ContentSequence))


@pytest.fixture(scope="module")
def tumor(series):
    """The blob of the generated series as tumor_seg's final label, its SEG, and its measurements as the infer takes
    them (lib.transforms.measure_label_file: the infer's own measuring chain)."""
    seg, path = write_seg(series, series["tumor"], TUMOR, "tumor")
    measured = measure_label_file(str(series["nifti"]), str(path), TUMOR, lesions="tumor")
    report = measurement_report(seg, measured, TUMOR, "tumor_seg", lesions="tumor")
    return {"seg": seg, "measured": measured, "report": report, "read": read_report(round_trip(report))}


def test_tumor_report_holds_the_lesion_measurements_of_the_result(tumor, series):
    measured, read = tumor["measured"], tumor["read"]
    lesions = measured["lesions"]
    assert lesions["components"] == 1 and lesions["volume_ml"] == pytest.approx(series["tumor"].sum() * 3 / 1000)
    assert read["measurements"] == carried(measured, TUMOR, "tumor")
    back = read["measurements"]["lesions"]
    assert back["volume_ml"] == lesions["volume_ml"]
    assert back["components"] == 1
    assert back["sum_of_products_mm2"] == lesions["sum_of_products_mm2"] > 0
    first, source = back["lesions"][0], lesions["lesions"][0]
    for key in ("volume_ml", "largest_diameter_mm", "perpendicular_diameter_mm", "product_mm2"):
        assert first[key] == source[key]
    assert first["largest_diameter_mm"] >= first["perpendicular_diameter_mm"] > 10
    assert read["measurements"]["mm3"] == {}  # the lesions label's volume is given in mL, not twice


def test_tumor_report_units_are_ucum(tumor):
    items = measurement_items(round_trip(tumor["report"]))
    units = {(code, unit) for code, _, unit, scheme in items if scheme == "UCUM"}
    assert len(units) == len({(code, unit) for code, _, unit, _ in items})  # every unit is a UCUM code
    assert ("118565006", "mL") in units  # SCT Volume in millilitres
    assert ("103339001", "mm") in units and ("131189007", "mm") in units  # long axis, perpendicular axis
    assert ("246206008", "{lesions}") in units  # number of lesions
    assert (PRODUCT.value, "mm2") in units


def test_report_references_the_seg_segments_and_the_source_series(tumor, series):
    dataset = round_trip(tumor["report"])
    seg = tumor["seg"]
    assert dataset.SOPClassUID == COMPREHENSIVE_3D_SR and dataset.Modality == "SR"
    assert dataset.StudyInstanceUID == series["study"] == seg.StudyInstanceUID
    assert dataset.SeriesInstanceUID not in (seg.SeriesInstanceUID, series["series"])
    assert int(dataset.SeriesNumber) == SERIES_NUMBER
    assert dataset.PatientID == seg.PatientID  # the SR belongs to the SEG's patient (DICOM requires it)
    assert "research use only" in dataset.SeriesDescription
    read = tumor["read"]
    assert read["segments"] == {"tumor": 1}
    assert {int(s.SegmentNumber) for s in seg.SegmentSequence} == {1}
    assert read["seg"] == seg.SOPInstanceUID
    assert read["source_series"] == series["series"] == seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    evidence = dataset.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == seg.SOPInstanceUID


@pytest.fixture(scope="module")
def hippocampus(series):
    """A two-label mask (anterior 1, posterior 2 on other slices) and its SEG."""
    mask = np.zeros(series["tumor"].shape, np.uint8)
    mask[2:4, 20:30, 20:30] = 1
    mask[4:6, 20:30, 20:30] = 2
    seg, _ = write_seg(series, mask, HIPPOCAMPUS, "hippocampus")
    return seg


def test_hippocampus_report_holds_volumes_per_label_and_side_and_head_size(hippocampus):
    report = measurement_report(hippocampus, HIPPOCAMPUS_RESULT, HIPPOCAMPUS, "hippocampus")
    dataset = round_trip(report)
    read = read_report(dataset)
    assert read["measurements"] == carried(HIPPOCAMPUS_RESULT, HIPPOCAMPUS)
    back = read["measurements"]
    assert back["mm3"] == {"anterior": 1834.5, "posterior": 1512.25}
    assert back["left"] == {"anterior_mm3": 901.5, "posterior_mm3": 760.25, "total_mm3": 1661.75}
    assert back["right"] == {"anterior_mm3": 933.0, "posterior_mm3": 752.0, "total_mm3": 1685.0}
    assert back["total_mm3"] == 3346.75
    assert back["head_size"] == {
        "etiv_ml": 1534.2,
        "per_mille_of_etiv": {"total": 2.1814, "left": 1.0832, "right": 1.0983},
    }
    assert "lesions" not in back
    assert read["segments"] == {"anterior": 1, "posterior": 2}
    units = {(code, unit, scheme) for code, _, unit, scheme in measurement_items(dataset)}
    assert units == {
        ("118565006", "mm3", "UCUM"),  # volumes per label, side and in total
        ("118565006", "mL", "UCUM"),  # eTIV
        ("113288", "[ppth]", "UCUM"),  # DCM Volume Ratio: per mille of eTIV
    }
    etiv = [value for code, value, unit, _ in measurement_items(dataset) if unit == "mL"]
    assert etiv == [1534.2]


def test_laterality_is_coded_on_the_side_volumes(hippocampus):
    dataset = round_trip(measurement_report(hippocampus, HIPPOCAMPUS_RESULT, HIPPOCAMPUS, "hippocampus"))
    lateralities = []

    def walk(items):
        for item in items:
            if item.ValueType == "CODE" and item.ConceptNameCodeSequence[0].CodeValue == "272741003":  # Laterality
                lateralities.append(item.ConceptCodeSequence[0].CodeValue)
            walk(getattr(item, "ContentSequence", []))

    walk(dataset.ContentSequence)
    # per label and side (2 x 2), the side totals (2) and the per mille of each side (2)
    assert sorted(lateralities) == ["24028007"] * 4 + ["7771000"] * 4  # SCT Right, SCT Left


def test_a_crop_reports_its_volumes_only(hippocampus):
    crop = {"mm3": {"anterior": 1800.0, "posterior": 1500.0}, "total_mm3": 3300.0, "volume_check": {"status": "ok"}}
    read = read_report(round_trip(measurement_report(hippocampus, crop, HIPPOCAMPUS, "hippocampus")))
    assert read["measurements"] == {"mm3": {"anterior": 1800.0, "posterior": 1500.0}}


def test_what_carries_over_from_a_result():
    no_head = dict(HIPPOCAMPUS_RESULT, head_size={"etiv_ml": None, "note": "not computed: boxes were given"})
    assert "head_size" not in carried(no_head, HIPPOCAMPUS)
    partial = dict(
        HIPPOCAMPUS_RESULT, head_size=dict(HIPPOCAMPUS_RESULT["head_size"], per_mille_of_etiv={"left": None})
    )
    assert carried(partial, HIPPOCAMPUS)["head_size"] == {"etiv_ml": 1534.2, "per_mille_of_etiv": {}}
    one_label = dict(HIPPOCAMPUS_RESULT, mm3={"anterior": 10.0, "posterior": 0.0})
    numbers = carried(one_label, HIPPOCAMPUS)
    assert numbers["mm3"] == {"anterior": 10.0} and set(numbers["left"]) == {"anterior_mm3", "total_mm3"}


@pytest.mark.parametrize(
    "measurements, labels, lesions, message",
    [
        ([], TUMOR, None, "measurements must be"),
        ({}, TUMOR, None, "measurements['mm3']"),
        ({"mm3": {"tumor": float("nan")}}, TUMOR, None, "measurements['mm3']['tumor']"),
        ({"mm3": {"tumor": 5.0}}, TUMOR, "tumor", "measurements['lesions']"),
        ({"mm3": {"tumor": 5.0}}, TUMOR, "edema", "lesions must name one of the labels"),
        ({"mm3": {"tumor": 5.0}}, {"tumor": 0}, None, "labels must map"),
        (
            {"mm3": {"a": 1.0}, "left": {"total_mm3": 1.0}, "total_mm3": 1.0},
            {"a": 1},
            None,
            "measurements['left']['a_mm3']",
        ),
    ],
)
def test_bad_measurements_are_refused_naming_what(measurements, labels, lesions, message):
    with pytest.raises(ValueError) as raised:
        carried(measurements, labels, lesions)
    assert message in str(raised.value)


def test_report_refuses_what_it_cannot_reference(tumor, hippocampus):
    with pytest.raises(ValueError, match="seg must be a DICOM-SEG"):
        measurement_report(round_trip(tumor["report"]), tumor["measured"], TUMOR, "tumor_seg", lesions="tumor")
    with pytest.raises(ValueError, match="has no segment 2"):  # a volume for a label the SEG lacks
        measurement_report(tumor["seg"], HIPPOCAMPUS_RESULT, HIPPOCAMPUS, "hippocampus")
    with pytest.raises(ValueError, match="nothing to report"):
        measurement_report(hippocampus, {"mm3": {"anterior": 0.0}}, HIPPOCAMPUS, "hippocampus")
    with pytest.raises(ValueError, match="task must be"):
        measurement_report(hippocampus, HIPPOCAMPUS_RESULT, HIPPOCAMPUS, "")


def test_reading_refuses_what_is_no_report(tumor):
    with pytest.raises(ValueError, match="dataset must be a Comprehensive 3D SR"):
        read_report(tumor["seg"])


def test_values_are_kept_as_given(hippocampus):
    """DICOM's decimal strings hold the result's rounded numbers exactly (no float noise on the way back)."""
    odd = {"mm3": {"anterior": 0.01, "posterior": 123456.78}}
    back = read_report(round_trip(measurement_report(hippocampus, odd, HIPPOCAMPUS, "hippocampus")))["measurements"]
    assert back["mm3"] == odd["mm3"] and not math.isnan(back["mm3"]["anterior"])


def test_the_standard_codes_are_spelt_as_pydicom_has_them():
    from pydicom.sr.codedict import codes

    expected = {
        "VOLUME": codes.SCT.Volume,
        "LONG_AXIS": codes.SCT.LongAxis,
        "PERPENDICULAR_AXIS": codes.SCT.PerpendicularAxis,
        "NUMBER_OF_LESIONS": codes.SCT.NumberOfLesions,
        "VOLUME_RATIO": codes.DCM.VolumeRatio,
        "LESION": codes.SCT.Lesion,
        "BRAIN": codes.SCT.Brain,
        "CRANIAL_CAVITY": codes.SCT.CranialCavity,
        "BRAIN_MRI": codes.LN.BrainMRI,
        "DEVICE": codes.DCM.Device,
    }
    for name, code in expected.items():
        assert getattr(dicom_sr, name) == code, name
    assert dicom_sr.LATERALITY == {"left": codes.SCT.Left, "right": codes.SCT.Right}
    for unit, code in dicom_sr.UNITS.items():
        assert code.value == unit and code.scheme_designator == "UCUM"
