"""Training progress read from the lines a training prints (``GET /train/`` keeps the run's last lines;
the same lines appear in ``GET /logs/``)."""

import json
import re
from typing import Any, Dict, Iterable, NamedTuple, Optional

_ITERATION = re.compile(r"Epoch: (\d+)/(\d+), Iter: (\d+)/(\d+) -- \w+: ([-+0-9.eE]+|nan|inf)")
_RESULT = re.compile(r"Result: (\{.*\})\s*$")
FINISHED = ("DONE", "ERROR", "STOPPED")


class TrainingProgress(NamedTuple):
    """Where a training run stands."""

    task: str
    run_id: str
    status: str
    epoch: Optional[int] = None
    total_epochs: Optional[int] = None
    iteration: Optional[int] = None
    total_iterations: Optional[int] = None
    loss: Optional[float] = None
    metric: Optional[float] = None
    fraction: float = 0.0
    line: str = ""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def message(self) -> str:
        """One line for the panel, e.g. ``tumor_gate: RUNNING, epoch 1/1, iteration 3/5, loss 0.49 (60%)``."""
        parts = [f"{self.task}: {self.status}"]
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}/{self.total_epochs}")
        if self.iteration is not None:
            parts.append(f"iteration {self.iteration}/{self.total_iterations}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.metric is not None:
            parts.append(f"validation metric {self.metric:.3f}")
        return ", ".join(parts) + f" ({self.fraction:.0%})"


def fraction_done(epoch: int, total_epochs: int, iteration: int, total_iterations: int) -> float:
    """Share of the training done after ``iteration`` of ``epoch`` (both counted from 1), in [0, 1]."""
    if total_epochs <= 0 or total_iterations <= 0:
        raise ValueError(f"total_epochs and total_iterations must be > 0, got {total_epochs} and {total_iterations}")
    done = (epoch - 1 + iteration / total_iterations) / total_epochs
    return min(1.0, max(0.0, done))


def read_progress(task: str, run_id: str, status: str, lines: Iterable[str]) -> TrainingProgress:
    """Progress from a run's status and its latest printed lines (the last epoch line or result line wins).

    Args:
        task: task being trained.
        run_id: the run's id from ``POST /train/{task}``.
        status: the run's status (SUBMITTED, RUNNING, DONE, ERROR, STOPPED).
        lines: the run's printed lines, oldest first.
    """
    found: Dict[str, Any] = {}
    last_line = ""
    for line in lines:
        last_line = line or last_line
        match = _ITERATION.search(line)
        if match:
            e, te, i, ti = (int(g) for g in match.groups()[:4])
            found.update(epoch=e, total_epochs=te, iteration=i, total_iterations=ti, loss=float(match.group(5)))
            found["fraction"] = fraction_done(e, te, i, ti)
            continue
        match = _RESULT.search(line)
        if match:
            try:
                stats = json.loads(match.group(1))
            except ValueError:
                continue
            if "current_epoch" in stats and "total_epochs" in stats:
                found.update(epoch=int(stats["current_epoch"]), total_epochs=int(stats["total_epochs"]))
                found.update(iteration=stats.get("current_iteration"), total_iterations=stats.get("total_iterations"))
                found["fraction"] = min(1.0, int(stats["current_epoch"]) / max(1, int(stats["total_epochs"])))
            if stats.get("best_metric") is not None:
                found["metric"] = float(stats["best_metric"])
    # 100 % only once the run is DONE (validation and publishing follow the last iteration)
    found["fraction"] = 1.0 if status == "DONE" else min(found.get("fraction", 0.0), 0.99)
    return TrainingProgress(task=task, run_id=run_id, status=status, line=last_line, **found)
