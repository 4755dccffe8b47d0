"""One TaskConfig per task; the module name is the task name. Each config declares everything about its task
(classes or labels, network, recipe, evaluation, import mapping, active-learning strategy): the server, the CLI
(:mod:`mri_label.tasks`) and the benchmarks read it from there. The pipelines that chain tasks are declared in the
subpackage ``pipelines`` (:mod:`lib.configs.pipelines`)."""

import importlib
import inspect
import pkgutil
from typing import Dict

from monailabel.interfaces.config import TaskConfig


def discover() -> Dict[str, type]:
    """Task name (module name in ``lib/configs``) -> its TaskConfig class (not instantiated), by task name."""
    found = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.ispkg:  # pipelines/: no task
            continue
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, TaskConfig) and not inspect.isabstract(cls):
                found[module_info.name] = cls
    return found
