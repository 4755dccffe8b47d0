"""``mri-label pretrain``: a slice encoder pre-trained on several classification tasks at once, saved as an ordinary
ResNet state dict that a classifier starts from with ``--conf <task>_pretrained FILE`` (no download anywhere).

One 2D ResNet-18 layout (the classifiers' own: stride-2 stem, the same stage widths and input size) is shared by all
tasks; each task has its own linear head and class-weighted cross-entropy; every step sums one batch of each task. The
items are the tasks' own training slices (their slice caches, their augmentation) from the **training subjects of
each datastore's** ``split.json`` only: validation subjects choose the epoch (mean balanced accuracy over the tasks),
test subjects are never read. So a classifier fine-tuned from the encoder on the same datastore and split is still
scored on subjects the encoder never saw.

Output folder: ``encoder.pt`` (the encoder's tensors: ``conv1``, ``bn1``, ``layer1`` ... ``layer4``; no ``fc``),
``model.json`` (tasks, datastores, items per split side, epochs, the validation curve and the chosen epoch, minutes).
"""

import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mri_label.app_path import app_class
from mri_label.core.atomic import atomic_write, atomic_write_json
from mri_label.core.splits import ensure_split, split_of


def task_items(task: str, studies: str, size: int) -> Tuple[List[Dict], List[Dict], List[str]]:
    """``(train items, val items, class names)`` of a classification task on a datastore, from its slice cache at
    ``size`` pixels (built where missing), split by the datastore's subjects; test subjects are left out.

    Raises:
        ValueError: ``task`` is not a classification task, or the datastore has no training item for it.
    """
    MRIApp, folder = app_class()
    with tempfile.TemporaryDirectory() as model_dir:
        conf = {"models": task, "model_dir": model_dir, "shipped_models": "none", f"{task}_image_size": str(size)}
        app = MRIApp(folder, str(studies), conf)
        from lib import stock  # noqa: E402  (the app's adapter to MONAI Label, importable after app_class)

        trainer = stock.trainers(app).get(task)
        if trainer is None or not hasattr(trainer, "classes"):
            raise ValueError(f"task {task!r} is not a classification task of the app")
        items = trainer.items(app.datastore())
        classes = list(trainer.classes)
    split = ensure_split(studies)
    train = [i for i in items if split_of(split, i["subject"]) == "train"]
    val = [i for i in items if split_of(split, i["subject"]) == "val"]
    if not train:
        raise ValueError(f"{task}: no training items in {studies}")
    return train, val, classes


def _loader(items: List[Dict], augment: bool, batch_size: int, shuffle: bool):
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose

    from lib.slice_cache import train_cached_pre  # the app's lib, on sys.path after app_class()

    chain = Compose(train_cached_pre(with_mask=False, augment=augment, scanner=augment))
    return DataLoader(
        Dataset(items, transform=chain), batch_size=batch_size, shuffle=shuffle, num_workers=0, drop_last=shuffle
    )


def _cycle(loader):
    while True:
        yield from loader


def balanced_accuracy(predicted: np.ndarray, truth: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in ``truth``."""
    recalls = [float((predicted[truth == k] == k).mean()) for k in range(num_classes) if (truth == k).any()]
    return float(np.mean(recalls)) if recalls else float("nan")


def pretrain(
    sources: Dict[str, str],
    out: str,
    epochs: int = 30,
    widths: Sequence[int] = (16, 32, 64, 128),
    size: int = 128,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    steps_per_epoch: Optional[int] = None,
    progress: Callable[[str], None] = print,
) -> Dict:
    """Pre-train a shared slice encoder on the classification tasks of ``sources`` (task -> datastore folder).

    Args:
        out: output folder (``encoder.pt``, ``model.json``).
        epochs: passes; each is ``steps_per_epoch`` steps (default: the largest task's training items over the batch
            size), each step one batch of every task (smaller tasks cycle).
        widths, size: stage widths and input side (pixels) of the classifiers that will start from it.
        learning_rate: AdamW, cosine-annealed to 0 over ``epochs``.

    Returns:
        the ``model.json`` written.

    Raises:
        ValueError: no sources, ``epochs`` < 1, or a task without training items.
    """
    import torch

    if not sources:
        raise ValueError("sources must name at least one task=datastore")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    app_class()  # puts the app's folder on sys.path
    from lib.networks import build_network, slice_classifier

    started = time.time()
    data: Dict[str, Dict[str, Any]] = {}
    for task, studies in sources.items():
        train, val, classes = task_items(task, studies, size)
        data[task] = {"train": train, "val": val, "classes": classes, "studies": str(Path(studies).resolve())}
        progress(f"pretrain: {task}: {len(train)} training / {len(val)} validation slices, classes {classes}")

    encoder = build_network(slice_classifier(2, widths))
    # MONAI's ResNet then answers the pooled features, (N, widths[-1]); torch takes None for a submodule, its
    # annotation of Module.__setattr__ does not
    encoder.fc = None  # type: ignore[assignment]
    heads = torch.nn.ModuleDict({t: torch.nn.Linear(int(widths[-1]), len(d["classes"])) for t, d in data.items()})
    model = torch.nn.ModuleDict({"encoder": encoder, "heads": heads}).to(memory_format=torch.channels_last)
    losses = {}
    for task, d in data.items():
        counts = np.bincount([int(i["label"]) for i in d["train"]], minlength=len(d["classes"])).astype(float)
        weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
        losses[task] = torch.nn.CrossEntropyLoss(weight=torch.as_tensor(weights, dtype=torch.float32))
    loaders = {t: _cycle(_loader(d["train"], True, batch_size, True)) for t, d in data.items()}
    steps = steps_per_epoch or max(1, max(math.ceil(len(d["train"]) / batch_size) for d in data.values()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    curve: List[Dict] = []
    best = -1.0
    for epoch in range(1, epochs + 1):
        model.train()
        total = 0.0
        for _ in range(steps):
            optimizer.zero_grad()
            loss = torch.zeros(())
            for task in data:
                batch = next(loaders[task])
                image = batch["image"].to(memory_format=torch.channels_last)
                loss = loss + losses[task](heads[task](encoder(image)), batch["label"].reshape(-1).long())
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        schedule.step()
        row = {"epoch": epoch, "train_loss": round(total / steps, 4), "lr": optimizer.param_groups[0]["lr"]}
        row.update(_validate(encoder, heads, data, batch_size))
        scores = [v for k, v in row.items() if k.startswith("val_balanced_accuracy_")]
        row["val_mean_balanced_accuracy"] = round(float(np.mean(scores)), 4) if scores else float("nan")
        curve.append(row)
        progress(f"pretrain: epoch {epoch}/{epochs} " + " ".join(f"{k} {v}" for k, v in row.items() if k != "epoch"))
        if not scores or row["val_mean_balanced_accuracy"] > best:
            best = row["val_mean_balanced_accuracy"] if scores else best
            state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
            atomic_write(out_dir / "encoder.pt", lambda f: torch.save(state, f))
            best_epoch = epoch
    card = {
        "kind": "pretrained encoder",
        "checkpoint": "encoder.pt",
        "use": "--conf <task>_pretrained <this folder>/encoder.pt (a classifier of the same widths and input size)",
        "network": slice_classifier(2, widths),
        "input": {"size": [size, size], "normalization": "as the classifiers (slice cache)"},
        "tasks": {
            t: {
                "studies": d["studies"],
                "classes": d["classes"],
                "train_items": len(d["train"]),
                "val_items": len(d["val"]),
            }
            for t, d in data.items()
        },
        "split": (
            "training subjects of each datastore's split.json; validation subjects choose the epoch; "
            "test subjects unread"
        ),
        "training": {
            "epochs": epochs,
            "steps_per_epoch": steps,
            "batch_size_per_task": batch_size,
            "learning_rate": learning_rate,
            "best_epoch": best_epoch,
            "minutes": round((time.time() - started) / 60, 1),
        },
        "learning_curve": curve,
    }
    atomic_write_json(out_dir / "model.json", card, indent=1)
    return card


def _validate(encoder, heads, data: Dict, batch_size: int) -> Dict[str, float]:
    """Balanced accuracy of each task's head on its validation slices (no augmentation)."""
    import torch

    encoder.eval()
    scores = {}
    with torch.inference_mode():
        for task, d in data.items():
            if not d["val"]:
                continue
            predicted, truth = [], []
            for batch in _loader(d["val"], False, batch_size, False):
                image = batch["image"].to(memory_format=torch.channels_last)
                predicted.append(heads[task](encoder(image)).argmax(1).numpy())
                truth.append(batch["label"].reshape(-1).numpy())
            scores[f"val_balanced_accuracy_{task}"] = round(
                balanced_accuracy(np.concatenate(predicted), np.concatenate(truth), len(d["classes"])), 4
            )
    return scores
