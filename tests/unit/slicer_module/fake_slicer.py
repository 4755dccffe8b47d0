"""A small fake of the parts of 3D Slicer that MRILabel.py touches, for tests without Slicer.

``Recorder`` stands in for any Qt/Slicer object (attributes are Recorders, calls are recorded). The MRML side is
faked with real behaviour where the panel's correctness depends on it: volume nodes hold a numpy array, an
IJK->RAS matrix and a parent transform; the scene finds nodes by ID; ``slicer.util`` reads and writes arrays,
loads "files" registered in :data:`FILES` (or real NIfTI files, such as a server's answers) and records every
save/export, which writes a real NIfTI file. Every behaviour copied from Slicer is the one its source documents
(``Base/Python/slicer/util.py``, ``ScriptedLoadableModule.py``, parameterNodeWrapper).

:func:`load_mrilabel` loads ``MRILabel.py`` over this fake (the unit tests' ``module`` fixture, and the integration
tests that drive the panel's logic against a real server).
"""

import contextlib
import importlib.util
import itertools
import os
import sys
import tempfile
import types
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np

MODULE_DIR = Path(__file__).resolve().parents[3] / "slicer_module" / "MRILabel"
#: The module file under test (MRILABEL_MODULE_FILE points elsewhere, e.g. at an older copy, to show a test fails).
MODULE_FILE = Path(os.environ.get("MRILABEL_MODULE_FILE") or MODULE_DIR / "MRILabel.py")

#: "Files" the fake loaders read: path -> (voxel array, IJK->RAS 4x4). Tests put server answers here.
FILES: dict = {}


class Recorder:
    """Stand-in for any Qt/Slicer object: attributes are Recorders (one per name), calls are recorded."""

    def __init__(self, name="stub"):
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_children", {})
        object.__setattr__(self, "calls", [])

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        children = object.__getattribute__(self, "_children")
        if name not in children:
            children[name] = Recorder(f"{self._name}.{name}")
        return children[name]

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return Recorder(f"{self._name}()")


def put(recorder, name, value):
    """Give a Recorder a real attribute (a function, a class, a value)."""
    object.__setattr__(recorder, name, value)


class FakeCombo:
    """QComboBox stand-in."""

    def __init__(self, current=""):
        self.currentText, self.items = current, []

    def clear(self):
        self.items = []

    def addItem(self, name):
        self.items.append(name)

    def setCurrentIndex(self, index):
        self.currentText = self.items[index]

    def findText(self, text):
        return self.items.index(text) if text in self.items else -1


class FakeList:
    """QListWidget stand-in: entries as texts; ``row(item)`` of an entry this list gave out by ``item(row)``;
    ``currentRow`` as PythonQt gives QListWidget's property (an int, -1 without a selection; cleared with the list)."""

    def __init__(self):
        self.entries, self.visible, self.currentRow = [], True, -1

    def clear(self):
        self.entries, self.currentRow = [], -1

    def setCurrentRow(self, row):
        self.currentRow = row

    def addItem(self, text):
        self.entries.append(str(text))

    def count(self):
        return len(self.entries)

    def item(self, row):
        return ("item", self, row) if 0 <= row < len(self.entries) else None

    def row(self, item):
        return item[2] if isinstance(item, tuple) and item[1] is self else -1


class FakeTableItem:
    """qt.QTableWidgetItem stand-in: its text."""

    def __init__(self, text=""):
        self._text = str(text)

    def text(self):
        return self._text


class FakeTable:
    """QTableWidget stand-in: ``setRowCount`` and ``setItem``; :meth:`texts` gives the cells row by row."""

    def __init__(self, columns=4):
        self.columns, self.cells = columns, []

    def setRowCount(self, count):
        self.cells = [row for row in self.cells[:count]] + [
            [None] * self.columns for _ in range(count - len(self.cells))
        ]

    def rowCount(self):
        return len(self.cells)

    def setItem(self, row, column, item):
        self.cells[row][column] = item

    def texts(self):
        return [[None if item is None else item.text() for item in row] for row in self.cells]

    def resizeColumnToContents(self, column):
        pass

    def resizeRowsToContents(self):
        pass


class FakeTextEdit:
    """QPlainTextEdit stand-in: ``toPlainText``/``setPlainText``."""

    def __init__(self, text=""):
        self.text = text

    def toPlainText(self):
        return self.text

    def setPlainText(self, text):
        self.text = text


class FakeSelector:
    """qMRMLNodeComboBox stand-in: the current node and the sort-filter proxy's hidden node IDs."""

    def __init__(self, node=None):
        self.node, self.proxy = node, types.SimpleNamespace(hiddenNodeIDs=[])

    def currentNode(self):
        return self.node

    def setCurrentNode(self, node):
        self.node = node

    def sortFilterProxyModel(self):
        return self.proxy


class FakeMatrix:
    """vtkMatrix4x4 stand-in: a 4x4 numpy array."""

    def __init__(self, array=None):
        self.array = np.eye(4) if array is None else np.array(array, dtype=float)


class FakeImageData:
    def __init__(self, node):
        self.node = node

    def GetDimensions(self):
        return tuple(reversed(self.node.array.shape[:3]))

    def GetNumberOfScalarComponents(self):
        return self.node.array.shape[3] if self.node.array.ndim == 4 else 1


_ids = itertools.count(1)


class FakeNode:
    """A MRML node: name, ID, attributes, node references, a parent transform and (for volumes) an IJK->RAS."""

    bases = ("vtkMRMLNode",)

    def __init__(self, name, attributes=None, scene=None):
        self.name, self.attributes = name, dict(attributes or {})
        self.id = f"{self.bases[0]}{next(_ids)}"
        self.references, self.transform_id, self.storage, self.display = {}, None, None, None
        self.ijk = np.diag([1.0, 1.0, 2.0, 1.0])
        self.scene = scene

    # identity
    def GetName(self):
        return self.name

    def SetName(self, name):
        self.name = name

    def GetID(self):
        return self.id

    def GetClassName(self):
        return self.bases[0]

    def IsA(self, class_name):
        return class_name in self.bases

    # attributes and references
    def GetAttribute(self, key):
        return self.attributes.get(key)

    def SetAttribute(self, key, value):
        self.attributes[key] = value

    def SetNodeReferenceID(self, role, node_id):
        self.references[role] = node_id

    def GetNodeReferenceID(self, role):
        return self.references.get(role)

    def GetNodeReference(self, role):
        return _scene(self).GetNodeByID(self.references.get(role))

    # transforms and geometry
    def GetTransformNodeID(self):
        return self.transform_id

    def SetAndObserveTransformNodeID(self, node_id):
        self.transform_id = node_id

    def GetParentTransformNode(self):
        return _scene(self).GetNodeByID(self.transform_id)

    def GetIJKToRASMatrix(self, matrix):
        matrix.array = self.ijk.copy()

    def SetIJKToRASMatrix(self, matrix):
        self.ijk = np.array(matrix.array, dtype=float)

    def GetSpacing(self):
        return tuple(float(np.linalg.norm(self.ijk[:3, axis])) for axis in range(3))

    def GetStorageNode(self):
        return self.storage

    def GetDisplayNode(self):
        return self.display

    def CreateDefaultDisplayNodes(self):
        self.display = Recorder(f"{self.name}.display")


class FakeVolumeNode(FakeNode):
    bases = ("vtkMRMLScalarVolumeNode", "vtkMRMLVolumeNode", "vtkMRMLNode")

    def __init__(self, name, array=None, ijk=None, attributes=None, scene=None):
        super().__init__(name, attributes, scene)
        self.array = np.zeros((2, 3, 4), np.float32) if array is None else np.asarray(array)
        if ijk is not None:
            self.ijk = np.array(ijk, dtype=float)

    def GetImageData(self):
        return FakeImageData(self)


class FakeVectorVolumeNode(FakeVolumeNode):
    bases = ("vtkMRMLVectorVolumeNode", "vtkMRMLTensorVolumeNode", "vtkMRMLScalarVolumeNode", "vtkMRMLNode")


class FakeLabelMapNode(FakeVolumeNode):
    bases = ("vtkMRMLLabelMapVolumeNode", "vtkMRMLScalarVolumeNode", "vtkMRMLVolumeNode", "vtkMRMLNode")


class FakeTransformNode(FakeNode):
    bases = ("vtkMRMLLinearTransformNode", "vtkMRMLTransformNode", "vtkMRMLNode")

    def __init__(self, name, to_world=None, linear=True, scene=None):
        super().__init__(name, scene=scene)
        self.to_world, self.linear = np.eye(4) if to_world is None else np.array(to_world, float), linear

    def IsTransformToWorldLinear(self):
        return 1 if self.linear else 0

    def SetMatrixTransformToParent(self, matrix):
        """vtkMRMLTransformNode::SetMatrixTransformToParent; the fake's transforms have no parent of their own, so
        this is also the transform to world."""
        self.to_world = np.array(matrix.array, dtype=float)

    def GetMatrixTransformToWorld(self, matrix):
        matrix.array = self.to_world.copy()

    def GetMTime(self):
        return 42


class FakeSliceNode(FakeNode):
    """vtkMRMLSliceNode: a layout name, SliceToRAS (columns: the view's x, y and normal, then its origin) and
    ``JumpSliceByOffsetting`` as Slicer's (Libs/MRML/Core/vtkMRMLSliceNode.cxx: the origin moves along the normal
    until the plane holds the point; orientation and in-plane position stay). A singleton: kept by Clear()."""

    bases = ("vtkMRMLSliceNode", "vtkMRMLAbstractViewNode", "vtkMRMLNode")
    singleton = True

    def __init__(self, layout_name, slice_to_ras=None, mapped=True, scene=None):
        super().__init__(layout_name, scene=scene)
        self.layout_name, self.mapped, self.jumps = layout_name, mapped, []
        self.slice_to_ras = FakeMatrix(np.eye(4) if slice_to_ras is None else slice_to_ras)

    def GetLayoutName(self):
        return self.layout_name

    def IsMappedInLayout(self):
        return 1 if self.mapped else 0

    def GetSliceToRAS(self):
        return self.slice_to_ras

    def JumpSliceByOffsetting(self, r, a, s):
        self.jumps.append((r, a, s))
        matrix = self.slice_to_ras.array
        normal, origin = matrix[:3, 2], matrix[:3, 3]
        matrix[:3, 3] = origin + float((np.array([r, a, s]) - origin) @ normal) * normal

    def GetSliceOffset(self):
        """As Slicer's: the translation of SliceToRAS in slice coordinates (upper 3x3 inverted), its z part."""
        matrix = self.slice_to_ras.array
        return float(np.linalg.solve(matrix[:3, :3], matrix[:3, 3])[2])

    def SetSliceOffset(self, offset):
        """As Slicer's: that z part replaced by ``offset``, the in-plane translation kept."""
        matrix = self.slice_to_ras.array
        inSlice = np.linalg.solve(matrix[:3, :3], matrix[:3, 3])
        inSlice[2] = float(offset)
        matrix[:3, 3] = matrix[:3, :3] @ inSlice


class FakeSegment:
    def __init__(self, name, value):
        self.name, self.value = name, value

    def GetName(self):
        return self.name

    def SetName(self, name):
        self.name = name

    def GetLabelValue(self):
        return self.value


class FakeSegmentation:
    def __init__(self):
        self.segments = []  # (segment id, FakeSegment)

    def GetNumberOfSegments(self):
        return len(self.segments)

    def GetNthSegment(self, index):
        return self.segments[index][1]

    def GetNthSegmentID(self, index):
        return self.segments[index][0]


class FakeSegmentationNode(FakeNode):
    bases = ("vtkMRMLSegmentationNode", "vtkMRMLNode")

    def __init__(self, name, attributes=None, scene=None):
        super().__init__(name, attributes, scene)
        self.segmentation, self.masks = FakeSegmentation(), {}

    def GetSegmentation(self):
        return self.segmentation

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume):
        self.references["referenceImageGeometryRef"] = volume.GetID()

    def add_segment(self, name, mask, value=1):
        segment_id = f"Segment_{len(self.segmentation.segments) + 1}"
        self.segmentation.segments.append((segment_id, FakeSegment(name, value)))
        self.masks[segment_id] = np.asarray(mask)
        return segment_id


class FakeColorNode(FakeNode):
    bases = ("vtkMRMLColorTableNode", "vtkMRMLNode")

    def SetTypeToUser(self):
        pass

    def SetNumberOfColors(self, count):
        self.colors = [None] * count

    def SetColor(self, index, name, red, green, blue, alpha):
        self.colors[index] = (red, green, blue, alpha)


class FakeScene:
    StartCloseEvent, EndCloseEvent, NodeAddedEvent, EndImportEvent = "StartClose", "EndClose", "NodeAdded", "EndImport"
    CLASSES = {
        "vtkMRMLScalarVolumeNode": FakeVolumeNode,
        "vtkMRMLVectorVolumeNode": FakeVectorVolumeNode,
        "vtkMRMLLabelMapVolumeNode": FakeLabelMapNode,
        "vtkMRMLSegmentationNode": FakeSegmentationNode,
        "vtkMRMLColorTableNode": FakeColorNode,
        "vtkMRMLLinearTransformNode": FakeTransformNode,
    }

    def __init__(self):
        self.nodes, self.removed, self.cleared = {}, [], 0

    def add(self, node):
        node.scene = self
        self.nodes[node.GetID()] = node
        return node

    def AddNewNodeByClass(self, class_name, name=""):
        node = self.CLASSES.get(class_name, FakeNode)(name)
        return self.add(node)

    def GetNodeByID(self, node_id):
        return self.nodes.get(node_id) if node_id else None

    def RemoveNode(self, node):
        """As MRML: the node leaves the scene and other nodes' references to it (storage node) are dropped."""
        if node is not None and node.GetID() in self.nodes:
            del self.nodes[node.GetID()]
            self.removed.append(node)
            for other in self.nodes.values():
                if other.storage is node:
                    other.storage = None

    def IsNodePresent(self, node):
        return node is not None and node.GetID() in self.nodes

    def GetFirstNodeByName(self, name):
        return next((n for n in self.nodes.values() if n.GetName() == name), None)

    def GetFirstNodeByClass(self, class_name):
        return next((n for n in self.nodes.values() if n.IsA(class_name)), None)

    def Clear(self, *args):
        """As vtkMRMLScene::Clear(0): every node goes but the singletons (slice views)."""
        self.nodes = {key: node for key, node in self.nodes.items() if getattr(node, "singleton", False)}
        self.cleared += 1


def _scene(node):
    return node.scene or CURRENT["scene"]


CURRENT: dict = {"scene": None}


class FakeVTKObservationMixin:
    """slicer.util.VTKObservationMixin: remembers observations (the fake scene never fires them)."""

    def __init__(self):
        super().__init__()
        self.Observations = []

    def addObserver(self, obj, event, method, group="none", priority=0.0):
        self.Observations.append([obj, event, method, group, len(self.Observations), priority])

    def removeObserver(self, obj, event, method):
        self.Observations = [o for o in self.Observations if not (o[0] is obj and o[1] == event and o[2] == method)]

    def removeObservers(self, method=None):
        self.Observations = [o for o in self.Observations if method is not None and o[2] != method]

    def hasObserver(self, obj, event, method):
        return any(o[0] is obj and o[1] == event and o[2] == method for o in self.Observations)


class FakeParameterNode:
    """The vtkMRMLScriptedModuleNode under a parameter node wrapper: values survive a "scene save and load"."""

    def __init__(self):
        self.values, self.observers = {}, []

    def AddObserver(self, event, callback, priority=0.0):
        self.observers.append(callback)
        return len(self.observers)

    def RemoveObserver(self, tag):
        pass


def fake_parameter_node_wrapper(cls):
    """slicer.parameterNodeWrapper.parameterNodeWrapper: typed attributes stored in the wrapped node, connectGui
    and disconnectGui recorded. (Defaults as the class body gives them; unset node references read None.)"""
    fields = dict(cls.__annotations__)
    defaults = {name: cls.__dict__.get(name) for name in fields}

    class Wrapper:
        allParameters = fields
        _is_parameter_node_wrapper = True

        def __init__(self, parameterNode):
            object.__setattr__(self, "parameterNode", parameterNode)
            object.__setattr__(self, "guis", {})
            for name, value in defaults.items():
                parameterNode.values.setdefault(name, value)

        def __getattr__(self, name):
            if name in fields:
                return self.parameterNode.values.get(name)
            raise AttributeError(name)

        def __setattr__(self, name, value):
            if name not in fields:
                raise ValueError(f"Cannot find a param with the given name: {name}")
            self.parameterNode.values[name] = value

        def connectGui(self, gui):
            tag = len(self.guis) + 1
            self.guis[tag] = gui
            return tag

        def disconnectGui(self, tag):
            self.guis.pop(tag, None)

        def AddObserver(self, event, callback, priority=0.0):
            return self.parameterNode.AddObserver(event, callback, priority)

        def RemoveObserver(self, tag):
            self.parameterNode.RemoveObserver(tag)

        def StartModify(self):
            return 0

        def EndModify(self, wasModifying):
            pass

    Wrapper.__name__ = cls.__name__
    return Wrapper


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum


def _is_nifti(path):
    return str(path).endswith((".nii", ".nii.gz"))


def write_nifti(path, array, ijk):
    """Write voxels (numpy order K, J, I as ``arrayFromVolume`` gives them) as a NIfTI file whose affine is the
    IJK->RAS matrix, as Slicer's writer does (voxel order I, J, K in the file; RAS in NIfTI, LPS only inside ITK)."""
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.int64:
        array = array.astype(np.int32)
    order = (2, 1, 0, *range(3, array.ndim))
    nib.save(nib.Nifti1Image(np.ascontiguousarray(np.transpose(array, order)), np.asarray(ijk, dtype=float)), path)


def read_nifti(path):
    """``(voxels in numpy order K, J, I, IJK->RAS)`` of a NIfTI file, as Slicer loads it (a 2D file: one slice)."""
    image = nib.load(str(path))
    array = np.asanyarray(image.dataobj)
    if array.ndim == 2:
        array = array[..., None]
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]
    order = (2, 1, 0, *range(3, array.ndim))
    return np.ascontiguousarray(np.transpose(array, order)), np.array(image.affine, dtype=float)


def _load(path, properties, node_class):
    array, ijk = FILES[path] if path in FILES else read_nifti(path)
    node = node_class(properties.get("name") or os.path.basename(path), array, ijk)
    node.storage = CURRENT["scene"].add(FakeNode(f"{path} storage"))  # loading adds a storage node with the file
    return node


def stub_modules(events=None):
    """sys.modules entries for slicer, slicer.ScriptedLoadableModule, slicer.util, slicer.parameterNodeWrapper,
    qt, vtk and ctk. ``events`` (a list) receives the wait-cursor and error-box events in order."""
    events = [] if events is None else events
    scene = FakeScene()
    CURRENT["scene"] = scene
    slicer_pkg = Recorder("slicer")
    qt = Recorder("qt")
    vtk = Recorder("vtk")
    put(vtk, "vtkMatrix4x4", FakeMatrix)
    put(qt, "QTableWidgetItem", FakeTableItem)
    put(slicer_pkg, "mrmlScene", scene)

    loadable = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        """As Slicer's: a parentless widget gets a top-level parent and runs setup() inside __init__."""

        def __init__(self, parent=None):
            super().__init__()
            self.moduleName = self.__class__.__name__[: -len("Widget")]
            self.baseReloads = []
            if not parent:
                self.parent = Recorder("parent")
                self.parent.isEntered = True
            else:
                self.parent = parent
            self.layout = Recorder("layout")
            if not parent:
                self.setup()

        def resourcePath(self, filename):
            return os.path.join("Resources", filename)

        def setup(self):
            pass

        def cleanup(self):
            pass

        def onReload(self):
            self.baseReloads.append(self.moduleName)

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.parameterNodeStore = FakeParameterNode()

        def getParameterNode(self):
            return self.parameterNodeStore

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, msec=0):
            pass

    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic):
        setattr(loadable, cls.__name__, cls)
    setattr(loadable, "ScriptedLoadableModuleTest", ScriptedLoadableModuleTest)
    put(slicer_pkg, "ScriptedLoadableModule", loadable)

    util = slicer_pkg.util
    put(util, "VTKObservationMixin", FakeVTKObservationMixin)
    put(util, "arrayFromVolume", lambda node: node.array)
    put(util, "updateVolumeFromArray", lambda node, array: setattr(node, "array", np.asarray(array)))
    put(util, "arrayFromVTKMatrix", lambda matrix: matrix.array.copy())
    put(util, "vtkMatrixFromArray", lambda array: FakeMatrix(array))
    put(util, "getNodesByClass", lambda name: [n for n in list(scene.nodes.values()) if n.IsA(name)])
    put(
        util,
        "arrayFromSegmentBinaryLabelmap",
        lambda seg, segment_id, reference=None: (
            util.segmentExports.append((seg, segment_id, reference)) or seg.masks[segment_id]
        ),
    )
    put(util, "segmentExports", [])

    def update_segment(array, seg, segment_id, reference=None):
        seg.masks[segment_id] = np.asarray(array)

    put(util, "updateSegmentBinaryLabelmapFromArray", update_segment)

    def write(kind):
        """Records the call and writes the "file": what a later load of ``path`` gives (world coordinates when
        ``world``, as exportNode does by hardening the parent transform)."""

        def writer(node, path, properties=None, world=False):
            getattr(util, kind).append((node, path, dict(properties or {}), world))
            ijk = node.ijk
            parent = node.GetParentTransformNode()
            if world and parent is not None:
                ijk = parent.to_world @ ijk
            FILES[path] = (np.array(node.array), ijk)
            if _is_nifti(path):
                write_nifti(path, node.array, ijk)
            else:
                with open(path, "wb") as handle:
                    handle.write(b"fake file of " + node.GetName().encode())
            return True

        return writer

    put(util, "exports", [])
    put(util, "saves", [])
    put(util, "exportNode", write("exports"))
    put(util, "saveNode", write("saves"))

    def loader(node_class):
        def load(path, properties=None):
            properties = dict(properties or {})
            util.loads.append((path, properties))
            load.calls.append(((path, properties), {}))
            return scene.add(_load(path, properties, node_class))

        load.calls = []
        return load

    put(util, "loads", [])
    put(util, "loadVolume", loader(FakeVolumeNode))
    put(util, "loadLabelVolume", loader(FakeLabelMapNode))

    @contextlib.contextmanager
    def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
        """As Slicer's: the wait cursor is restored before the error is shown (or raised on)."""
        try:
            if waitCursor:
                events.append("cursor on")
            yield
            if waitCursor:
                events.append("cursor off")
        except Exception as error:
            if waitCursor:
                events.append("cursor off")
            if show:
                util.errorDisplay(str(error) if message is None else f"{message}\n\n{error}")
            raise

    put(util, "tryWithErrorDisplay", tryWithErrorDisplay)

    def error_display(text, **kwargs):
        events.append("error box")
        error_display.calls.append(((text,), kwargs))

    error_display.calls = []
    put(util, "errorDisplay", error_display)

    def confirm_ok_cancel(text, windowTitle=None, parent=None, **kwargs):
        """As Slicer's ``confirmOkCancelDisplay(text, windowTitle=None, parent=None, **kwargs)``: True for OK. The
        answer is ``confirm_ok_cancel.answer`` (Cancel unless a test says OK)."""
        events.append("confirm box")
        confirm_ok_cancel.calls.append(((text,), dict(windowTitle=windowTitle, parent=parent, **kwargs)))
        return confirm_ok_cancel.answer

    confirm_ok_cancel.calls, confirm_ok_cancel.answer = [], False
    put(util, "confirmOkCancelDisplay", confirm_ok_cancel)

    for owner, prefix in ((slicer_pkg.app, "slicer"), (qt.QApplication, "qt")):
        put(owner, "setOverrideCursor", lambda *a, _p=prefix: events.append("cursor on"))
        put(owner, "restoreOverrideCursor", lambda *a, _p=prefix: events.append("cursor off"))

    volumes_logic = Recorder("volumes.logic()")

    def create_label(scene_, volume, name):
        label = FakeLabelMapNode(name, np.zeros(volume.array.shape[:3], np.uint8), volume.ijk)
        volumes_logic.created.append((volume, name))
        return scene.add(label)

    def clone_volume(scene_, volume, name):
        clone = FakeVolumeNode(name, np.array(volume.array), volume.ijk)
        clone.transform_id = volume.transform_id
        volumes_logic.clones.append((volume, clone))
        return scene.add(clone)

    put(volumes_logic, "created", [])
    put(volumes_logic, "clones", [])
    put(volumes_logic, "CreateAndAddLabelVolume", create_label)
    put(volumes_logic, "CloneVolume", clone_volume)
    put(slicer_pkg.modules.volumes, "logic", lambda: volumes_logic)

    segmentations_logic = Recorder("segmentations.logic()")

    def import_labelmap(label, segmentation, *args):
        segmentations_logic.imports.append((label, segmentation, label.ijk.copy(), label.transform_id))
        for value in sorted(set(np.unique(label.array)) - {0}):
            segmentation.add_segment(f"Label_{int(value)}", label.array == value, int(value))
        return True

    put(segmentations_logic, "imports", [])
    put(segmentations_logic, "ImportLabelmapToSegmentationNode", import_labelmap)
    put(slicer_pkg.modules.segmentations, "logic", lambda: segmentations_logic)

    segmentation_class = Recorder("vtkMRMLSegmentationNode")
    put(segmentation_class, "GetReferenceImageGeometryReferenceRole", lambda: "referenceImageGeometryRef")
    put(slicer_pkg, "vtkMRMLSegmentationNode", segmentation_class)

    hardened: list = []

    class FakeTransformLogic:
        """vtkSlicerTransformLogic: hardenTransform moves the node's geometry into world coordinates."""

        def hardenTransform(self, node):
            hardened.append(node)
            parent = node.GetParentTransformNode()
            if parent is not None:
                node.ijk = parent.to_world @ node.ijk
                node.transform_id = None
            return True

    put(slicer_pkg, "vtkSlicerTransformLogic", FakeTransformLogic)
    put(slicer_pkg, "hardened", hardened)

    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = fake_parameter_node_wrapper
    wrapper.WithinRange = WithinRange
    put(slicer_pkg, "parameterNodeWrapper", wrapper)

    return {
        "slicer": slicer_pkg,
        "slicer.ScriptedLoadableModule": loadable,
        "slicer.util": util,
        "slicer.parameterNodeWrapper": wrapper,
        "qt": qt,
        "vtk": vtk,
        "ctk": Recorder("ctk"),
    }


def load_mrilabel(monkeypatch, events, work_dir):
    """MRILabel.py loaded with the fake slicer/qt/vtk/ctk modules (``monkeypatch`` removes them again); the module's
    work folders go under ``work_dir``; ``events`` (a list) receives the wait-cursor and error-box events. The
    loaded module's ``stubs`` are the fake modules (``stubs["slicer"].mrmlScene`` is the scene)."""
    monkeypatch.setattr(tempfile, "tempdir", str(work_dir))
    stubs = stub_modules(events)
    for name, stub in stubs.items():
        monkeypatch.setitem(sys.modules, name, stub)
    spec = importlib.util.spec_from_file_location("MRILabel", MODULE_FILE)
    loaded = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "MRILabel", loaded)
    spec.loader.exec_module(loaded)
    loaded.stubs = stubs
    FILES.clear()
    return loaded
