"""A gated pipeline (``lib/configs/pipelines/<name>.py``, :class:`lib.pipeline_config.PipelineConfig`): its gate decides
per slice; only where it fires, its segmentation stage segments and its typing stage (when served) says which kind
of finding it is. ``tumor_pipeline`` is one: ``tumor_gate``, then ``tumor_seg`` and ``tumor_type``."""

import copy
import time
from typing import Dict, Optional, Tuple

import torch
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.interfaces.utils.transform import run_transforms

from lib.infers import checkpoint_info

Stage = Tuple[str, InferTask]
"""A pipeline stage: (the task's name, its infer task)."""


class GatedPipelineInfer(InferTask):
    """Gate, then segment and type the slices where the gate's probability of a finding reaches its threshold.

    The stages are served tasks (named by the pipeline's declaration): ``gate`` a gate classifier
    (:class:`lib.infers.classifier.TumorGateInfer` or the segmentation-read gate, which answer ``tumor``,
    ``probability``, ``threshold``, ``fired_slices``), ``segmentation`` a slice segmenter, ``typing`` an optional
    classifier.

    Returns the segmentation stage's label map (empty where the gate does not fire) and a JSON with ``task`` (the
    pipeline's name), ``tumor``, ``probability``, ``threshold``, ``fired_slices``, the gate's full answer under
    ``gate``, the mask measurements and ``checkpoints`` (stage task -> its checkpoint). With a typing stage the JSON
    also holds, under the typing task's name (``tumor_type``), ``{"label", "probabilities", "aggregation",
    "slices"}`` of the typing classifier run on the fired slices only (their mean probabilities), or ``null`` where
    the gate does not fire (then only the gate's answer counts and the mask is empty).

    The image is read and pre-processed once for all stages where their pre-transform chains are the same
    (same transforms with the same settings, see :func:`chain_fingerprint`), else each stage reads it itself.
    ``latencies`` holds each stage's total (``gate``, ``segmentation``, ``type``), MONAI Label's split summed over
    the stages (``pre``, ``infer``, ``invert``, ``post``, ``write``; ``pre`` includes the shared read), the shared
    pre-transforms' own times under ``transform.pre`` and the pipeline's wall time as ``total``.
    """

    def __init__(
        self,
        name: str,
        gate: Stage,
        segmentation: Stage,
        description: str,
        typing: Optional[Stage] = None,
    ):
        super().__init__(
            type=InferType.SEGMENTATION,
            labels=segmentation[1].labels,
            dimension=3,
            description=description,
            config=dict(gate[1].config()),
        )
        self.pipeline = name
        (self.gate_task, self.gate), (self.segmentation_task, self.segmentation) = gate, segmentation
        self.typing_task: Optional[str] = typing[0] if typing is not None else None
        self.typing: Optional[InferTask] = typing[1] if typing is not None else None

    def is_valid(self) -> bool:
        return all(stage.is_valid() for stage in self.stages())

    def stages(self):
        """The infer tasks this pipeline runs, in order."""
        return [self.gate, self.segmentation] + ([self.typing] if self.typing is not None else [])

    def __call__(self, request, callbacks=None):
        started = time.time()
        shared, shared_s, shared_transforms = self._shared_pre(request)
        run = (
            (lambda stage, r: stage(r))
            if shared is None
            else (lambda stage, r: _preprocessed(stage)(dict(r, **shared)))
        )
        _, gate = run(self.gate, dict(request, cam=False))
        fired = gate["fired_slices"]
        label_file, seg = run(self.segmentation, dict(request, slices=fired))
        latencies = {"gate": gate["latencies"]["total"], "segmentation": seg["latencies"]["total"]}
        stage_latencies = [gate["latencies"], seg["latencies"]]
        checkpoints = {self.gate_task: gate["checkpoint"], self.segmentation_task: seg["checkpoint"]}
        extra = {}
        if self.typing is not None and self.typing_task is not None:
            kind = None
            checkpoints[self.typing_task] = checkpoint_info(self.typing.get_path())
            if fired:
                _, kind = run(self.typing, dict(request, slices=fired, cam=False))
                latencies["type"] = kind["latencies"]["total"]
                stage_latencies.append(kind["latencies"])
                kind = {k: kind[k] for k in ("label", "probabilities", "aggregation", "slices")}
            extra[self.typing_task] = kind
        for key in ("pre", "infer", "invert", "post", "write"):
            latencies[key] = round(sum(float(s.get(key) or 0.0) for s in stage_latencies), 2)
        if shared is not None:
            latencies["pre"] = round(latencies["pre"] + shared_s, 2)
            latencies["transform"] = {"pre": shared_transforms}
        latencies["total"] = round(time.time() - started, 2)
        return label_file, {
            "task": self.pipeline,
            "tumor": gate["tumor"],
            "probability": gate["probability"],
            "threshold": gate["threshold"],
            "fired_slices": fired,
            "gate": gate,
            "measurements": seg.get("measurements", {}),
            **extra,
            "label_names": self.labels,
            "checkpoints": checkpoints,
            "latencies": latencies,
        }

    def _shared_pre(self, request) -> Tuple[Optional[Dict], float, Dict]:
        """Run the stages' common pre-transforms once: ``({"image": MetaTensor, "image_path": path}, seconds,
        per-transform seconds)``; ``(None, 0, {})`` where the image is not a file path or the stages' chains differ
        (then every stage reads the image itself)."""
        path = request.get("image")
        if not isinstance(path, str):
            return None, 0.0, {}
        chains = [stage.pre_transforms(dict(request)) for stage in self.stages()]
        if any(chain_fingerprint(c) != chain_fingerprint(chains[0]) for c in chains[1:]):
            return None, 0.0, {}
        started = time.time()
        data = run_transforms({"image": path, "image_path": path}, chains[0], log_prefix="PRE")
        seconds = time.time() - started
        return (
            {"image": data["image"], "image_path": path},
            seconds,
            dict((data.get("latencies") or {}).get("pre") or {}),
        )


def _preprocessed(stage):
    """A per-call shallow copy of ``stage`` (sharing its cached networks) whose pre-transforms are skipped: MONAI
    Label's infer takes a request whose ``image`` is already a tensor as pre-processed data."""
    clone = copy.copy(stage)
    clone.pre_transforms = lambda data=None: []
    return clone


_SIMPLE = (bool, int, float, str, type(None), torch.dtype, type)


def _settings(obj, depth: int = 1):
    """Type and plain settings of a transform (and, one level down, of the transforms it holds)."""
    out: list = [type(obj).__qualname__]
    for name, value in sorted(vars(obj).items()) if hasattr(obj, "__dict__") else []:
        if isinstance(value, _SIMPLE) or (
            isinstance(value, (tuple, list)) and all(isinstance(v, _SIMPLE) for v in value)
        ):
            out.append((name, repr(value)))
        elif depth > 0 and hasattr(value, "__dict__") and callable(value):
            out.append((name, _settings(value, depth - 1)))
    return out


def chain_fingerprint(chain) -> list:
    """What makes two pre-transform chains do the same: each transform's type and plain settings, in order."""
    return [_settings(t) for t in chain]
