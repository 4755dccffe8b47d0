"""lib.stock, the one module that touches MONAI Label's private names: each name it declares still exists on the
installed monailabel (a MONAI Label upgrade that renames or removes one fails here), no other module of the app or
the CLI uses one, nothing of monailabel is monkeypatched, and the MONAI Label steps its trainer replaces still do
what it replaces; CORS origins from --conf; and a stop signal that ends the server within seconds even while a
background task runs and a request holds a worker thread (run in a child Python, where signals reach the main
thread)."""

import ast
import importlib
import inspect
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Set

import pytest

from lib.stock import PRIVATE_NAMES, cors_origins, stop_promptly
from tests.helpers.app import APP_DIR, ROOT


@pytest.mark.parametrize(
    "value,env,expected",
    [
        (None, (), []),
        ("http://viewer.example:8080, https://b.example/", (), ["http://viewer.example:8080", "https://b.example"]),
        ("*", ["http://x.example"], ["http://x.example", "*"]),
    ],
)
def test_cors_origins(value, env, expected):
    assert cors_origins(value, env) == expected


@pytest.mark.parametrize("value", ["evil.example", "http://a.example/path", "ftp://a.example", "javascript:alert(1)"])
def test_cors_origins_refuses_what_is_not_an_origin(value):
    with pytest.raises(ValueError, match="cors_origins"):
        cors_origins(value)


def test_stop_promptly_validates_the_grace():
    with pytest.raises(ValueError, match="grace_s"):
        stop_promptly(0)


CHILD = textwrap.dedent("""
    import os, signal, subprocess, sys, threading, time
    sys.path.insert(0, {app!r})
    from monailabel.utils.async_tasks.utils import background_processes
    from lib.stock import stop_promptly

    training = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    background_processes["train"] = {{"task": training}}
    passed_on = []
    signal.signal(signal.SIGTERM, lambda s, f: passed_on.append(s))  # stands for uvicorn's handler
    stop_promptly({grace})
    holder = threading.Thread(target=time.sleep, args=(300,))  # a request on a worker thread, not a daemon
    holder.start()
    print(training.pid, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    print("passed on" if passed_on == [signal.SIGTERM] else "not passed on", training.poll() is not None, flush=True)
""")


@pytest.mark.parametrize("grace", [1.0])
def test_a_stop_signal_kills_background_tasks_and_ends_the_process_after_the_grace(grace):
    started = time.time()
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(app=str(APP_DIR), grace=grace)], capture_output=True, text=True, timeout=120
    )
    elapsed = time.time() - started
    lines = child.stdout.split("\n")
    assert child.returncode == 0, child.stderr[-2000:]
    assert lines[1] == "passed on True"  # uvicorn's handler still called; the training process killed
    assert elapsed < 30  # without the grace timer the non-daemon thread would hold the process 300 s


# ------------------------------------------------------------------------------------ MONAI Label's private names

ADAPTER = APP_DIR / "lib" / "stock.py"
#: Private names of MONAI Label objects that no module of the app or CLI may use (lib.stock's).
WATCHED = {name for names in PRIVATE_NAMES.values() for name in names}


def _class(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def _assigned_on_self(cls) -> Set[str]:
    """Attributes ``cls`` or its monailabel bases assign on ``self`` in any of their methods."""
    found = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("monailabel"):
            continue
        for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(klass)))):
            targets = node.targets if isinstance(node, ast.Assign) else []
            targets += [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            found.update(
                t.attr for t in targets if isinstance(t, ast.Attribute) and getattr(t.value, "id", None) == "self"
            )
    return found


@pytest.mark.parametrize(
    "spec, name, params", [(spec, n, p) for spec, names in PRIVATE_NAMES.items() for n, p in names.items()]
)
def test_every_private_name_the_adapter_uses_exists_on_the_installed_monailabel(spec, name, params):
    cls = _class(spec)
    if params is None:
        assert name in _assigned_on_self(cls), f"{spec} no longer sets self.{name}: lib/stock.py must follow"
        return
    member = inspect.getattr_static(cls, name, None)
    assert member is not None, f"{spec}.{name} is gone: lib/stock.py must follow"
    function = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
    assert tuple(inspect.signature(function).parameters) == params, f"{spec}.{name} changed its parameters"


def test_the_check_sees_a_renamed_attribute():
    """Guards the test above: an attribute nobody sets, and a real one."""
    assert "_publish_path" in _assigned_on_self(_class("monailabel.tasks.train.basic_train:BasicTrainTask"))
    assert "_publish_paths" not in _assigned_on_self(_class("monailabel.tasks.train.basic_train:BasicTrainTask"))


def _sources() -> Dict[str, Path]:
    files = [APP_DIR / "main.py", *sorted((APP_DIR / "lib").rglob("*.py")), *sorted((ROOT / "mri_label").rglob("*.py"))]
    return {file.relative_to(ROOT).as_posix(): file for file in files if file != ADAPTER}


def _private_uses(tree: ast.AST) -> Set[str]:
    """Watched names used as attributes (``x._name``, ``super()._name``) or defined as methods (overrides)."""
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in WATCHED}
    used |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in WATCHED}
    return used


def _monkeypatches(tree: ast.AST) -> List[str]:
    """Assignments to an attribute of a name imported from monailabel (``basic_train.X = ...``), and setattr on one."""
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("monailabel"):
            imported.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update((a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("monailabel"))
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and node.args:
            targets = [ast.Attribute(value=node.args[0], attr="?")]
        for target in targets:
            base = target
            while isinstance(base, ast.Attribute):
                base = base.value
            if target is not base and isinstance(base, ast.Name) and base.id in imported:
                found.append(ast.unparse(target))
    return found


def test_no_other_module_uses_a_private_name_of_monailabel_or_patches_it():
    uses, patches = set(), []
    for name, file in _sources().items():
        tree = ast.parse(file.read_bytes(), name)
        uses |= {(name, private) for private in _private_uses(tree)}
        patches += [f"{name}: {target}" for target in _monkeypatches(tree)]
    assert not uses, f"MONAI Label private names outside lib/stock.py: {sorted(uses)}"
    assert not patches, f"monailabel patched outside lib/stock.py: {patches}"


def test_the_scan_finds_a_private_name_and_a_monkeypatch():
    """Guards the test above on a made-up module."""
    tree = ast.parse(
        "from monailabel.tasks.train import basic_train\n"
        "basic_train.PublishStatsAndModel = object\n"
        "class T(basic_train.BasicTrainTask):\n"
        "    def _device(self, context):\n"
        "        return self._publish_path\n"
    )
    assert _private_uses(tree) == {"_device", "_publish_path"}
    assert _monkeypatches(tree) == ["basic_train.PublishStatsAndModel"]


def test_monailabel_is_not_monkeypatched_by_the_trainers():
    from monailabel.tasks.train import basic_train, handler

    import lib.trainers.base  # noqa: F401  (imports every trainer module)

    assert basic_train.PublishStatsAndModel is handler.PublishStatsAndModel


# ------------------------------------------------------------------------------------------- the replaced steps


class _RecordingEngine:
    """An ignite engine that records the handlers added to it."""

    def __new__(cls):
        from ignite.engine import Engine

        class Recording(Engine):
            def add_event_handler(self, event_name, handler, *args, **kwargs):
                self.added.append((event_name, type(handler).__name__))
                return super().add_event_handler(event_name, handler, *args, **kwargs)

        engine = Recording(lambda engine, batch: None)
        engine.added = []
        return engine


def _minimal_task(base, model_dir):
    class Minimal(base):
        def network(self, context):
            return None

        def optimizer(self, context):
            return None

        def loss_function(self, context):
            return None

        def train_pre_transforms(self, context):
            return []

        def train_post_transforms(self, context):
            return []

        def val_inferer(self, context):
            return None

    return Minimal(str(model_dir))


def _context(tmp_path, patience):
    from types import SimpleNamespace

    return SimpleNamespace(
        local_rank=0,
        evaluator=_RecordingEngine(),
        trainer=_RecordingEngine(),
        request={"early_stop_patience": patience},
        start_ts=0,
        run_id="r1",
        output_dir=str(tmp_path),
    )


@pytest.mark.parametrize("patience", [0, 3])
def test_the_adapter_finalizes_as_monai_label_does_with_its_publisher_hook(tmp_path, patience):
    """StockTrainTask.finalize replaces BasicTrainTask.finalize whole: MONAI Label's attaches its publisher and early
    stopping, nothing else (if an upgrade adds a step, the replacement must learn it); the adapter attaches the
    same, with the publisher its hook returns."""
    from monailabel.tasks.train.basic_train import BasicTrainTask

    from lib.stock import StockTrainTask

    expected = [("Events.EPOCH_COMPLETED", "PublishStatsAndModel")]
    expected += [("Events.EPOCH_COMPLETED", "EarlyStopping")] if patience else []
    stock = _context(tmp_path, patience)
    BasicTrainTask.finalize(_minimal_task(BasicTrainTask, tmp_path), stock)
    assert [(str(e), h) for e, h in stock.evaluator.added] == expected and stock.trainer.added == []

    ours = _context(tmp_path, patience)
    task = _minimal_task(StockTrainTask, tmp_path)
    task.finalize(ours)
    assert [(str(e), h) for e, h in ours.evaluator.added] == expected and ours.trainer.added == []
    task.publisher = lambda context: lambda engine: None
    hooked = _context(tmp_path, patience)
    task.finalize(hooked)
    assert hooked.evaluator.added[0][1] == "function"  # the hook's handler, not MONAI Label's

    other_rank = _context(tmp_path, patience)
    other_rank.local_rank = 1
    task.finalize(other_rank)  # no publisher on other ranks, as in MONAI Label
    assert [h for _, h in other_rank.evaluator.added] == (["EarlyStopping"] if patience else [])
