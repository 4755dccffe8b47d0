"""Quality on real brain MRI: import each public data set, train each task on its train subjects, evaluate on
its held-out test subjects, and print one table.

    .venv/bin/python benchmarks/quality.py [--data ../shared/data] [--work /tmp/mri-quality] [--tasks ...]
                                           [--epochs-scale 1.0] [--splits grouped random]

Data (see ``../shared/data/README.md``): ``sequence`` on BraTS 2018 (every subject has every contrast) plus the
LGG FLAIR and T1 channels; ``dementia_stage`` on the Alzheimer JPEG set (no patient ids: near-duplicate groups
stand in for subjects); ``tumor_gate`` and ``tumor_seg`` on LGG; ``hippocampus`` on Decathlon Task04. A task
whose data is absent is skipped with a line saying so. Subject splits are ``split.json`` of each datastore
(70/15/15 by subject, seed 0). Epoch budgets (each task's declared ``recipe``, ``mri_label.recipes``) are for this 2-core CPU; ``--epochs-scale``
multiplies them.

``tumor_type`` (brain tumor 4-class JPEG set, imported with ``classfolders --task tumor_type``) gives TWO rows, each
trained and evaluated on its own split, side by side:

* ``grouped``: the standard ``split.json``, whose subjects are the importer's near-duplicate groups (16x16 difference
  hash, Hamming distance <= 4 of 256 bits, union-find), so near-identical slices stay on one side. On the 800
  images of ``brain_tumor_4class/Training`` this joins 40 images into 16 groups (35 of them at distance 0 from
  another: copies); the nearest-neighbour distances then jump to 15-30 bits, where 8 or 12 bits would add only 2
  groups: the groups are copies, not patients, so even this split may stay optimistic.
* ``random``: an image-level random split, the figure a random split would report (optimistic: near-duplicates of
  test images are trained on). A model trained on the grouped split has seen some of its test images, so it is
  trained again: on a copy of the datastore (``<work>/tumor_type/datastore_random``) whose images carry
  ``subject`` = their image id (``group`` kept), so that the trainers' ordinary ``split.json`` of the copy is the
  image-level split; no trainer change is needed. It is evaluated with ``evaluate(split_kind="random")`` on the
  imported datastore (``split_random.json``: same ids, seed and fractions), checked to be the same partition.

Both rows report accuracy with macro-F1 beside it.
"""

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "apps" / "mri_app"))

# task -> (imports as (format, folder under --data, classfolders task), data label); epochs and extra train
# parameters are the recipe of ``mri_label.recipes`` (shared with ``mri-label train``)
PLAN = {
    "sequence": ([("brats", "brats2018", None), ("lgg", "lgg_kaggle_3m/kaggle_3m", None)], "BraTS 2018 + LGG channels"),
    "dementia_stage": ([("classfolders", "alzheimer_4class/train", "dementia_stage")], "Alzheimer 4-class JPEG"),
    "tumor_gate": ([("lgg", "lgg_kaggle_3m/kaggle_3m", None)], "LGG kaggle_3m (per slice)"),
    "tumor_seg": ([("lgg", "lgg_kaggle_3m/kaggle_3m", None)], "LGG kaggle_3m"),
    "hippocampus": ([("decathlon", "Task04_Hippocampus", None)], "Decathlon Task04"),
    "tumor_type": ([("classfolders", "brain_tumor_4class/Training", "tumor_type")], "Brain tumor 4-class JPEG"),
}
#: tasks evaluated on more than the grouped (subject) split: each kind is its own training and row
SPLITS = {"tumor_type": ("grouped", "random")}
METRIC = {
    "sequence": "accuracy", "dementia_stage": "balanced_accuracy", "tumor_gate": "accuracy",
    "tumor_seg": "dice_tumor_mean", "hippocampus": "dice_foreground_mean", "tumor_type": "accuracy",
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


def image_level_copy(store: Path, dest: Path) -> Path:
    """A copy of the datastore ``store`` at ``dest`` (rebuilt) whose images are their own subjects
    (``info["subject"]`` = image id; the near-duplicate ``group`` is kept), so that its ``split.json``, which the
    trainers use, is a random image-level split. The source's split files are not copied."""
    from mri_label.splits import ensure_split

    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(store, dest, ignore=shutil.ignore_patterns("split*.json", "*.lock"))
    path = dest / "datastore_v2.json"
    content = json.loads(path.read_text())
    for image_id, entry in (content.get("objects") or {}).items():
        entry.setdefault("image", {}).setdefault("info", {})["subject"] = image_id
    path.write_text(json.dumps(content, indent=2))
    ensure_split(dest)
    return dest


def run(task: str, data: Path, work: Path, scale: float, split_kind: str = "grouped") -> dict:
    from main import MRIApp
    from mri_label.evaluate import evaluate
    from mri_label.splits import ensure_split

    from mri_label.recipes import recipe_of, train_request
    from mri_label.train import run_record, update_card

    imports, label = PLAN[task]
    missing = [folder for _, folder, _ in imports if not (data / folder).exists()]
    if missing:
        return {"task": task, "skipped": f"data absent: {', '.join(str(data / m) for m in missing)}"}
    store = build(task, data, work)
    suffix = "" if split_kind == "grouped" else f"_{split_kind}"
    train_store = store if split_kind == "grouped" else image_level_copy(store, work / task / f"datastore{suffix}")
    if split_kind == "random" and ensure_split(train_store)["subjects"] != ensure_split(store, unit="image")["subjects"]:
        raise RuntimeError(f"{train_store}/split.json differs from {store}/split_random.json")
    models, out = work / task / f"model{suffix}", work / task / f"evaluation{suffix}"
    shutil.rmtree(models, ignore_errors=True)
    app = MRIApp(str(ROOT / "apps" / "mri_app"), str(train_store), {"models": task, "model_dir": str(models), "shipped_models": "none"})
    started = time.time()
    request = train_request(task, max(1, round(recipe_of(task)["max_epochs"] * scale)), name="quality")
    stats = app.train(request)
    train_s = time.time() - started
    report = evaluate(task, str(store), model_dir=str(models), out=str(out), progress=lambda m: None, split_kind=split_kind)
    update_card(models / task / "model.json", run_record(app.datastore(), str(train_store), train_s / 60,
                                                         request, report))
    sides = ensure_split(train_store)["subjects"].values()
    counts = "/".join(str(sum(1 for s in sides if s == side)) for side in ("train", "val", "test"))
    value = report["headline"][METRIC[task]]
    metric = METRIC[task]
    if task in SPLITS:
        label += {"grouped": ", grouped split (near-duplicate groups)", "random": ", RANDOM image split (optimistic)"}[split_kind]
        metric += f" (macro-F1 {report['headline']['macro_f1']:.2f})"
    return {
        "task": task, "data": label, "subjects": counts, "metric": metric, "value": value, "split_kind": split_kind,
        "epochs": stats.get("epoch"), "train_min": train_s / 60, "device": str(app._trainers[task]._context.device),
        "report": str(out / "report.md"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--work", default="/tmp/mri-quality")
    parser.add_argument("--tasks", nargs="*", default=list(PLAN), choices=list(PLAN))
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    parser.add_argument("--splits", nargs="*", default=["grouped", "random"], choices=["grouped", "random"],
                        help="which rows of the tasks evaluated on several splits to run (default both)")
    args = parser.parse_args()
    if args.epochs_scale <= 0:
        parser.error(f"--epochs-scale must be > 0, got {args.epochs_scale}")
    rows = []
    for task in args.tasks:
        kinds = SPLITS.get(task, ("grouped",))
        for split_kind in [k for k in kinds if k in args.splits] if len(kinds) > 1 else kinds:
            print(f"== {task} ({split_kind} split)", flush=True)
            rows.append(run(task, Path(args.data), Path(args.work), args.epochs_scale, split_kind))
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
