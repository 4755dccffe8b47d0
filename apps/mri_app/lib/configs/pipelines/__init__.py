"""One PipelineConfig per pipeline (:mod:`lib.pipeline_config`); the module name is the pipeline's name, served as
``POST /infer/<name>`` where its required stages are. Each declares its stages (tasks of ``lib/configs``), the task
it is evaluated beside and its description: the server, ``mri-label evaluate`` and the task registry
(:mod:`mri_label.tasks`) read it from there."""

import importlib
import inspect
import pkgutil
from typing import Dict, Type

from lib.pipeline_config import PipelineConfig


def discover() -> Dict[str, Type[PipelineConfig]]:
    """Pipeline name (module name in ``lib/configs/pipelines``) -> its PipelineConfig class, by name."""
    found: Dict[str, Type[PipelineConfig]] = {}
    # the base class as the declarations import it now: MONAI Label reloads the app's ``lib`` package when it loads
    # an app, and a module that imported this package before would otherwise compare with an older generation
    base: Type[PipelineConfig] = importlib.import_module(PipelineConfig.__module__).PipelineConfig
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, base):
                found[module_info.name] = cls
    return found
