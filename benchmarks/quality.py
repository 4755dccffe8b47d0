"""Quality on real brain MRI: import each public data set, train each task on its train subjects, evaluate on
its held-out test subjects, and print one table.

    .venv/bin/python benchmarks/quality.py [--data ../shared/data] [--work /tmp/mri-quality] [--tasks ...]
                                           [--epochs-scale 1.0]

Data (see ``../shared/data/README.md``): ``sequence`` on BraTS 2018 (every subject has every contrast) plus the
LGG FLAIR and T1 channels; ``dementia_stage`` on the Alzheimer JPEG set (no patient ids: near-duplicate groups
stand in for subjects); ``tumor_gate`` and ``tumor_seg`` on LGG; ``hippocampus`` on Decathlon Task04. A task
whose data is absent is skipped with a line saying so. Subject splits are ``split.json`` of each datastore
(70/15/15 by subject, seed 0). Epoch budgets below are for this 2-core CPU; ``--epochs-scale`` multiplies them.
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps" / "mri_app"))

# task -> (imports as (format, folder under --data, classfolders task), epochs, extra train params, data label)
PLAN = {
    "sequence": ([("brats", "brats2018", None), ("lgg", "lgg_kaggle_3m/kaggle_3m", None)], 4, {}, "BraTS 2018 + LGG channels"),
    "dementia_stage": ([("classfolders", "alzheimer_4class/train", "dementia_stage")], 6, {}, "Alzheimer 4-class JPEG"),
    "tumor_gate": ([("lgg", "lgg_kaggle_3m/kaggle_3m", None)], 6, {}, "LGG kaggle_3m (per slice)"),
    "tumor_seg": ([("lgg", "lgg_kaggle_3m/kaggle_3m", None)], 5, {"train_batch_size": 8}, "LGG kaggle_3m"),
    "hippocampus": ([("decathlon", "Task04_Hippocampus", None)], 8, {"train_batch_size": 4}, "Decathlon Task04"),
}
METRIC = {
    "sequence": "accuracy", "dementia_stage": "balanced_accuracy", "tumor_gate": "accuracy",
    "tumor_seg": "dice_tumor_mean", "hippocampus": "dice_foreground_mean",
}


def build(task: str, data: Path, work: Path) -> Path:
    """The task's datastore under ``work`` (imported once, then reused)."""
    from mri_label.importers import import_dataset
    from mri_label.splits import ensure_split

    store = work / task / "datastore"
    if not (store / "datastore_v2.json").exists():
        for fmt, folder, folder_task in PLAN[task][0]:
            import_dataset(fmt, data / folder, store, task=folder_task)
    ensure_split(store)
    return store


def run(task: str, data: Path, work: Path, scale: float) -> dict:
    from main import MRIApp
    from mri_label.evaluate import evaluate
    from mri_label.splits import ensure_split

    imports, epochs, extra, label = PLAN[task]
    missing = [folder for _, folder, _ in imports if not (data / folder).exists()]
    if missing:
        return {"task": task, "skipped": f"data absent: {', '.join(str(data / m) for m in missing)}"}
    store = build(task, data, work)
    models = work / task / "model"
    shutil.rmtree(models, ignore_errors=True)
    app = MRIApp(str(ROOT / "apps" / "mri_app"), str(store), {"models": task, "model_dir": str(models)})
    started = time.time()
    stats = app.train({"model": task, "max_epochs": max(1, round(epochs * scale)), "early_stop_patience": 4, "name": "quality", **extra})
    train_s = time.time() - started
    report = evaluate(task, str(store), model_dir=str(models), out=str(work / task / "evaluation"), progress=lambda m: None)
    sides = ensure_split(store)["subjects"].values()
    counts = "/".join(str(sum(1 for s in sides if s == side)) for side in ("train", "val", "test"))
    value = report["headline"][METRIC[task]]
    return {
        "task": task, "data": label, "subjects": counts, "metric": METRIC[task], "value": value,
        "epochs": stats.get("epoch"), "train_min": train_s / 60, "device": str(app._trainers[task]._context.device),
        "report": str(work / task / "evaluation" / "report.md"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", default="/tmp/mri-quality")
    parser.add_argument("--tasks", nargs="*", default=list(PLAN), choices=list(PLAN))
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    args = parser.parse_args()
    if args.epochs_scale <= 0:
        parser.error(f"--epochs-scale must be > 0, got {args.epochs_scale}")
    rows = []
    for task in args.tasks:
        print(f"== {task}", flush=True)
        rows.append(run(task, Path(args.data), Path(args.work), args.epochs_scale))
        print(rows[-1], flush=True)
    print(f"\nmachine: {os.cpu_count()} CPU cores; torch threads {__import__('torch').get_num_threads()}")
    print(f"| task | data | subjects train/val/test | metric (test subjects) | value | epochs | train min | device |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['task']} | {r['skipped']} | | | | | | |")
        else:
            print(f"| {r['task']} | {r['data']} | {r['subjects']} | {r['metric']} | {r['value']:.3f} | {r['epochs']} | {r['train_min']:.1f} | {r['device']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
