"""How each task is trained on the public data sets: the recipe of ``benchmarks/quality.py`` and
``mri-label train`` (and so of the shipped checkpoints, whose ``model.json`` records the epochs they ran)."""

#: shared by every task: a gentler learning rate than the server default and patience for noisy validation
COMMON = {"learning_rate": 3e-4, "early_stop_patience": 10}

#: task -> epochs for this 2-core CPU and extra train parameters
TRAINING = {
    "sequence": (40, {}),
    "dementia_stage": (40, {}),
    "tumor_gate": (40, {}),
    "tumor_seg": (25, {"train_batch_size": 8, "learning_rate": 1e-3}),
    "hippocampus": (15, {"train_batch_size": 4}),
    "tumor_type": (50, {}),
}


def train_request(task: str, epochs: int = None, name: str = "train", learning_rate: float = None, patience: int = None) -> dict:
    """The ``POST /train/<task>`` request of the recipe; ``epochs``, ``learning_rate`` and ``patience`` (early
    stopping, epochs) override its values."""
    if task not in TRAINING:
        raise ValueError(f"task must be one of {', '.join(TRAINING)}, got {task!r}")
    budget, extra = TRAINING[task]
    if epochs is not None and int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if learning_rate is not None and not 0 < float(learning_rate) < 1:
        raise ValueError(f"learning_rate must lie in (0, 1), got {learning_rate}")
    if patience is not None and int(patience) < 0:
        raise ValueError(f"patience must be >= 0, got {patience}")
    request = {"model": task, "name": name, "max_epochs": int(epochs or budget), **COMMON, **extra}
    if learning_rate is not None:
        request["learning_rate"] = float(learning_rate)
    if patience is not None:
        request["early_stop_patience"] = int(patience)
    return request
