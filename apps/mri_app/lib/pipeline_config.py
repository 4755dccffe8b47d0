"""Pipeline-config base: a pipeline is a cascade of served tasks, declared once in ``lib/configs/pipelines/<name>.py``
(the module name is the name it is served under: ``POST /infer/<name>``). Its declaration names its stages by task;
the server (``main.py``) builds it where its required stages are served, ``mri-label evaluate`` loads those and
scores it beside its reference task, and the task registry (:mod:`mri_label.tasks`) lists it. Nothing else names a
pipeline's stages."""

from typing import Collection, Dict, Optional, Tuple

from lib.infers.tumor_pipeline import GatedPipelineInfer


class PipelineConfig:
    """A gate -> segmentation (-> typing) cascade, served by :attr:`infer_class` (:class:`GatedPipelineInfer`).

    A declaration is a subclass with plain class attributes; it is read as a class (never instantiated)."""

    gate = ""
    """The gate classifier (its config's ``evaluation`` is ``gate``): it decides per slice, and the later stages run
    on the slices where it fires."""
    segmentation = ""
    """The slice segmentation task run on the fired slices: its mask is the pipeline's answer."""
    typing: Optional[str] = None
    """A classifier run on the fired slices where it is served (an optional stage); its answer is under its name."""
    reference = ""
    """The task ``mri-label evaluate`` scores the pipeline beside, on the volumes of the series that task reads."""
    description = ""
    """One line for ``GET /info/``: ``{gate}`` is replaced by the gate's name, ``{later}`` by the later stages that
    are served, joined by ``and``."""
    infer_class = GatedPipelineInfer

    @classmethod
    def required(cls) -> Tuple[str, ...]:
        """The stages the pipeline cannot run without: it is served where all of them are."""
        return (cls.gate, cls.segmentation)

    @classmethod
    def optional(cls) -> Tuple[str, ...]:
        """The stages it runs where they are served."""
        return (cls.typing,) if cls.typing else ()

    @classmethod
    def stages(cls) -> Tuple[str, ...]:
        """Every stage, in the order they run."""
        return cls.required() + cls.optional()

    @classmethod
    def served_by(cls, served: Collection[str]) -> bool:
        """Whether a server serving the tasks ``served`` serves this pipeline."""
        return all(task in served for task in cls.required())

    @classmethod
    def describe(cls, served: Collection[str]) -> str:
        """:attr:`description` with the stages a server serving ``served`` runs."""
        later = [cls.segmentation] + [task for task in cls.optional() if task in served]
        return cls.description.format(gate=cls.gate, later=" and ".join(later))

    @classmethod
    def check(cls, name: str, tasks: Collection[str]) -> None:
        """Raise ValueError where the declaration names a task that is none of ``tasks`` (the app's), or its own name
        is a task's."""
        if name in tasks:
            raise ValueError(f"pipeline {name} has the name of a task")
        declared = {"gate": cls.gate, "segmentation": cls.segmentation, "reference": cls.reference}
        problems = [f"declares no {role}" for role, task in declared.items() if not task]
        problems += [
            f"its {role} {task!r} is no task of the app ({', '.join(sorted(tasks))})"
            for role, task in {**declared, "typing": cls.typing}.items()
            if task and task not in tasks
        ]
        if problems:
            raise ValueError(f"pipeline {name}: {'; '.join(problems)}")

    @classmethod
    def infer_in(cls, name: str, infers: Dict) -> Optional[GatedPipelineInfer]:
        """The pipeline's infer task over the served tasks' infer tasks (task name -> infer task), or None where a
        required stage is not served."""
        if not cls.served_by(infers):
            return None
        typing = (cls.typing, infers[cls.typing]) if cls.typing and cls.typing in infers else None
        return cls.infer_class(
            name,
            (cls.gate, infers[cls.gate]),
            (cls.segmentation, infers[cls.segmentation]),
            cls.describe(infers),
            typing=typing,
        )
