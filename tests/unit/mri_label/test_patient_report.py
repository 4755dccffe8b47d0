"""``mri-label report``: the command (``mri_label.patient_report``) on the sample datastore with the shipped
checkpoints, read back from the PDF it writes; its arguments. (The page itself: ``tests/unit/mri_label/core/
test_report_page.py``.)"""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from mri_label import cli, tasks
from mri_label.core.report_page import PERCENTILES_NOT_COMPUTED, RESEARCH_USE
from mri_label.patient_report import NO_DATASTORE, check_arguments
from tests.helpers.app import SHIPPED_DIR, snapshot

ROOT = Path(__file__).resolve().parents[3]


def pdf_text(path) -> tuple:
    """(number of pages, the first page's text with its white space collapsed)."""
    reader = PdfReader(str(path))
    return len(reader.pages), " ".join(reader.pages[0].extract_text().split())


def card(task: str) -> dict:
    return json.loads((SHIPPED_DIR / task / "model.json").read_text(encoding="utf-8"))


def test_arguments_check_accepts_the_tasks_whose_config_declares_measures():
    assert check_arguments("hippocampus", 0, "f") == "F"
    assert check_arguments("tumor_seg", 120.0, None) is None
    declared = [t for t in tasks.task_names() if tasks.config_class(t).measures]
    assert tasks.reported_tasks() == declared == ["hippocampus", "tumor_seg"]
    with pytest.raises(ValueError, match="^task must be one of hippocampus, tumor_seg, got 'sequence'"):
        check_arguments("sequence")
    assert cli.parser().parse_args(["report", "x", "--task", "tumor_seg"]).run is cli.report


def test_the_task_choices_follow_the_registry(monkeypatch, capsys):
    """--task takes what the registry answers when the option is read, not a list written in the CLI."""
    monkeypatch.setattr(tasks, "reported_tasks", lambda: ["tumor_seg"])
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["report", "x", "--task", "hippocampus"])
    assert "invalid choice: 'hippocampus' (choose from 'tumor_seg')" in capsys.readouterr().err


def test_building_the_command_line_imports_no_task_config():
    """The choices are asked of the registry when --task is read: `mri-label --help` and the other commands start
    without importing the app's configs (torch, MONAI)."""
    code = "import sys; from mri_label import cli; cli.parser(); "
    code += "print(sorted({'lib.configs', 'torch'} & {*sys.modules}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "[]", done.stderr


# --- the command on the sample datastore, with the shipped checkpoints ---------------------------------------------


def run_cli(argv, capsys) -> tuple:
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_reports_tumor_seg_on_a_flair_volume(datastore_dir, tmp_path, capsys):
    before = snapshot(SHIPPED_DIR)
    out = tmp_path / "tumor"
    argv = ["report", str(datastore_dir / "synth01_flair.nii.gz"), "--task", "tumor_seg"]
    code, stdout, stderr = run_cli(argv + ["--model-dir", str(SHIPPED_DIR), "--out", str(out)], capsys)
    assert code == 0, stderr
    assert "report.pdf" in stdout and snapshot(SHIPPED_DIR) == before  # the model folder is only read
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    pages, text = pdf_text(out / "report.pdf")
    assert pages == 1 and RESEARCH_USE in text
    measured = report["measurements"]
    assert measured["volume_ml"] > 0 and measured["lesions"] >= 1
    assert f"tumor volume: {measured['volume_ml']:.2f} mL" in text
    lesion = measured["largest_lesion"]
    assert report["key_slice"]["index"] == lesion["slice"] and report["key_slice"]["axis"] == 2
    assert lesion["slices"][0] <= lesion["slice"] <= lesion["slices"][1]
    assert f"bidimensional product: {lesion['product_mm2']:.1f} mm²" in text
    first, last = lesion["slices"]
    assert f"slices spanned: {first}-{last} ({last - first + 1} slices)" in text
    checkpoint = report["model"]["checkpoint"]
    assert checkpoint["name"] == "shipped/tumor_seg/model.pt" and checkpoint["mtime"] > 0
    assert checkpoint["sha256"] == hashlib.sha256((SHIPPED_DIR / "tumor_seg" / "model.pt").read_bytes()).hexdigest()
    assert report["model"]["held_out"]["subjects"] == card("tumor_seg")["metrics"]["held_out"]["subjects"]
    assert "shipped/tumor_seg/model.pt" in text and checkpoint["sha256"] in text
    assert report["input"]["file"] == "synth01_flair.nii.gz" and report["input"]["spacing_mm"] == [2.0, 2.0, 6.0]
    with Image.open(out / "report.png") as png:
        assert png.size[1] / png.size[0] == pytest.approx(2**0.5, rel=0.01)


def test_cli_reports_hippocampus_on_a_crop(datastore_dir, tmp_path, capsys):
    out = tmp_path / "hippo"
    argv = ["report", str(datastore_dir / "synth_hippo02_t1.nii.gz"), "--task", "hippocampus", "--age", "71"]
    code, _, stderr = run_cli(argv + ["--sex", "f", "--model-dir", str(SHIPPED_DIR), "--out", str(out)], capsys)
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    pages, text = pdf_text(out / "report.pdf")
    assert pages == 1 and RESEARCH_USE in text
    measured = report["measurements"]
    assert set(measured["volumes_mm3"]) == {"anterior", "posterior", "total"}
    assert f"total: {measured['total_mm3']:.1f} mm³" in text
    assert measured["volume_check"]["status"] in ("ok", "check the segmentation")
    assert f"volume check: {measured['volume_check']['status']}" in text
    assert measured["head_size"]["etiv_ml"] is None and "head size (eTIV): not computed" in text  # a crop
    assert report["subject"] == {"age_years": 71.0, "sex": "F"} and PERCENTILES_NOT_COMPUTED in text
    assert report["key_slice"]["labelled_area_mm2"] > 0 or measured["total_mm3"] == 0
    assert report["model"]["checkpoint"]["name"] == "shipped/hippocampus/model.pt"
    # one file outside a datastore: no earlier study, and the page says why
    assert report["change_over_time"] == {
        "computed": False,
        "reason": NO_DATASTORE,
        "text": f"not computed: {NO_DATASTORE}",
    }
    assert "Change over time not computed: the command runs on one image outside a datastore" in text


def test_cli_reports_tumor_seg_on_a_dicom_series_folder_without_the_patients_name(tmp_path, capsys):
    from tests.helpers.orthanc_server import mr_series

    series = mr_series(tmp_path / "series-3", size=64, slices=8)
    out = tmp_path / "out"
    argv = ["report", str(tmp_path / "series-3"), "--task", "tumor_seg", "--model-dir", str(SHIPPED_DIR)]
    code, _, stderr = run_cli(argv + ["--out", str(out)], capsys)
    assert code == 0, stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["input"]["file"] == "series-3" and report["input"]["shape"] == [64, 64, 8]
    assert report["input"]["spacing_mm"] == [1.0, 1.0, 3.0]
    lesion = report["measurements"]["largest_lesion"]
    tumor_slices = np.nonzero(series["tumor"].any(axis=(1, 2)))[0]  # (slices, rows, cols): the blob's slices
    assert lesion is not None and tumor_slices[0] <= lesion["slice"] <= tumor_slices[-1]
    _, text = pdf_text(out / "report.pdf")
    everything = text + (out / "report.json").read_text(encoding="utf-8")
    assert "DOE" not in everything and "PID-4711" not in everything  # the page names the folder, not the patient
    assert "radiological view" in text


@pytest.mark.parametrize(
    "argv, says",
    [
        (["{missing}", "--task", "tumor_seg"], "IMAGE: no such file"),
        (["{image}", "--task", "sequence"], "argument --task: invalid choice: 'sequence'"),
        (["{image}", "--task", "tumor_seg", "--sex", "X"], "argument --sex: invalid choice: 'X'"),
        (["{image}", "--task", "tumor_seg", "--age", "300"], "age must lie between 0 and 120 years, got 300"),
        (["{image}", "--task", "tumor_seg", "--model-dir", "{missing}"], "--model-dir: no such folder"),
    ],
)
def test_cli_refuses_bad_arguments_with_a_sentence_naming_them(argv, says, tmp_path, capsys):
    image = tmp_path / "flair.nii.gz"
    image.write_bytes(b"not read: the arguments are refused first")
    values = {"image": str(image), "missing": str(tmp_path / "nowhere.nii.gz")}
    out = tmp_path / "out"
    try:
        code = cli.main(["report"] + [a.format(**values) for a in argv] + ["--out", str(out)])
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    assert code not in (0, None)
    assert says in capsys.readouterr().err
    assert not out.exists()


def test_cli_answers_an_unreadable_image_with_the_apps_reason(tmp_path, capsys):
    image = tmp_path / "broken.nii.gz"
    image.write_bytes(b"not an image")
    argv = ["report", str(image), "--task", "tumor_seg", "--model-dir", str(SHIPPED_DIR), "--out", str(tmp_path / "o")]
    code, _, stderr = run_cli(argv, capsys)
    assert code == 1 and "broken.nii.gz" in stderr and "not a readable image" in stderr
    assert not (tmp_path / "o").exists()
