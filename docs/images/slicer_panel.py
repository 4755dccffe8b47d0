"""Draw ``slicer-panel.png``: the MRI Label Slicer panel as laid out in ``Resources/UI/MRILabel.ui``, filled with the
example of ``docs/how-to/slicer.md`` (a hippocampus run on a whole-head T1).

Outside Slicer, with Qt for Python (not a dependency of the project; the panel's own code never imports it)::

    python3.11 -m venv /tmp/qt && /tmp/qt/bin/pip install PySide6-Essentials
    QT_QPA_PLATFORM=offscreen /tmp/qt/bin/python docs/images/slicer_panel.py

Slicer's own widgets are drawn as their nearest Qt kin: a CTK collapsible section as a titled group box (all
expanded), an MRML node selector as a combo box. The layout, labels, buttons and their order are the ``.ui`` file's.
"""

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from PySide6.QtCore import QBuffer, QByteArray, QIODevice
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import (
    QApplication,
    QComboBox,
    QLabel,
    QLineEdit,
    QListWidget,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
)

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "slicer_module" / "MRILabel" / "Resources" / "UI" / "MRILabel.ui"
OUT = Path(__file__).with_name("slicer-panel.png")
KIN = {"ctkCollapsibleButton": "QGroupBox", "qMRMLNodeComboBox": "QComboBox", "qMRMLWidget": "QWidget"}

EXAMPLE = {
    "combos": {
        "volumeSelector": "head T1",
        "taskCombo": "hippocampus",
        "segmentationSelector": "head T1 hippocampus",
        "trainTaskCombo": "hippocampus",
        "strategyCombo": "random",
        "historyTaskCombo": "hippocampus",
        "sexCombo": "F",
        "classCombo": "",
    },
    "edits": {"serverUrlEdit": "http://127.0.0.1:8000", "subjectEdit": "sub-01", "studyDateEdit": "2021-09-01"},
    "edits_age": {"ageEdit": "71"},
    "labels": {
        "resultSummaryLabel": "hippocampus on head T1: anterior, posterior",
        "uncertaintyLabel": "Correct first: slice 41, slice 40",
        "measurementsTitleLabel": "hippocampus on head T1",
        "measurementsNotesLabel": "Change over time: computed against the study of 2020-03-01",
        "servedLabel": "hippocampus serves model/hippocampus/model.pt (2025-02-01 10:12 UTC)",
        "trainingLabel": "hippocampus: DONE, validation mean Dice 0.874",
        "statusLabel": "Ready.",
    },
    "lists": {
        "uncertaintyList": [
            "slice 41: 1,203 uncertain voxels (mean 0.31)",
            "slice 40: 980 uncertain voxels (mean 0.28)",
        ],
        "reviewList": ["synth01_flair — tumor_seg", "synth_hippo01_t1 — hippocampus"],
    },
    "tables": {
        "measurementsTable": [
            ["Left", "1450.0 mm³ (0.95 ‰ of eTIV)"],
            ["Right", "1590.0 mm³ (1.04 ‰ of eTIV)"],
            ["Both sides", "3040.0 mm³ (2.00 ‰ of eTIV)"],
            ["eTIV (head size)", "1523.4 mL"],
            ["Volume check", "ok"],
            ["Change of left side", "1480.0 → 1450.0 mm³, −1.1 %/year"],
        ],
        "historyTable": [
            ["2025-02-01", "rolled back", "–", "by an admin"],
            ["2025-01-31", "promoted", "0.861 → 0.874", "val. rose"],
        ],
    },
}


def loadable_ui(path: Path) -> bytes:
    """The ``.ui`` file with Slicer's widgets replaced by their Qt kin (a section's title kept, expanded)."""
    tree = ET.parse(path)
    for widget in tree.iter("widget"):
        kin = KIN.get(widget.get("class", ""))
        if kin is None:
            continue
        widget.set("class", kin)
        for prop in list(widget.findall("property")):
            if kin == "QGroupBox" and prop.get("name") == "text":
                prop.set("name", "title")
            elif prop.get("name") in ("collapsed", "nodeTypes", "showChildNodeTypes", "hideChildNodeTypes"):
                widget.remove(prop)
            elif prop.get("name") in ("noneEnabled", "addEnabled", "removeEnabled", "SlicerParameterName"):
                widget.remove(prop)
    root = tree.getroot()
    for extra in ("customwidgets", "connections"):
        for element in root.findall(extra):
            root.remove(element)
    return ET.tostring(root, encoding="utf-8")


def fill(panel) -> None:
    """The example values, by widget name."""
    for name, text in EXAMPLE["combos"].items():
        combo = panel.findChild(QComboBox, name)
        if combo is not None and text and combo.findText(text) < 0:
            combo.addItem(text)
        if combo is not None and text:
            combo.setCurrentText(text)
    for name, text in {**EXAMPLE["edits"], **EXAMPLE["edits_age"]}.items():
        panel.findChild(QLineEdit, name).setText(text)
    for name, text in EXAMPLE["labels"].items():
        panel.findChild(QLabel, name).setText(text)
    for name, rows in EXAMPLE["lists"].items():
        panel.findChild(QListWidget, name).addItems(rows)
    for name, rows in EXAMPLE["tables"].items():
        table = panel.findChild(QTableWidget, name)
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            for c, text in enumerate(row):
                table.setItem(r, c, QTableWidgetItem(text))
        table.resizeColumnsToContents()
        table.verticalHeader().setVisible(False)
    panel.findChild(QProgressBar, "trainingProgressBar").setValue(100)
    # the action bar and Cancel are shown only while an action runs
    panel.findChild(QProgressBar, "jobProgressBar").hide()
    panel.findChild(QPushButton, "cancelButton").hide()


def main() -> int:
    app = QApplication(sys.argv[:1])
    buffer = QBuffer()
    buffer.setData(QByteArray(loadable_ui(UI)))
    buffer.open(QIODevice.OpenModeFlag.ReadOnly)
    loader = QUiLoader()
    panel = loader.load(buffer)
    if panel is None:
        print(f"cannot load {UI}: {loader.errorString()}", file=sys.stderr)
        return 1
    fill(panel)
    panel.resize(480, panel.sizeHint().height())
    panel.show()
    app.processEvents()
    panel.grab().save(str(OUT))
    print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
