"""How each task is trained: the ``recipe`` its config declares (``apps/mri_app/lib/configs/<task>.py``, base values in
``lib.task_config.RECIPE``), turned into the ``POST /train/<task>`` request of ``mri-label train`` and
``benchmarks/quality.py`` (and so of the shipped checkpoints, whose ``model.json`` records the request they ran)."""

from typing import Dict, Optional

from mri_label.app_path import app_on_path


def recipes() -> Dict[str, Dict]:
    """Task name -> its declared recipe (a copy), for every task of the app."""
    app_on_path()
    from main import discover_configs  # noqa: E402  (the app's own module)

    return {task: dict(getattr(config, "recipe", {})) for task, config in discover_configs().items()}


def recipe_of(task: str) -> Dict:
    """The declared recipe of ``task``.

    Raises:
        ValueError: no such task.
    """
    known = recipes()
    if task not in known:
        raise ValueError(f"task must be one of {', '.join(known)}, got {task!r}")
    return known[task]


def train_request(
    task: str,
    epochs: Optional[int] = None,
    name: str = "train",
    learning_rate: Optional[float] = None,
    patience: Optional[int] = None,
) -> dict:
    """The ``POST /train/<task>`` request of the task's recipe; ``epochs``, ``learning_rate`` and ``patience`` (early
    stopping, epochs) override its values."""
    recipe = recipe_of(task)
    if epochs is not None and int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if learning_rate is not None and not 0 < float(learning_rate) < 1:
        raise ValueError(f"learning_rate must lie in (0, 1), got {learning_rate}")
    if patience is not None and int(patience) < 0:
        raise ValueError(f"patience must be >= 0, got {patience}")
    request = {"model": task, "name": name, **recipe}
    if epochs is not None:
        request["max_epochs"] = int(epochs)
    if learning_rate is not None:
        request["learning_rate"] = float(learning_rate)
    if patience is not None:
        request["early_stop_patience"] = int(patience)
    return request
